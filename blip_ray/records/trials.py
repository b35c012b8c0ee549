"""Read an experiment directory back into :class:`TrialResult` records (no Ray needed): each
trial's rows (``rows.py``) with Tune's record of its failures."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from blip_ray import metrics
from blip_ray.records.layout import TUNE_ERROR, UnreadableFile, trial_dirs
from blip_ray.records.rows import TaskRow, TrialRows, read_trial


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
    valid_matrix: list[list[float]] | None = None
    """The finished rows on the validation splits (RL: on the evaluation episodes reserved for
    selection; selection reads these, never ``matrix``); None for results recorded without."""
    initial_valid_row: list[float] | None = None
    """Supervised: the untrained network's validation accuracy per task."""


_ERROR_LINE = re.compile(r"^\s*([A-Za-z_][\w.]*(?:Error|Exception|Interrupt)): (.+)$")


def load_trials(
    experiment_dir: Path,
    *,
    reference: dict[str, float] | None = None,
    normalize: bool = True,
    skipped: list[str] | None = None,
) -> list[TrialResult]:
    """Every trial of the experiment, finished, failed or cut short, sorted by method and seed.

    RL returns are normalized (:func:`normalize_rl_returns`; not with ``normalize=False``, as for
    single-task references, whose trials each hold another task); ``reference`` replaces the
    spec's single-task reference returns. A file that cannot be read (a trial's config, a task's
    row) is left out, and named in ``skipped`` where given.
    """
    trials = []
    for trial_dir in trial_dirs(experiment_dir):
        try:
            read = read_trial(trial_dir)
        except UnreadableFile as err:
            if skipped is not None:
                skipped.append(f"{err}: trial left out")
            continue
        if skipped is not None:
            skipped += [f"{err}: that task's row left out" for err in read.unreadable]
        trials.append(_trial_result(trial_dir, read))
    if normalize:
        normalize_rl_returns(trials, reference)
    return sorted(trials, key=trial_order)


def trial_order(trial: TrialResult) -> tuple[str, str, int, str]:
    """How reports list trials: by method, hyperparameter setting, seed."""
    return (trial.method, _hp_key(trial.hyperparameters), trial.seed, trial.trial_id)


def _trial_result(trial_dir: Path, read: TrialRows) -> TrialResult:
    config, last = read.config, read.last
    done = [row for row in map(TaskRow.from_result, read.rows) if row is not None]
    latest = done[-1] if done else None  # None: no task finished (getattr's defaults below)
    error = last.get("failed") or _error_line(trial_dir / TUNE_ERROR)
    if is_finished(last) and "failed" not in last:
        status, error = "ok", None
    elif error is not None:
        status = "failed"
    else:
        status = "incomplete"
    return TrialResult(
        trial_id=read.trial_id,
        method=config["method"]["name"],
        seed=int(config["method"]["seed"]),
        hyperparameters=hyperparameters(config),
        status=status,
        error=error,
        task_names=list(last.get("task_names", [])),
        matrix=[list(map(float, row)) for row in getattr(latest, "matrix", [])],
        initial_row=getattr(latest, "initial_row", None),
        capacity=[row.capacity for row in done],
        state_bytes=[int(row.state_bytes) for row in done],
        metric=getattr(latest, "metric", "accuracy"),
        wall_s=float(sum(row.task_wall_s for row in done)),
        curve=[point for row in done for point in row.curve],
        random_row=getattr(latest, "random_row", None),
        reference=dict(((config.get("run") or {}).get("rl") or {}).get("reference_returns") or {}),
        budget=getattr(latest, "budget", None),
        role=getattr(latest, "role", "continual"),
        capacity_label=getattr(latest, "capacity_label", None),
        valid_matrix=getattr(latest, "valid_matrix", None),
        initial_valid_row=getattr(latest, "initial_valid_row", None),
    )


def normalize_rl_returns(
    trials: list[TrialResult], reference: dict[str, float] | None = None
) -> None:
    """Raw game scores -> per-game normalized return, in place, for the RL trials.

    Per task u, 0 is a uniformly random policy's return (mean over the experiment's trials; the
    untrained policy's for results recorded without one) and 1 the single-task reference return
    for u when there is one (``reference``, else the spec's ``rl.reference_returns``), else the
    best return observed for u in any trial of the experiment. A task whose 1 is not above its 0
    has no usable scale and reads NaN. ACC, BWT and forgetting are then computed on these values;
    ``raw_matrix`` keeps the scores and ``normalization`` the scale of each task.
    """
    rl = [t for t in trials if t.metric == "return" and t.matrix]
    if not rl:
        return
    tasks = max(len(t.matrix[0]) for t in rl)
    names = next((t.task_names for t in rl if len(t.task_names) >= tasks), [])
    names = names[:tasks] or [f"task {u}" for u in range(tasks)]
    if reference is None:
        reference = next((t.reference for t in rl if t.reference), {})
    unknown = sorted(set(reference) - set(names))
    if unknown:
        raise ValueError(
            f"reference returns: unknown task {unknown[0]!r}; this experiment's tasks are "
            f"{', '.join(names)}"
        )
    low, high = np.zeros(tasks), np.zeros(tasks)
    scale = []
    for u, name in enumerate(names):
        low[u], low_source = 0.0, "none recorded"
        for source, rows in (
            ("random policy", [t.random_row for t in rl]),
            ("untrained policy", [t.initial_row for t in rl]),
        ):
            values = [row[u] for row in rows if row and u < len(row) and np.isfinite(row[u])]
            if values:
                low[u], low_source = float(np.mean(values)), source
                break
        if name in reference:
            high[u], source = reference[name], "reference"
        else:
            observed = [row[u] for t in rl for row in t.matrix if u < len(row)]
            high[u], source = max([*observed, low[u]]), "best observed"
        high[u] = max(high[u], low[u])  # a reference below the zero: no scale (NaN)
        scale.append(
            {
                "task": name,
                "low": float(low[u]),
                "low_source": low_source,
                "high": float(high[u]),
                "source": source,
            }
        )
    for t in rl:
        matrix = np.array(t.matrix, dtype=float)
        t.raw_matrix = t.matrix
        t.matrix = metrics.normalize_returns(matrix, low, high).tolist()
        if t.initial_row:
            baseline = np.array(t.initial_row, dtype=float)[None, :]
            t.initial_row = metrics.normalize_returns(baseline, low, high)[0].tolist()
        if t.valid_matrix:  # the selection episodes' returns, on the same per-game scale
            valid = np.array(t.valid_matrix, dtype=float)
            t.valid_matrix = metrics.normalize_returns(valid, low, high).tolist()
        t.metric = "normalized_return"
        t.normalization = scale


def is_finished(result: dict[str, Any]) -> bool:
    """Whether a trial's last result ends it: every task done, or a failure not worth a retry."""
    if "failed" in result:
        return True
    num_tasks = int(result.get("num_tasks") or 0)
    return num_tasks > 0 and int(result.get("tasks_done") or 0) >= num_tasks


def hyperparameters(config: dict[str, Any]) -> dict[str, Any]:
    """The method's hyperparameters plus any searched training setting (as ``train.lr``)."""
    out = dict(config["method"]["hp"])
    run = config.get("run", {})
    for key in run.get("train_searched", []):
        out[f"train.{key}"] = run["train"][key]
    for key, value in config["method"].get("train", {}).items():  # a search stage's setting
        out[f"train.{key}"] = value
    return out


def task_rows(experiment_dir: Path) -> dict[str, list[int]]:
    """Trial id -> the task index of every written row, in task order (repeats show redone
    work); trials with no row are left out."""
    out = {}
    for trial_dir in trial_dirs(experiment_dir):
        read = read_trial(trial_dir)
        if read.writes:
            out[read.trial_id] = read.writes
    return out


def _error_line(path: Path) -> str | None:
    if not path.exists():
        return None
    lines = path.read_text().splitlines()
    for line in reversed(lines):
        match = _ERROR_LINE.match(line)
        if match:
            return f"{match.group(1).rsplit('.', 1)[-1]}: {match.group(2).strip()}"
    meaningful = [ln.strip() for ln in lines if ln.strip() and not ln.startswith("Failure #")]
    return meaningful[-1] if meaningful else "failed (no message recorded)"


def _hp_key(hp: dict[str, Any]) -> str:
    return json.dumps(hp, sort_keys=True, default=str)
