"""Read a Tune experiment directory back into :class:`TrialResult` records (no Ray needed)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from blip_ray.experiments.records import TrialResult

_ERROR_LINE = re.compile(r"^\s*([A-Za-z_][\w.]*(?:Error|Exception|Interrupt)): (.+)$")


def load_trials(experiment_dir: Path) -> list[TrialResult]:
    """Every trial of the experiment, finished, failed or cut short, sorted by method and seed."""
    trials = [_load_trial(p.parent) for p in sorted(Path(experiment_dir).glob("*/params.json"))]
    return sorted(trials, key=lambda t: (t.method, _hp_key(t.hyperparameters), t.seed, t.trial_id))


def _load_trial(trial_dir: Path) -> TrialResult:
    config = json.loads((trial_dir / "params.json").read_text())
    results = _read_results(trial_dir / "result.json")
    last = results[-1] if results else {}
    # Retries restart from a checkpoint, so rows of earlier attempts may repeat: keep the latest.
    by_task = {int(r["task"]): r for r in results if "task" in r}
    done = int(last.get("tasks_done", 0))
    num_tasks = int(last.get("num_tasks", 0)) or None
    error = _error_line(trial_dir / "error.txt")
    if num_tasks is not None and done >= num_tasks:
        status, error = "ok", None
    elif error is not None:
        status = "failed"
    else:
        status = "incomplete"
    return TrialResult(
        trial_id=str(last.get("trial_id", trial_dir.name)),
        method=config["method"]["name"],
        seed=int(config["seed"]),
        hyperparameters=dict(config["method"]["hp"]),
        status=status,
        error=error,
        task_names=list(last.get("task_names", [])),
        matrix=[list(map(float, row)) for row in last.get("matrix", [])],
        initial_row=last.get("initial_row"),
        capacity=[by_task[t].get("capacity") for t in sorted(by_task)],
        state_bytes=[int(by_task[t].get("state_bytes", 0)) for t in sorted(by_task)],
        metric=str(last.get("metric", "accuracy")),
        wall_s=float(sum(by_task[t].get("task_wall_s", 0.0) for t in by_task)),
    )


def task_rows(experiment_dir: Path) -> dict[str, list[int]]:
    """Trial id -> the task index of every reported row, in order (repeats show redone work)."""
    out = {}
    for params in sorted(Path(experiment_dir).glob("*/params.json")):
        rows = _read_results(params.parent / "result.json")
        if rows:
            out[str(rows[-1].get("trial_id", params.parent.name))] = [int(r["task"]) for r in rows]
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
