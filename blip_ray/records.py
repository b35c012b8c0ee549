"""What trials produce, independent of Ray and of the track (supervised or RL).

A row per finished task (:class:`TaskRow`), and, read back from an experiment directory, a record
per trial (:class:`TrialResult`).
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from blip_ray.metrics import normalize_returns, summary


@dataclass
class TrialResult:
    """One continual run: a method with its hyperparameters and a seed over a task sequence."""

    trial_id: str
    method: str
    seed: int
    hyperparameters: dict[str, Any]
    """The method's hyperparameters as run (searched ones resolved to their sampled values)."""
    status: str
    """``ok`` (all tasks finished), ``failed`` (ended with an error) or ``incomplete``."""
    error: str | None = None
    """One line: why the trial failed."""
    task_names: list[str] = field(default_factory=list)
    matrix: list[list[float]] = field(default_factory=list)
    """Finished rows of R: R[t][u] = accuracy (or normalized return) on task u after task t."""
    initial_row: list[float] | None = None
    """The untrained network's value per task (forward-transfer baseline); None if unknown."""
    capacity: list[float | None] = field(default_factory=list)
    """The network's share held after each finished task (None for methods that hold none):
    BLIP's frozen bits, HAT's used units, PackNet's owned weights (``capacity_label``)."""
    state_bytes: list[int] = field(default_factory=list)
    """Bytes of method state kept after each finished task."""
    metric: str = "accuracy"
    """What R holds: ``accuracy`` or ``normalized_return``."""
    wall_s: float = 0.0
    """Wall time of the trial's finished tasks, summed."""
    raw_matrix: list[list[float]] | None = None
    """RL: the raw game scores behind a normalized ``matrix``."""
    curve: list[dict[str, Any]] = field(default_factory=list)
    """RL learning curves: ``{"env_steps": n, "returns": [raw return per task]}`` evaluations."""
    random_row: list[float] | None = None
    """RL: a uniformly random policy's raw return per task (0 of the normalization)."""
    reference: dict[str, float] = field(default_factory=dict)
    """RL: the spec's single-task reference return per task name (1 of the normalization)."""
    budget: dict[str, Any] | None = None
    """RL: env steps per task and the evaluation protocol (episodes, step cap) the trial ran."""
    normalization: list[dict[str, Any]] | None = None
    """RL, set by the report's normalization: per task its name, ``low`` (raw return mapped to 0)
    and its ``low_source`` (``random policy``, or ``untrained policy`` for older results),
    ``high`` (mapped to 1) and its ``source`` (``reference`` or ``best observed``)."""
    role: str = "continual"
    """The method's role: ``continual``, or ``reference`` (a bound such as joint training)."""
    capacity_label: str | None = None
    """What ``capacity`` counts: ``bits frozen``, ``units used`` or ``weights owned``."""


_TIMINGS = ("train_s", "end_task_s", "eval_s", "task_wall_s")
"""The timings of a :class:`TaskRow`, in seconds."""


@dataclass
class TaskRow:
    """What a trial reports after each finished task, in both tracks (one ``tune.report`` each).

    Both trainables write it with :meth:`to_result` and the results loader, the progress lines and
    the report read it back with :meth:`from_result`; no other code names these keys.
    """

    task: int
    """Index of the task just finished (trained, ended by its method, every task evaluated)."""
    task_name: str
    num_tasks: int
    """Tasks of the run; ``task_names`` names them in the order this trial trains them."""
    task_names: list[str]
    metric: str
    """What ``row`` holds: ``accuracy`` (supervised) or ``return`` (RL raw game score)."""
    row: list[float]
    """The value on every task after training this one (unseen tasks included)."""
    matrix: list[list[float]]
    """Every finished row so far."""
    initial_row: list[float] | None
    """The untrained network's value per task (forward-transfer baseline)."""
    capacity: float | None
    """The share of the network the finished tasks hold (``capacity_label``); None for methods
    that hold none."""
    state_bytes: int
    """Bytes of method state kept after this task."""
    train_s: float = 0.0
    """Seconds training this task (RL: with the evaluations inside the task)."""
    end_task_s: float = 0.0
    """Seconds of the method's end-of-task step."""
    eval_s: float = 0.0
    """Seconds evaluating every task after it."""
    task_wall_s: float = 0.0
    """Wall time of this task: training, end-of-task step, evaluation and bookkeeping."""
    epochs: int | None = None
    """Supervised: epochs trained on this task."""
    node_id: str | None = None
    """The Ray node that ran this task."""
    random_row: list[float] | None = None
    """RL: a uniformly random policy's raw return per task (0 of the normalization)."""
    budget: dict[str, Any] | None = None
    """RL: env steps per task and the evaluation protocol (episodes, step cap)."""
    curve: list[dict[str, Any]] = field(default_factory=list)
    """RL: evaluations inside this task, ``{"env_steps": n, "returns": [raw return per task]}``."""
    env_steps: int | None = None
    """RL: env steps sampled over the whole run when this task ended."""
    role: str = "continual"
    """The method's role: ``continual``, or ``reference`` (a bound such as joint training)."""
    capacity_label: str | None = None
    """What ``capacity`` counts: ``bits frozen``, ``units used`` or ``weights owned``."""

    @property
    def tasks_done(self) -> int:
        return self.task + 1

    def to_result(self) -> dict[str, Any]:
        """The dict given to ``tune.report``, with ``tasks_done``; subclasses' own fields (a
        track's checkpoint state) stay out."""
        result = {f.name: getattr(self, f.name) for f in dataclasses.fields(TaskRow)}
        return {**result, "tasks_done": self.tasks_done}

    def progress(self, reference: Mapping[str, float] | None = None) -> str:
        """The mean over the tasks trained so far, named: accuracy, or (RL) raw return and, where
        every trained task has a single-task ``reference`` return, the normalized return."""
        done = self.tasks_done
        trained = f"tasks 1-{done}" if done > 1 else "task 1"
        mean = float(np.mean(self.row[:done]))
        if self.metric != "return":
            return f"mean accuracy of {trained}: {mean:.3f}"
        text = f"mean raw return of {trained}: {mean:.2f}"
        names = self.task_names[:done]
        if reference and self.random_row and all(name in reference for name in names):
            high = [reference[name] for name in names]
            values = normalize_returns([self.row[:done]], self.random_row[:done], high)
            text += f" (normalized {float(np.mean(values)):.3f})"
        return text

    def scalars(self) -> dict[str, float]:
        """The row as named numbers for experiment trackers (logged at step ``tasks_done``):
        ``<metric>/<u>_<task name>`` per task u, the running metrics of the finished rows
        (``running/acc``, ``running/bwt``, ...; undefined ones left out), capacity, state bytes and
        the task's timings."""
        values = {
            f"{self.metric}/{u}_{re.sub(r'[^A-Za-z0-9_.-]', '_', name)}": value
            for u, (name, value) in enumerate(zip(self.task_names, self.row, strict=True))
        }
        running = summary(self.matrix, self.initial_row)
        values |= {f"running/{key}": value for key, value in running.items()}
        values |= {
            "capacity": self.capacity,
            "state_bytes": self.state_bytes,
            "epochs": self.epochs,
            "env_steps": self.env_steps,
            **{f"time/{key}": getattr(self, key) for key in _TIMINGS},
        }
        return {k: float(v) for k, v in values.items() if v is not None and not math.isnan(v)}

    @staticmethod
    def from_result(result: dict[str, Any]) -> TaskRow | None:
        """The row inside a Tune result (which adds keys of its own); None if it holds none."""
        if "task" not in result:
            return None
        names = {f.name for f in dataclasses.fields(TaskRow)}
        return TaskRow(**{k: v for k, v in result.items() if k in names})
