"""Where an experiment lives: the storage root, a new or resumable experiment directory, and the
spec it started with (so ``--resume`` cannot silently continue a different experiment)."""

from __future__ import annotations

import json
import re
from datetime import datetime
from pathlib import Path
from typing import Any

from blip_ray.experiments.checks import UserError
from blip_ray.experiments.spec import ExperimentSpec

SPEC_RECORD = "blip_ray_spec.json"
"""The spec an experiment started with, saved in its directory and compared on ``--resume``."""
RUN_RECORD = "blip_ray_run.json"
"""The report header of the experiment's last run (title, wall time, planned trials), kept so
``blip-ray report`` can rewrite the report with it."""
RESULT_KEYS = (
    "benchmark",
    "network",
    "width",
    "fc_width",
    "tasks",
    "methods",
    "seeds",
    "samples",
    "train",
    "train_search",
    "download",
    "inject_failure",
    "rl",
    "references",
)
"""The spec keys that decide what the trials compute; resuming with other values is refused."""


def experiment_dir_for(
    spec: ExperimentSpec, *, storage: str | None, name: str | None, resume: bool
) -> Path:
    """The experiment's directory: a new one, or (``resume``) the one to continue."""
    root = _storage_root(storage or spec.storage)
    if name is not None and (not re.fullmatch(r"[A-Za-z0-9_.-]+", name) or set(name) == {"."}):
        raise UserError(f"--name: use letters, digits, '.', '_' or '-' only, got {name!r}")
    if not resume:
        if name is not None:
            if (root / name).exists():
                raise UserError(
                    f"--name: {root / name} already exists; add --resume to continue that "
                    "experiment, or choose another --name"
                )
            return root / name
        stem = f"{spec.name}-{datetime.now():%Y%m%d-%H%M%S}"
        candidate, n = root / stem, 1
        while candidate.exists():  # two runs started within the same second
            n += 1
            candidate = root / f"{stem}-{n}"
        return candidate
    from ray import tune  # only a resume reads Tune's state: the rest of this module is Ray-free

    if name:
        candidates = [root / name]
    else:
        candidates = sorted(
            (p for p in root.glob(f"{spec.name}-*") if p.is_dir()),
            key=lambda p: p.stat().st_mtime,
            reverse=True,
        )
    for candidate in candidates:
        if tune.Tuner.can_restore(str(candidate)):
            _check_same_spec(spec, candidate)
            return candidate
    raise UserError(
        f"nothing to resume: no experiment of '{spec.name}' under {root}; "
        "run without --resume to start one"
    )


def _storage_root(storage: str) -> Path:
    if "://" in storage:
        raise UserError(
            f"storage {storage}: URIs are not supported; on a multi-node cluster mount shared "
            "storage (e.g. NFS) at the same path on every node and pass that path"
        )
    root = Path(storage).expanduser().resolve()
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = root / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise UserError(
            f"storage {root} is not writable ({err.strerror}); pass --storage DIR"
        ) from None
    return root


def _check_same_spec(spec: ExperimentSpec, experiment_dir: Path) -> None:
    """Tune restores trials as they were configured: a changed spec would be silently ignored."""
    record = read_spec_record(experiment_dir)
    if record is None:
        return
    started, now = result_settings(record), result_settings(spec.record())
    for key in RESULT_KEYS:
        if started[key] != now[key]:
            raise UserError(
                f"--resume: {experiment_dir.name} started with {key}={short_value(started[key])}, "
                f"this spec has {key}={short_value(now[key])}; resume with the spec and flags "
                "(--smoke, --data-dir) it started with, or run without --resume"
            )


def result_settings(record: dict[str, Any]) -> dict[str, Any]:
    """A saved spec record's :data:`RESULT_KEYS`, as comparable between two experiments: the RL
    reference returns only scale the report (they may come later, or differ) and are left out;
    records from before ``rl.eval_policy`` evaluated greedily."""
    settings = {key: record.get(key) for key in RESULT_KEYS}
    if isinstance(settings["rl"], dict):
        rl = {key: value for key, value in settings["rl"].items() if key != "reference_returns"}
        settings["rl"] = {"eval_policy": "greedy", **rl}
    return settings


def read_spec_record(experiment_dir: Path) -> dict[str, Any] | None:
    """The spec an experiment started with, as saved in its directory; None where it has none
    (experiments from before the record)."""
    path = Path(experiment_dir) / SPEC_RECORD
    return json.loads(path.read_text()) if path.is_file() else None


def short_value(value: Any) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= 80 else text[:77] + "..."


def write_spec_record(spec: ExperimentSpec, experiment_dir: Path) -> None:
    """Create the new experiment's directory with the spec it starts with."""
    experiment_dir.mkdir(parents=True)
    (experiment_dir / SPEC_RECORD).write_text(json.dumps(spec.record(), indent=1) + "\n")
