"""Read a Tune experiment directory back into :class:`TrialResult` records (no Ray needed)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from blip_ray import metrics
from blip_ray.experiments.provenance import read_provenance
from blip_ray.records import TaskRow, TrialResult
from blip_ray.report import markdown_table, write_report
from blip_ray.report.references import write_references

_ERROR_LINE = re.compile(r"^\s*([A-Za-z_][\w.]*(?:Error|Exception|Interrupt)): (.+)$")


def load_trials(
    experiment_dir: Path, *, reference: dict[str, float] | None = None, normalize: bool = True
) -> list[TrialResult]:
    """Every trial of the experiment, finished, failed or cut short, sorted by method and seed.

    RL returns are normalized (:func:`normalize_rl_returns`; not with ``normalize=False``, as for
    single-task references, whose trials each hold another task); ``reference`` replaces the
    spec's single-task reference returns.
    """
    trials = [_load_trial(p.parent) for p in sorted(Path(experiment_dir).glob("*/params.json"))]
    if normalize:
        normalize_rl_returns(trials, reference)
    return sorted(trials, key=trial_order)


def trial_order(trial: TrialResult) -> tuple[str, str, int, str]:
    """How reports list trials: by method, hyperparameter setting, seed."""
    return (trial.method, _hp_key(trial.hyperparameters), trial.seed, trial.trial_id)


def write_experiment_report(
    experiment_dir: Path,
    references: bool,
    header: dict[str, Any],
    *,
    reference_returns: dict[str, float] | None = None,
    out_dir: Path | None = None,
) -> tuple[list[TrialResult], str]:
    """The experiment's report (a references experiment's: its reference returns; otherwise
    with the provenance the experiment recorded), into its own directory or ``out_dir``; returns
    the trials and the table to print."""
    out_dir = Path(out_dir if out_dir is not None else experiment_dir)
    if references:
        trials = load_trials(experiment_dir, normalize=False)
        out_dir.mkdir(parents=True, exist_ok=True)
        return trials, write_references(trials, out_dir, **header)
    trials = load_trials(experiment_dir, reference=reference_returns)
    write_report(trials, out_dir, **header, provenance=read_provenance(experiment_dir))
    return trials, markdown_table(trials)


def _load_trial(trial_dir: Path) -> TrialResult:
    config = json.loads((trial_dir / "params.json").read_text())
    results = _read_results(trial_dir / "result.json")
    last = results[-1] if results else {}
    # Retries restart from a checkpoint, so rows of earlier attempts may repeat: keep the latest.
    rows = [row for row in map(TaskRow.from_result, results) if row is not None]
    by_task = {row.task: row for row in rows}
    done = [by_task[t] for t in sorted(by_task)]
    latest = done[-1] if done else None  # None: no task finished (getattr's defaults below)
    error = last.get("failed") or _error_line(trial_dir / "error.txt")
    if is_finished(last) and "failed" not in last:
        status, error = "ok", None
    elif error is not None:
        status = "failed"
    else:
        status = "incomplete"
    return TrialResult(
        trial_id=str(last.get("trial_id", trial_dir.name)),
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
    return out


def task_rows(experiment_dir: Path) -> dict[str, list[int]]:
    """Trial id -> the task index of every reported row, in order (repeats show redone work)."""
    out = {}
    for params in sorted(Path(experiment_dir).glob("*/params.json")):
        rows = _read_results(params.parent / "result.json")
        if rows:
            trial_id = str(rows[-1].get("trial_id", params.parent.name))
            out[trial_id] = [row.task for row in map(TaskRow.from_result, rows) if row is not None]
    return out


def _read_results(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line:
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:  # a line cut short by a crash mid-write
                continue
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
