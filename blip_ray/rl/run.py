"""A continual PPO run over a task sequence, one record per finished task.

The RL counterpart of ``blip_ray.supervised.run_sequence``: both yield a
:class:`~blip_ray.records.rows.TaskRow` per finished task that can ``save`` the state to continue
from (here the whole RLlib algorithm; the task switches happen inside it,
``blip_ray.rl.callbacks``). Before training, the untrained policy (forward-transfer baseline) and a
uniformly random policy (0 of the per-game normalization) score every task, kept in module buffers
for checkpoints.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from blip_ray.methods import METHODS
from blip_ray.records.rows import TaskRow
from blip_ray.rl.callbacks import apply_current_task, learner_call
from blip_ray.rl.config import build_ppo_config
from blip_ray.rl.evaluation import evaluate_tasks
from blip_ray.rl.sequences import get_rl_sequence
from blip_ray.rl.settings import RANDOM_POLICY_SEED_OFFSET, ContinualSettings

#: Module buffers with per-task baseline returns, measured before training.
BASELINES = ("untrained_returns", "random_returns")


@dataclass
class RlTaskRecord(TaskRow):
    """A finished task's row, and the algorithm to checkpoint after it."""

    algorithm: Any = field(default=None, repr=False)

    def save(self, directory: Path) -> None:
        """Checkpoint the whole algorithm into ``directory``."""
        self.algorithm.save_to_path(str(directory))


def run_sequence(
    settings: ContinualSettings, *, resume: Path | None = None
) -> Iterator[RlTaskRecord]:
    """Train PPO with the settings' method over the sequence; yield after each task.

    ``resume``: a directory written by :meth:`RlTaskRecord.save`; the run continues after its task.
    """
    algo = build_ppo_config(settings).build_algo()
    try:
        if resume is not None:
            algo.restore_from_path(str(resume))
            apply_current_task(algo)
            module = algo.get_module()
            baselines = {name: getattr(module, name).tolist() for name in BASELINES}
        else:
            baselines = _measure_baselines(algo, settings)
        yield from _train(algo, settings, baselines)
    finally:
        algo.stop()


def _measure_baselines(algo: Any, settings: ContinualSettings) -> dict[str, list[float]]:
    """Score the untrained and a random policy, and keep both in the module and the learner's."""
    baselines = {
        "untrained_returns": learner_call(algo, lambda learner: learner.evaluate()),
        "random_returns": evaluate_tasks(
            None,
            get_rl_sequence(settings.sequence),
            num_tasks=settings.num_tasks,
            episodes=settings.rl.eval_episodes,
            max_steps=settings.rl.eval_max_steps,
            seed=settings.seed + RANDOM_POLICY_SEED_OFFSET,
        ),
    }
    values = {name: torch.tensor(row, dtype=torch.float32) for name, row in baselines.items()}

    def put(module: Any) -> None:
        for name, row in values.items():
            getattr(module, name).copy_(row)

    learner_call(algo, lambda learner: put(learner.continual_module))
    put(algo.get_module())
    return baselines


def _train(
    algo: Any, settings: ContinualSettings, baselines: dict[str, list[float]]
) -> Iterator[RlTaskRecord]:
    names = [task.name for task in get_rl_sequence(settings.sequence).tasks[: settings.num_tasks]]
    budget = {
        k: getattr(settings.rl, k)
        for k in ("steps_per_task", "eval_episodes", "eval_max_steps", "eval_policy")
    }
    curve: list[dict[str, Any]] = []
    started, eval_s = time.perf_counter(), 0.0  # eval_s: the task's evaluations, every one
    while True:
        result = algo.train()
        env_steps = int(result.get("env_runners", {}).get("num_env_steps_sampled_lifetime", 0))
        eval_s += float(result.get("eval_s", 0.0))
        if "eval_returns" in result:
            curve.append({"env_steps": env_steps, "returns": list(result["eval_returns"])})
        if "ended_task" not in result:
            continue
        task = int(result["ended_task"])
        matrix = [list(map(float, row)) for row in result["return_matrix"]]
        selection = [list(map(float, row)) for row in result["selection_matrix"]]
        state_bytes = learner_call(
            algo, lambda learner: learner.method.state_bytes(learner.continual_module)
        )
        wall = time.perf_counter() - started
        yield RlTaskRecord(
            task=task,
            task_name=names[task],
            num_tasks=settings.num_tasks,
            task_names=names,
            metric="return",
            row=matrix[-1],
            matrix=matrix,
            initial_row=baselines["untrained_returns"],
            valid_matrix=selection,
            capacity=result.get("capacity"),
            state_bytes=int(state_bytes),
            end_task_s=float(result.get("end_task_s", 0.0)),
            eval_s=eval_s,
            train_s=wall - float(result.get("end_task_s", 0.0)) - eval_s,
            task_wall_s=wall,
            random_row=baselines["random_returns"],
            budget=budget,
            curve=curve,
            env_steps=env_steps,
            role=METHODS[settings.method].role,
            capacity_label=METHODS[settings.method].capacity_label,
            algorithm=algo,
        )
        curve, started, eval_s = [], time.perf_counter(), 0.0
        if task + 1 >= settings.num_tasks:
            return
