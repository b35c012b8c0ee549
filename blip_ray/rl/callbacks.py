"""The task-sequence callback: task switches, end-of-task steps, evaluation, restore.

Stateless on purpose: the task comes from the lifetime env steps sampled (in RLlib's metrics
checkpoint) and from the learner module's ``active_task``/``tasks_done`` buffers (in the learner
checkpoint), never from callback attributes, which neither restores nor recreated actors keep.

Hooks (``ray.rllib.callbacks.callbacks.RLlibCallback``, ray 2.60):

- ``on_train_result``: after each iteration; once ``(t + 1) * steps_per_task`` env steps have been
  sampled, task ``t`` ends: the learners' ``finish_task`` (BLIP: Fisher -> bits -> quantize), every
  task evaluated, row ``t`` recorded, ``start_task(t + 1)`` (heads, method rules, fresh optimizer,
  lr restart), weights synced, and every env runner rebuilt on task ``t + 1``
  (``foreach_env_runner`` + ``make_env()``, never the old-stack ``foreach_env``). Also evaluates
  every ``eval_interval`` iterations inside a task, and adds the continual keys to the result.
- ``on_checkpoint_loaded`` (``Algorithm.restore``, Tune retries/resumes) and
  ``on_env_runners_recreated``: put the env runners back on the learner's active task, since
  RLlib rebuilds them from the frozen config (task 0).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from ray.rllib.callbacks.callbacks import RLlibCallback
from ray.rllib.core import DEFAULT_MODULE_ID
from ray.rllib.core.rl_module.multi_rl_module import MultiRLModule
from ray.rllib.utils.annotations import override
from ray.rllib.utils.metrics import ENV_RUNNER_RESULTS, NUM_ENV_STEPS_SAMPLED_LIFETIME

from blip_ray.rl.settings import ContinualSettings


def learner_call(algorithm: Any, func: Callable[[Any], Any]) -> Any:
    """``func(learner)`` on every learner; the first learner's result (all learners agree)."""
    results = algorithm.learner_group.foreach_learner(func)
    values = [result.get() for result in results]
    if not values:
        raise RuntimeError("no healthy learner answered")
    return values[0]


def apply_task_to_env_runner(env_runner: Any, task: int) -> int:
    """Point one env runner at ``task``: env config, its env (rebuilt if needed), its module."""
    env_config = env_runner.config.env_config
    env = getattr(env_runner, "env", None)
    env_tasks = set(env.unwrapped.get_attr("task_index")) if env is not None else {task}
    if env_config.get("task") != task or env_tasks != {task}:
        env_config["task"] = task  # the config is frozen, its env_config dict is not
        if env is not None:
            env_runner.make_env()  # closes the old envs; the next sample() resets all
    module = getattr(env_runner, "module", None)
    if isinstance(module, MultiRLModule):
        module = module[DEFAULT_MODULE_ID]
    if module is not None:
        module.set_active_task(task)
    return task


def switch_env_runners(
    env_runner_group: Any, task: int, *, indices: list[int] | None = None
) -> list[int]:
    """Apply ``task`` to the local and all remote env runners (or only remote ``indices``)."""
    return env_runner_group.foreach_env_runner(
        lambda env_runner: apply_task_to_env_runner(env_runner, task),
        local_env_runner=indices is None,
        remote_worker_ids=indices,
    )


def apply_current_task(algorithm: Any) -> int:
    """Re-apply the learner's active task everywhere (after a restore); returns it."""
    task = learner_call(algorithm, lambda learner: learner.resume_task())
    switch_env_runners(algorithm.env_runner_group, task)
    return task


def lifetime_env_steps(algorithm: Any, result: dict[str, Any]) -> int:
    """Env steps sampled over the whole run (restored with the algorithm's metrics)."""
    steps = result.get(ENV_RUNNER_RESULTS, {}).get(NUM_ENV_STEPS_SAMPLED_LIFETIME)
    if steps is None:
        steps = algorithm.metrics.peek(
            (ENV_RUNNER_RESULTS, NUM_ENV_STEPS_SAMPLED_LIFETIME), default=0
        )
    return int(steps)


def end_task(algorithm: Any, settings: ContinualSettings, task: int) -> dict[str, Any]:
    """End ``task``: method step, evaluation of every task, row, switch to the next task."""
    start = time.perf_counter()
    learner_call(algorithm, lambda learner: learner.finish_task(task))
    finished = time.perf_counter()
    row = learner_call(algorithm, lambda learner: learner.evaluate())
    selection_row = learner_call(algorithm, lambda learner: learner.evaluate(stream="selection"))
    evaluated = time.perf_counter()
    next_task = task + 1 if task + 1 < settings.num_tasks else None

    def record(learner: Any) -> None:
        learner.record_returns(task, row, selection_row)
        if next_task is not None:
            learner.start_task(next_task)

    learner_call(algorithm, record)
    algorithm.env_runner_group.sync_weights(
        from_worker_or_learner_group=algorithm.learner_group, inference_only=True
    )
    if next_task is not None:
        switch_env_runners(algorithm.env_runner_group, next_task)
    return {
        "task": task,
        "row": row,
        "end_task_s": finished - start,
        "eval_s": evaluated - finished,
    }


def advance(algorithm: Any, result: dict[str, Any]) -> None:
    """End every task whose budget is spent, evaluate when due, and fill ``result``."""
    settings: ContinualSettings = algorithm.config.continual
    steps_per_task = settings.rl.steps_per_task
    lifetime = lifetime_env_steps(algorithm, result)
    status = learner_call(algorithm, lambda learner: learner.status())
    trained = status["active_task"]
    ended = []
    while (
        status["tasks_done"] < settings.num_tasks
        and lifetime >= (status["tasks_done"] + 1) * steps_per_task
    ):
        ended.append(end_task(algorithm, settings, status["tasks_done"]))
        status = learner_call(algorithm, lambda learner: learner.status())
    iteration = int(result.get("training_iteration", algorithm.iteration))
    if ended:
        last = ended[-1]
        result.update(
            ended_task=last["task"],
            eval_returns=last["row"],
            end_task_s=last["end_task_s"],
            eval_s=last["eval_s"],
        )
    elif settings.rl.eval_interval and iteration % settings.rl.eval_interval == 0:
        start = time.perf_counter()
        result["eval_returns"] = learner_call(algorithm, lambda learner: learner.evaluate())
        result["eval_s"] = time.perf_counter() - start
    result.update(
        active_task=status["active_task"],
        tasks_done=status["tasks_done"],
        num_tasks=settings.num_tasks,
        steps_in_task=lifetime - trained * steps_per_task,
        return_matrix=status["return_matrix"],
        selection_matrix=status["selection_matrix"],
    )
    if "capacity" in status:
        result["capacity"] = status["capacity"]


class ContinualTaskCallback(RLlibCallback):
    """Runs a task sequence inside one RLlib ``Algorithm`` (see the module docstring)."""

    @override(RLlibCallback)
    def on_train_result(
        self, *, algorithm: Any, metrics_logger: Any = None, result: dict, **kwargs: Any
    ) -> None:
        advance(algorithm, result)

    @override(RLlibCallback)
    def on_checkpoint_loaded(self, *, algorithm: Any, **kwargs: Any) -> None:
        apply_current_task(algorithm)

    @override(RLlibCallback)
    def on_env_runners_recreated(
        self,
        *,
        algorithm: Any,
        env_runner_group: Any,
        env_runner_indices: list[int],
        is_evaluation: bool,
        **kwargs: Any,
    ) -> None:
        if is_evaluation:
            return
        task = learner_call(algorithm, lambda learner: learner.active_task)
        switch_env_runners(env_runner_group, task, indices=env_runner_indices)
