"""The result row of a finished task (:class:`TaskRow`), in both tracks and without Ray, and its
file: the one place that writes and reads the rows of an experiment directory.

Each trial directory holds ``blip_ray_rows/`` (:data:`~blip_ray.records.layout.ROWS_DIR`):
``trial.json`` (the trial's id and config, written when it starts), ``task-NNNN.json`` per
finished task and, for a trial that ended with a failure report, ``failed.json``. The driver
writes them straight into the experiment directory, each whole or not at all, once the task's
checkpoint is registered (``experiments/run/loggers.py``). Nothing of Tune's writes or restores
them, so restoring a trial (which copies Tune's own ``result.json`` back from whatever storage
last received) cannot truncate them; a task redone after a retry rewrites its own file and counts
the write (``writes``), so redone work still shows.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from blip_ray.metrics import normalize_returns, summary
from blip_ray.records.layout import (
    ROWS_DIR,
    TUNE_CONFIG,
    TUNE_RESULTS,
    UnreadableFile,
    read_json,
    write_json,
)

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
    """Seconds training this task (supervised: with its validation passes; RL: without the
    evaluations, which ``eval_s`` counts)."""
    end_task_s: float = 0.0
    """Seconds of the method's end-of-task step."""
    eval_s: float = 0.0
    """Seconds evaluating every task after it (RL: and the evaluations inside the task)."""
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
    valid_matrix: list[list[float]] | None = None
    """Every finished row on the tasks' validation splits (``matrix`` is on test; RL: on the
    evaluation episodes reserved for selection, ``matrix`` on the reported ones): what
    hyperparameter selection reads, so that it never looks at the reported scores."""
    initial_valid_row: list[float] | None = None
    """Supervised: the untrained network's validation accuracy per task."""

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


TRIAL_FILE = "trial.json"
FAILED_FILE = "failed.json"
_ROW_KEYS = ("trial_id", "failed", "num_tasks", "task_names", "tasks_done")
"""The keys of a result a row file keeps besides the :class:`TaskRow` fields."""


def row_file(trial_dir: Path, task: int) -> Path:
    return Path(trial_dir) / ROWS_DIR / f"task-{task:04d}.json"


def write_trial(trial_dir: Path, *, trial_id: str, config: Mapping[str, Any]) -> None:
    """The trial's id and config, when it starts (again: a retried or resumed trial)."""
    (Path(trial_dir) / ROWS_DIR).mkdir(parents=True, exist_ok=True)
    plain = json.loads(json.dumps(dict(config), default=str))  # as Tune's params.json
    write_json(Path(trial_dir) / ROWS_DIR / TRIAL_FILE, {"trial_id": trial_id, "config": plain})


def write_result(trial_dir: Path, result: Mapping[str, Any]) -> None:
    """A reported result's row file: a finished task's row, or a failure report (which a later
    row, from a rerun of the trial, replaces)."""
    folder = Path(trial_dir) / ROWS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    row = TaskRow.from_result(dict(result))
    kept = {key: result[key] for key in _ROW_KEYS if key in result}
    if row is None:
        write_json(folder / FAILED_FILE, kept)
        return
    path = row_file(trial_dir, row.task)
    try:
        writes = int((read_json(path) or {}).get("writes", 0)) + 1
    except UnreadableFile:
        writes = 1
    write_json(path, {**kept, **row.to_result(), "writes": writes})
    (folder / FAILED_FILE).unlink(missing_ok=True)


@dataclass
class TrialRows:
    """What a trial directory holds of a trial: its config, its finished tasks' rows (by task),
    its failure report, and the files that could not be read."""

    config: dict[str, Any]
    trial_id: str
    rows: list[dict[str, Any]]
    """One result per finished task, in task order (a redone task's latest)."""
    failed: dict[str, Any] | None = None
    writes: list[int] = field(default_factory=list)
    """Per task: the task index once for each time its row was written (redone work repeats)."""
    unreadable: list[UnreadableFile] = field(default_factory=list)

    @property
    def last(self) -> dict[str, Any]:
        """The result that ends what the trial did: its failure report, else its latest row."""
        return self.failed or (self.rows[-1] if self.rows else {})


def read_config(trial_dir: Path) -> dict[str, Any]:
    """The trial's config alone (its rows unread): blip-ray's ``trial.json``, else Tune's
    ``params.json`` (trial directories from before the row files)."""
    record = read_json(Path(trial_dir) / ROWS_DIR / TRIAL_FILE)
    if record is not None:
        return record["config"]
    config = read_json(Path(trial_dir) / TUNE_CONFIG)
    if config is None:
        raise UnreadableFile(Path(trial_dir) / TUNE_CONFIG, "is missing: not a trial directory")
    return config


def read_trial(trial_dir: Path) -> TrialRows:
    """The trial's rows as written by :func:`write_result`; for trial directories from before
    the row files, read from Tune's ``params.json`` and ``result.json``. An unreadable config
    raises :class:`UnreadableFile`; an unreadable row is listed in ``unreadable``."""
    trial_dir = Path(trial_dir)
    folder = trial_dir / ROWS_DIR
    record = read_json(folder / TRIAL_FILE)
    if record is None:
        return _read_tune_files(trial_dir)
    out = TrialRows(config=record["config"], trial_id=str(record["trial_id"]), rows=[])
    for path in sorted(folder.glob("task-*.json")):
        try:
            row = read_json(path)
        except UnreadableFile as err:
            out.unreadable.append(err)
            continue
        out.rows.append(row)
        out.writes += [int(row["task"])] * int(row.get("writes", 1))
    out.rows.sort(key=lambda row: int(row["task"]))
    try:
        out.failed = read_json(folder / FAILED_FILE)
    except UnreadableFile as err:
        out.unreadable.append(err)
    return out


def _read_tune_files(trial_dir: Path) -> TrialRows:
    config = read_config(trial_dir)
    results = []
    path = trial_dir / TUNE_RESULTS
    for line in path.read_text().splitlines() if path.exists() else []:
        try:
            results.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut short by a crash mid-write (or blank)
            continue
    last = results[-1] if results else {}
    by_task = {row["task"]: row for row in results if "task" in row}  # a retry's latest
    return TrialRows(
        config=config,
        trial_id=str(last.get("trial_id", trial_dir.name)),
        rows=[by_task[t] for t in sorted(by_task)],
        failed=last if "failed" in last else None,
        writes=[row["task"] for row in results if "task" in row],
    )
