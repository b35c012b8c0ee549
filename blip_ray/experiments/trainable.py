"""The Tune trainable of the supervised track: one trial = one whole continual run.

It reports after every task (the new matrix row and the running metrics) with a checkpoint of the
loop state, so a retried or resumed trial continues from its last finished task. A training loss
that turns NaN or infinite ends the trial as failed without a retry: the run is deterministic, so a
retry from the same checkpoint would diverge again at the same step.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import ray
import torch
from ray import tune

from blip_ray import metrics
from blip_ray.data import load_sequence
from blip_ray.methods import make_method
from blip_ray.models import ModelOptions, build_model
from blip_ray.supervised import LoopState, NonFiniteLossError, TrainSettings, run_sequence

STATE_FILE = "loop_state.pt"
FAILURE_MARKER = ".injected_failure"


def supervised_trainable(config: dict[str, Any]) -> None:
    """``config``: ``run`` (the spec's shared settings) and ``method`` ({name, hp, seed})."""
    run, seed = config["run"], int(config["method"]["seed"])
    torch.set_num_threads(max(1, int(run["cpus_per_trial"])))
    sequence = load_sequence(
        run["benchmark"], data_dir=run["data_dir"], seed=seed, download=run["download"]
    )
    if run["tasks"] is not None:
        sequence.tasks = sequence.tasks[: run["tasks"]]
    method = make_method(config["method"]["name"], **config["method"]["hp"])
    torch.manual_seed(seed)
    model = build_model(
        run["network"],
        ModelOptions(
            input_shape=sequence.input_shape,
            head_sizes=tuple(sequence.head_sizes),
            quantized=method.quantized_trunk,
            width=run["width"],
            fc_width=run["fc_width"],
            max_bit=getattr(method.config, "max_bit", 20),
        ),
    )
    resume = _restore(tune.get_checkpoint())
    names = [task.name for task in sequence.tasks]
    where = {"num_tasks": len(sequence), "task_names": names, "node_id": _node_id()}
    records = run_sequence(
        sequence, model, method, settings=TrainSettings(**run["train"]), seed=seed, resume=resume
    )
    try:
        for record in records:
            _report(record, where)
            _maybe_inject_failure(run.get("inject_failure_after_task"), record.task)
    except NonFiniteLossError as err:
        done = len(resume.rows) if resume is not None else 0
        tune.report({**where, "failed": f"NonFiniteLossError: {err}", "tasks_done": done})


def _report(record: Any, where: dict[str, Any]) -> None:
    """One matrix row, the running metrics and a checkpoint of the loop state."""
    matrix = np.array(record.matrix)
    result = {
        **where,
        "task": record.task,
        "task_name": record.name,
        "tasks_done": record.task + 1,
        "metric": "accuracy",
        "row": record.row,
        "matrix": record.matrix,
        "initial_row": record.initial_row,
        **metrics.summary(matrix, record.initial_row),
        "capacity": record.capacity,
        "state_bytes": record.state_bytes,
        "epochs": record.epochs,
        "train_s": record.train_s,
        "end_task_s": record.end_task_s,
        "eval_s": record.eval_s,
        "task_wall_s": record.train_s + record.end_task_s + record.eval_s,
    }
    with tempfile.TemporaryDirectory() as tmp:
        torch.save(dataclasses.asdict(record.state), Path(tmp) / STATE_FILE)
        tune.report(result, checkpoint=tune.Checkpoint.from_directory(tmp))


def _node_id() -> str:
    """The Ray node running this attempt (trials move between nodes when one fails)."""
    return ray.get_runtime_context().get_node_id()


def _restore(checkpoint: tune.Checkpoint | None) -> LoopState | None:
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as directory:
        state = torch.load(Path(directory) / STATE_FILE, weights_only=True)
    return LoopState(**state)


def _maybe_inject_failure(after_task: int | None, task: int) -> None:
    """Crash once after ``after_task`` (the spec's ``inject_failure``: fault-tolerance tests)."""
    if after_task is None or task != after_task:
        return
    marker = Path(tune.get_context().get_trial_dir()) / FAILURE_MARKER
    if marker.exists():
        return
    marker.write_text(f"{time.time()}\n")
    raise RuntimeError(f"injected failure after task {task} (spec inject_failure)")
