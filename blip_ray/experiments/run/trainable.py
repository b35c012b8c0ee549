"""The Tune trainables of both tracks: one trial = one whole continual run over a task sequence.

Each reports after every task: the task's :class:`~blip_ray.records.rows.TaskRow` (the new matrix
row, timings, capacity, state bytes) with a checkpoint of the run's state, so a retried or resumed
trial continues from its last finished task. A supervised training loss that turns NaN or infinite
ends the trial as failed without a retry: the run is deterministic, so a retry from the same
checkpoint would diverge again at the same step.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import ray
import torch
from ray import tune

from blip_ray.experiments.specs.experiment import Resources
from blip_ray.plugins import load_resolved
from blip_ray.records.checkpoints import write_manifest
from blip_ray.supervised import LoopState, NonFiniteLossError, TrainSettings, run_sequence
from blip_ray.supervised.build import build_trial

FAILURE_MARKER = ".injected_failure"


def supervised_trainable(config: dict[str, Any]) -> None:
    """``config``: ``run`` (the spec's shared settings) and ``method`` ({name, hp, seed})."""
    run, seed = config["run"], int(config["method"]["seed"])
    _load_plugins(run)
    torch.set_num_threads(Resources(cpu=run["cpus_per_trial"]).threads)
    sequence, model, method = build_trial(config)
    resume = _loop_state()
    records = run_sequence(
        sequence,
        model,
        method,
        settings=TrainSettings(**run["train"] | config["method"].get("train", {})),
        seed=seed,
        resume=resume,
    )
    done = [resume.next_task if resume is not None else 0]
    try:
        _report(records, run, done=done)
    except NonFiniteLossError as err:  # the trial's last result: ends it, no retry
        names = [task.name for task in sequence.tasks]
        failed = f"NonFiniteLossError: {err}"
        tune.report(dict(num_tasks=len(names), task_names=names, tasks_done=done[0], failed=failed))


def rl_trainable(config: dict[str, Any]) -> None:
    """The RL track's trainable: a continual PPO run (``blip_ray.rl.run``)."""
    from blip_ray.rl.run import run_sequence as run_rl_sequence
    from blip_ray.rl.settings import ContinualSettings, RlSettings

    run, method = config["run"], config["method"]
    _load_plugins(run)
    torch.set_num_threads(Resources(cpu=run["cpus_per_trial"]).threads)
    settings = ContinualSettings(
        sequence=run["benchmark"],
        num_tasks=run["tasks"],
        method=method["name"],
        method_hp=dict(method["hp"]),
        seed=int(method["seed"]),
        rl=RlSettings.from_dict(run["rl"]),
    )
    checkpoint = tune.get_checkpoint()
    with contextlib.ExitStack() as stack:  # the run restores lazily, on its first record
        resume = stack.enter_context(checkpoint.as_directory()) if checkpoint else None
        records = run_rl_sequence(settings, resume=Path(resume) if resume else None)
        # closing: a stopped trial (tune.report raising) stops the algorithm and its actors now
        _report(stack.enter_context(contextlib.closing(records)), run, done=[0])


def _load_plugins(run: dict[str, Any]) -> None:
    """The run's plugins, in the trial's own process too: a Ray started elsewhere (a notebook, a
    test session) has no setup hook for them."""
    load_resolved(run.get("plugins") or [])


def _report(records: Iterable[Any], run: dict[str, Any], *, done: list[int]) -> None:
    """One ``tune.report`` per finished task, with a checkpoint of the state after it; ``done[0]``
    counts the finished tasks."""
    node_id = ray.get_runtime_context().get_node_id()  # trials move when a node fails
    for record in records:
        record.node_id = node_id
        with tempfile.TemporaryDirectory() as tmp:
            record.save(Path(tmp))
            write_manifest(Path(tmp))
            tune.report(record.to_result(), checkpoint=tune.Checkpoint.from_directory(tmp))
        done[0] = record.tasks_done
        _maybe_inject_failure(run.get("inject_failure_after_task"), record.task)


def _loop_state() -> LoopState | None:
    """The supervised loop state in the trial's checkpoint; None when the trial starts fresh."""
    checkpoint = tune.get_checkpoint()
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as directory:
        return LoopState.load(Path(directory))


def _maybe_inject_failure(after_task: int | None, task: int) -> None:
    """Crash once after ``after_task`` (the spec's ``inject_failure``: fault-tolerance tests)."""
    if after_task is None or task != after_task:
        return
    marker = Path(tune.get_context().get_trial_dir()) / FAILURE_MARKER
    if marker.exists():
        return
    marker.write_text(f"{time.time()}\n")
    raise RuntimeError(f"injected failure after task {task} (spec inject_failure)")
