"""A 2-task continual PPO run under the session's local Ray instance (cartpole3, tiny budgets).

One BLIP run with one remote env runner besides the local one: tasks switch on every runner, both
tasks are evaluated at each task end, bits grow at the task end, and a checkpoint restores onto
the right task, head and env.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
from cl_fixtures import continual_settings

from blip_ray.methods.hat import weight_view
from blip_ray.rl.callbacks import ContinualTaskCallback, apply_task_to_env_runner, learner_call
from blip_ray.rl.config import build_ppo_config
from blip_ray.rl.run import run_sequence

pytestmark = pytest.mark.ray

STEPS_PER_TASK = 192
SETTINGS = continual_settings(
    "blip",
    num_tasks=2,
    steps_per_task=STEPS_PER_TASK,
    eval_episodes=2,
    eval_interval=1,
    eval_max_steps=40,
    ppo={"num_envs": 2, "rollout_length": 48, "num_minibatches": 2, "num_epochs": 2},
    num_env_runners=1,
)


def runner_tasks(algorithm: Any) -> list[tuple[Any, Any, int]]:
    """``(env_config task, envs' task indices, module active_task)`` of every env runner."""
    return algorithm.env_runner_group.foreach_env_runner(
        lambda er: (
            er.config.env_config["task"],
            None if er.env is None else tuple(er.env.unwrapped.get_attr("task_index")),
            int(er.module.active_task),
        )
    )


def two_short_tasks(method: str) -> Any:
    """Two cartpole3 tasks of 96 env steps (one PPO batch each), one short evaluation episode."""
    return continual_settings(
        method,
        num_tasks=2,
        steps_per_task=96,
        eval_episodes=1,
        eval_interval=1,
        eval_max_steps=30,
        ppo={"num_envs": 2, "rollout_length": 48, "num_minibatches": 2, "num_epochs": 1},
    )


def learner_module_state(algorithm: Any) -> dict[str, torch.Tensor]:
    return learner_call(
        algorithm,
        lambda learner: {k: v.clone() for k, v in learner.continual_module.state_dict().items()},
    )


def test_two_task_run_switches_evaluates_and_restores(ray_session: Any, tmp_path: Path) -> None:
    config = build_ppo_config(SETTINGS)
    algorithm = config.build_algo()
    try:
        results = [algorithm.train() for _ in range(2)]
        assert [r["active_task"] for r in results] == [0, 1]
        assert "eval_returns" in results[0] and "ended_task" not in results[0]
        assert results[0]["capacity"] == 0.0

        ended = results[-1]  # 2 x 96 env steps: task 0's budget is spent
        assert ended["ended_task"] == 0 and ended["tasks_done"] == 1
        assert ended["active_task"] == 1
        assert len(ended["eval_returns"]) == 2
        assert ended["return_matrix"] == [ended["eval_returns"]]
        # the row on the episodes reserved for selection: its own seeds, the same weights
        (selection_row,) = ended["selection_matrix"]
        selection = learner_call(algorithm, lambda learner: learner.evaluate(stream="selection"))
        assert selection_row == selection
        assert ended["eval_returns"] == learner_call(algorithm, lambda learner: learner.evaluate())
        assert ended["capacity"] > 0  # bits grew at the task end
        runners = runner_tasks(algorithm)
        assert len(runners) == 2  # the local runner (no env) and the remote one
        assert runners == [(1, None, 1), (1, (1, 1), 1)]
        # the runners act with the quantized end-of-task weights, not the pre-quantization ones
        quantized = learner_module_state(algorithm)
        for weights in algorithm.env_runner_group.foreach_env_runner(
            lambda er: {k: v.clone() for k, v in er.module.state_dict().items()}
        ):
            for key, value in weights.items():
                torch.testing.assert_close(value, quantized[key], equal_nan=True)

        after = algorithm.train()  # trains task 1 with task 1's heads
        assert after["active_task"] == 1 and after["steps_in_task"] > 0
        algorithm.save_to_path(str(tmp_path))
        saved = learner_module_state(algorithm)
    finally:
        algorithm.stop()

    restored = config.build_algo()
    try:
        assert runner_tasks(restored)[1] == (0, (0, 0), 0)  # RLlib rebuilds runners on task 0
        restored.restore(str(tmp_path))
        assert runner_tasks(restored) == [(1, None, 1), (1, (1, 1), 1)]
        # a recreated runner comes back on task 0 and is moved to the active task
        group = restored.env_runner_group
        group.foreach_env_runner(lambda er: apply_task_to_env_runner(er, 0), local_env_runner=False)
        assert runner_tasks(restored)[1] == (0, (0, 0), 0)
        ContinualTaskCallback().on_env_runners_recreated(
            algorithm=restored,
            env_runner_group=group,
            env_runner_indices=group.healthy_worker_ids(),
            is_evaluation=False,
        )
        assert runner_tasks(restored) == [(1, None, 1), (1, (1, 1), 1)]
        state = learner_module_state(restored)
        for key, value in saved.items():
            torch.testing.assert_close(state[key], value, equal_nan=True)
        assert int(state["active_task"]) == 1 and int(state["tasks_done"]) == 1

        head_0 = state["pi.0.weight"]
        final = restored.train()
        assert final["ended_task"] == 1 and final["tasks_done"] == 2
        assert final["return_matrix"][0] == ended["eval_returns"]
        assert len(final["return_matrix"]) == 2 and final["capacity"] >= ended["capacity"]
        trained = learner_module_state(restored)
        assert torch.equal(trained["pi.0.weight"], head_0)  # task 0's head is untouched
        assert not torch.equal(trained["pi.1.weight"], state["pi.1.weight"])
    finally:
        restored.stop()


@pytest.mark.parametrize("name", ["si", "mas"])
def test_importance_methods_run_two_cartpole_tasks_through_rllib(ray_session: Any, name: str):
    settings = two_short_tasks(name)
    records, importance = [], []
    for record in run_sequence(settings):
        records.append(record)
        importance.append(
            learner_call(
                record.algorithm,
                lambda learner: sum(float(o.sum()) for o in learner.method.omega.values()),
            )
        )
    assert [r.task for r in records] == [0, 1]
    assert len(records[-1].matrix) == 2 and records[-1].role == "continual"
    assert records[0].state_bytes == records[1].state_bytes > 0  # constant in the tasks
    assert importance[1] >= importance[0] > 0


def _first_layer(learner: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """The first trunk layer's weight and which of its weights task 0 holds for good."""
    layer = learner.method.layers[0]
    if learner.method.name == "packnet":
        held = layer.weight_owner == 0
    else:  # hat: a weight whose unit task 0 attends to with a gate of exactly 1
        held = weight_view(layer, learner.method.mask_pre[0], None) == 1.0
    return layer.weight.detach().clone(), held.clone()


@pytest.mark.parametrize(("name", "label"), [("hat", "units used"), ("packnet", "weights owned")])
def test_isolation_methods_run_two_cartpole_tasks_through_rllib(
    ray_session: Any, name: str, label: str
) -> None:
    settings = two_short_tasks(name)
    records, layers = [], []
    for record in run_sequence(settings):
        records.append(record)
        layers.append(learner_call(record.algorithm, _first_layer))
    assert [r.task for r in records] == [0, 1]
    assert 0 < records[0].capacity <= records[1].capacity <= 1
    assert records[1].capacity_label == label and records[0].state_bytes == records[1].state_bytes
    (before, held), (after, _) = layers
    assert 0 < int(held.sum()) < held.numel()
    assert torch.equal(before[held], after[held])  # task 1 left task 0's weights bit-identical
    assert not torch.equal(before[~held], after[~held])


def test_row_timings_count_every_evaluation_of_the_task(
    ray_session: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A task's ``eval_s`` holds its evaluations inside the task too, not only those at its end;
    ``train_s`` the rest. Every evaluation is made 0.2 s slower, so each shows in the timings."""
    from blip_ray.rl.learners import ContinualPPOLearner

    delay, evaluate = 0.2, ContinualPPOLearner.evaluate

    def slow_evaluate(self: Any, **kwargs: Any) -> list[float]:
        time.sleep(delay)
        return evaluate(self, **kwargs)

    monkeypatch.setattr(ContinualPPOLearner, "evaluate", slow_evaluate)  # the local learner
    settings = two_short_tasks("finetune")
    settings = replace(settings, rl=replace(settings.rl, steps_per_task=192))  # 2 batches a task
    records = list(run_sequence(settings))
    assert [len(r.curve) for r in records] == [2, 2]  # one evaluation inside, one at the end
    for record in records:
        # inside the task: the reported episodes; at its end: reported and selection episodes
        assert record.eval_s >= 3 * delay
        assert record.train_s < record.task_wall_s - record.eval_s + 1e-6
        parts = record.train_s + record.end_task_s + record.eval_s
        assert parts == pytest.approx(record.task_wall_s)
