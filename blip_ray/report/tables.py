"""Trials -> summary.csv and matrices.csv frames, and the groups (method, setting) that the results
table (:mod:`.results_table`) and the plots summarise.

Choices, and why:

- ``summary.csv`` names hyperparameter columns by their plain name and prefixes ``hp_`` only when
  the name would collide with a fixed column (a hyperparameter called ``acc`` becomes ``hp_acc``):
  the usual case reads naturally and no column is ever overwritten.
- The results table and the plots count status ``ok`` trials only: a failed or incomplete trial's
  metrics describe a shorter run and would bias the means. Such trials still get a row in
  ``summary.csv`` (metrics over their finished rows) and a section in ``report.md``.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from blip_ray import metrics
from blip_ray.records.trials import TrialResult

_ID_COLUMNS = ("trial_id", "method", "seed")
_RUN_COLUMNS = ("capacity", "state_bytes", "tasks_done", "status", "error", "role")
MATRIX_COLUMNS = (
    *(*_ID_COLUMNS, "trained_task", "eval_task", "task_name"),
    *("value", "raw_value", "valid_value"),
)
"""``value``: the matrix entry (accuracy on test, normalized return); ``raw_value``: RL's raw game
score; ``valid_value``: supervised, the accuracy on the task's validation split."""
VALID_PREFIX = "valid_"
"""summary.csv's validation metrics: ``valid_acc``, ``valid_bwt``, ... (from the validation
matrix, as the unprefixed ones are from the test matrix)."""
UNITS = {"accuracy": "accuracy (fraction)", "normalized_return": "normalized return"}


def fixed_columns() -> tuple[str, ...]:
    """summary.csv's columns besides the hyperparameters (which go between ``seed`` and the
    metrics): one per :data:`metrics.METRICS` entry, read now so a new metric gets its column."""
    keys = [metric.key for metric in metrics.METRICS]
    return (*_ID_COLUMNS, *keys, *(VALID_PREFIX + key for key in keys), *_RUN_COLUMNS)


@dataclass(frozen=True)
class Group:
    """One table row and one set of plots: a method's ok trials with one hyperparameter setting."""

    method: str
    label: str
    name: str
    """The method, with its setting in brackets where the method ran with several."""
    file_stem: str
    trials: list[TrialResult]


def setting_label(hyperparameters: dict[str, Any]) -> str:
    """``k=v`` pairs sorted by name, so one setting always reads the same."""
    return ", ".join(f"{k}={v}" for k, v in sorted(hyperparameters.items())) or "defaults"


def _slug(text: str) -> str:
    """Filesystem-safe on every OS: letters, digits, ``.``, ``-``, ``_`` only."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text.replace("=", "-")).strip("._") or "x"


def trial_metrics(trial: TrialResult, *, split: str = "test") -> dict[str, float]:
    """metrics.summary over the finished rows of the test matrix (``split="valid"``: of the
    validation matrix); all NaN when the trial finished no task or recorded no such rows."""
    matrix, initial = trial.matrix, trial.initial_row
    if split == "valid":
        matrix, initial = trial.valid_matrix or [], trial.initial_valid_row
    if not matrix:
        return {metric.key: math.nan for metric in metrics.METRICS}
    try:
        return metrics.summary(matrix, initial)
    except ValueError as exc:  # name the trial: the bare message does not say which one
        raise ValueError(f"trial {trial.trial_id}: {exc}") from exc


def trial_terms(trial: TrialResult, key: str) -> np.ndarray:
    """The trial's scores that the report's bootstrap resamples for metric ``key`` (one of
    :data:`metrics.TASK_TERMS`): an RL trial's per-game terms of its normalized matrix, whose
    mean is the metric (a stratum per game); otherwise the metric alone, one value."""
    if trial.metric == "normalized_return" and trial.matrix:
        return metrics.TASK_TERMS[key](trial.matrix)
    return np.array([trial_metrics(trial)[key]])


def last_value(values: Sequence[float | int | None]) -> float:
    return math.nan if not values or values[-1] is None else float(values[-1])


def _hp_columns(trials: Sequence[TrialResult]) -> dict[str, str]:
    """Hyperparameter name -> column: the plain name, ``hp_``-prefixed only on a collision."""
    taken, columns = set(fixed_columns()), {}
    for name in sorted({name for trial in trials for name in trial.hyperparameters}):
        column = name
        while column in taken:
            column = f"hp_{column}"
        taken.add(column)
        columns[name] = column
    return columns


def _csv_value(value: Any) -> Any:
    """Scalars as they are; lists and dicts as JSON, so one cell holds one value."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return json.dumps(value, sort_keys=True, default=str)


def summary_frame(trials: Sequence[TrialResult]) -> pd.DataFrame:
    """One row per trial, failed ones included, in summary.csv's column order."""
    hp_columns = _hp_columns(trials)
    rows = []
    for trial in trials:
        row: dict[str, Any] = dict(trial_id=trial.trial_id, method=trial.method, seed=trial.seed)
        for name, column in hp_columns.items():
            row[column] = _csv_value(trial.hyperparameters.get(name))
        row.update(trial_metrics(trial))
        valid = trial_metrics(trial, split="valid")
        row.update({VALID_PREFIX + key: value for key, value in valid.items()})
        row["capacity"] = last_value(trial.capacity)
        row["state_bytes"] = trial.state_bytes[-1] if trial.state_bytes else None
        row.update(tasks_done=len(trial.matrix), status=trial.status, error=trial.error)
        row["role"] = trial.role
        rows.append(row)
    columns = [*_ID_COLUMNS, *hp_columns.values(), *fixed_columns()[len(_ID_COLUMNS) :]]
    frame = pd.DataFrame(rows, columns=columns)
    for column in hp_columns.values():  # 20 stays "20", not "20.0", where another trial lacks it
        frame[column] = pd.Series([row[column] for row in rows], dtype=object)
    frame["state_bytes"] = frame["state_bytes"].astype("Int64")  # "123", not "123.0"
    return frame


def matrices_frame(trials: Sequence[TrialResult]) -> pd.DataFrame:
    """Every finished matrix entry in long form: one row per (trial, trained task, eval task)."""
    rows = [
        (
            *(trial.trial_id, trial.method, trial.seed, t, u, task_name(trial.task_names, u)),
            value,
            trial.raw_matrix[t][u] if trial.raw_matrix else None,
            trial.valid_matrix[t][u] if trial.valid_matrix else None,
        )
        for trial in trials
        for t, row in enumerate(trial.matrix)
        for u, value in enumerate(row)
    ]
    return pd.DataFrame(rows, columns=list(MATRIX_COLUMNS))


def task_name(names: Sequence[str], index: int) -> str:
    """The task's name where the trial recorded one, its position otherwise."""
    return names[index] if index < len(names) else f"task {index}"


def shared_names(trials: Sequence[TrialResult]) -> list[str]:
    """Task names for a seed-averaged plot: positions when seeds ordered the tasks differently."""
    first = list(trials[0].task_names)
    if any(list(t.task_names) != first for t in trials[1:]):
        return []
    return first


def ok_groups(trials: Sequence[TrialResult]) -> list[Group]:
    """Status-ok trials by (method, exact hyperparameters), each with a unique file stem."""
    grouped: dict[tuple[str, str], list[TrialResult]] = {}
    for trial in trials:
        if trial.status == "ok":
            key = json.dumps(trial.hyperparameters, sort_keys=True, default=str)
            grouped.setdefault((trial.method, key), []).append(trial)
    settings_per_method = Counter(method for method, _ in grouped)
    result, taken = [], set()
    for (method, key), members in sorted(grouped.items()):
        label = setting_label(members[0].hyperparameters)
        name, stem = method, _slug(method)
        if settings_per_method[method] > 1:
            name, stem = f"{method} ({label})", f"{stem}__{_slug(label)}"
        if len(stem) > 80 or stem.lower() in taken:  # short, and unique on case-blind disks too
            stem = f"{stem[:70]}_{hashlib.sha1(f'{method}|{key}'.encode()).hexdigest()[:8]}"
        taken.add(stem.lower())
        result.append(Group(method, label, name, stem, members))
    return result


def capacity_label(trials: Sequence[TrialResult]) -> str | None:
    """What the trials' capacity counts; results recorded before methods named it held BLIP's
    (the only method with a capacity then)."""
    if not any(c is not None for trial in trials for c in trial.capacity):
        return None
    return next((t.capacity_label for t in trials if t.capacity_label), "bits frozen")


def cell(text: str) -> str:
    """One markdown table cell: a ``|`` or a line break would split the row."""
    return " ".join(str(text).split()).replace("|", "\\|")
