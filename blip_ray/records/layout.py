"""An experiment directory's layout: the name and place of every file in it, and the JSON records
blip-ray keeps there next to Tune's files.

::

    <experiment>/
      blip_ray_spec.json        the spec it started with (compared on --resume and when pooling)
      blip_ray_run.json         the report header of its last run (title, wall time, planned)
      blip_ray_provenance.json  what produced it, one entry per run segment
      experiment_state-*.json   Tune's experiment state (what --resume restores)
      <trial>/
        blip_ray_rows/          the trial's config and one file per finished task (rows.py)
        checkpoint_*/           the state after its latest finished task
        params.json, result.json, progress.csv, error.txt   Tune's own files

Every record is written whole or not at all (a temporary file renamed over the old one), so a
kill mid-write leaves the previous version. Reading a record that is there but not valid JSON
raises :class:`UnreadableFile`, which names the file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from blip_ray.errors import UserError

SPEC_RECORD = "blip_ray_spec.json"
"""The spec an experiment started with, saved in its directory and compared on ``--resume``."""
RUN_RECORD = "blip_ray_run.json"
"""The report header of the experiment's last run (title, wall time, planned trials), kept so
``blip-ray report`` can rewrite the report with it."""
PROVENANCE_FILE = "blip_ray_provenance.json"
"""The experiment directory's provenance record: one entry per run segment, written when the
segment starts and completed when it ends."""
EXPERIMENT_STATE = "experiment_state-*.json"
"""Tune's experiment state (a pattern: one file per driver session; the newest is restored)."""
ROWS_DIR = "blip_ray_rows"
"""Per trial: its config and one file per finished task, written by blip-ray (``rows.py``)."""
TUNE_CONFIG = "params.json"
"""Per trial: Tune's copy of the trial's config."""
TUNE_RESULTS = "result.json"
"""Per trial: Tune's log of every reported result, one JSON object a line."""
TUNE_ERROR = "error.txt"
"""Per trial: Tune's record of the trial's failures."""
CHECKPOINT_GLOB = "checkpoint_*"
"""Per trial: Tune's checkpoint directories (one is kept: the latest)."""
SEARCH_STAGE = "search"
"""A spec with ``search:``: the search stage's experiment directory, inside the run's own."""
FINAL_STAGE = "final"
"""A spec with ``search:``: the final stage's experiment directory, inside the run's own."""
SELECTION_FILE = "selection.json"
"""A spec with ``search:``: each method's scored configurations and the chosen one."""

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
    "search",
    "configurations",
)
"""The spec keys that decide what the trials compute; resuming with other values is refused."""


class UnreadableFile(UserError):
    """A record of the experiment directory that exists but cannot be read (truncated, garbled)."""

    def __init__(self, path: Path, why: str) -> None:
        super().__init__(f"{path}: {why}")
        self.path = path


def write_json(path: Path, value: Any, *, indent: int | None = None) -> None:
    """Write ``value`` to ``path`` whole or not at all: a temporary file beside it, flushed to
    disk, then renamed over it (atomic on POSIX)."""
    partial = path.with_name(f".{path.name}.tmp")
    with partial.open("w") as out:
        out.write(json.dumps(value, indent=indent) + "\n")
        out.flush()
        os.fsync(out.fileno())
    partial.replace(path)


def read_json(path: Path) -> Any | None:
    """The JSON value in ``path``; None where there is no such file; :class:`UnreadableFile`
    where there is one that is not valid JSON."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as err:
        raise UnreadableFile(Path(path), f"cannot be read ({err})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise UnreadableFile(
            Path(path), f"is not valid JSON (truncated or garbled: {err})"
        ) from None


def trial_dirs(experiment_dir: Path) -> list[Path]:
    """The experiment's trial directories, sorted: those holding blip-ray's rows or Tune's
    config (experiments from before the row files)."""
    found = {p.parent.parent for p in Path(experiment_dir).glob(f"*/{ROWS_DIR}/trial.json")}
    found |= {p.parent for p in Path(experiment_dir).glob(f"*/{TUNE_CONFIG}")}
    return sorted(found)


def read_spec_record(experiment_dir: Path) -> dict[str, Any] | None:
    """The spec an experiment started with, as saved in its directory; None where it has none
    (experiments from before the record)."""
    return read_json(Path(experiment_dir) / SPEC_RECORD)


def write_spec_record(record: Mapping[str, Any], experiment_dir: Path) -> None:
    """Save the spec (``ExperimentSpec.record()``) a new experiment starts with."""
    experiment_dir.mkdir(parents=True, exist_ok=True)
    write_json(experiment_dir / SPEC_RECORD, dict(record), indent=1)


def read_run_record(experiment_dir: Path) -> dict[str, Any]:
    """The title, wall time and planned trials of the run that wrote the experiment ({} before
    its first run ended)."""
    return read_json(Path(experiment_dir) / RUN_RECORD) or {}


def write_run_record(experiment_dir: Path, header: Mapping[str, Any]) -> None:
    write_json(Path(experiment_dir) / RUN_RECORD, dict(header))


def read_provenance(experiment_dir: Path) -> dict[str, Any] | None:
    """The experiment's provenance record; None for experiments from before it was kept."""
    return read_json(Path(experiment_dir) / PROVENANCE_FILE)


def add_segment(experiment_dir: Path, segment: Mapping[str, Any]) -> None:
    """Append a run segment's provenance to the experiment's record."""
    record = read_provenance(experiment_dir) or {"segments": []}
    record["segments"].append(dict(segment))
    write_json(Path(experiment_dir) / PROVENANCE_FILE, record, indent=1)


def finish_segment(experiment_dir: Path, *, wall_s: float, interrupted: bool) -> float:
    """Complete the latest segment; return the wall time of every segment so far, summed."""
    record = read_provenance(experiment_dir) or {"segments": [{}]}
    record["segments"][-1].update(wall_s=wall_s, interrupted=interrupted)
    write_json(Path(experiment_dir) / PROVENANCE_FILE, record, indent=1)
    return total_wall_s(record)


def total_wall_s(record: Mapping[str, Any]) -> float:
    """Wall time summed over the segments that recorded theirs."""
    return sum(segment.get("wall_s") or 0.0 for segment in record.get("segments", []))


ABSENT = object()
"""A key one of two compared records lacks."""


def differences(old: Any, new: Any, path: str = "") -> list[tuple[str, Any, Any]]:
    """Each (dotted key path, old value, new value) where two JSON values differ, nested dicts
    compared key by key in the first one's order, so a message names ``train.lr``, not all of
    ``train``; a key one side lacks reads :data:`ABSENT` (``(unset)``)."""
    if isinstance(old, dict) and isinstance(new, dict):
        keys = [*old, *(k for k in new if k not in old)]
        prefix = f"{path}." if path else ""
        return [
            found
            for k in keys
            for found in differences(old.get(k, ABSENT), new.get(k, ABSENT), f"{prefix}{k}")
        ]
    return [] if old == new else [(path, old, new)]


def result_settings(record: dict[str, Any]) -> dict[str, Any]:
    """A saved spec record's :data:`RESULT_KEYS`, as comparable between two experiments: the RL
    reference returns only scale the report (they may come later, or differ) and are left out;
    records from before ``rl.eval_policy`` evaluated greedily."""
    settings = {key: record.get(key) for key in RESULT_KEYS}
    settings["references"] = bool(settings["references"])  # records from before the key
    settings["configurations"] = settings["configurations"] or {}  # from before search stages
    if isinstance(settings["rl"], dict):
        rl = {key: value for key, value in settings["rl"].items() if key != "reference_returns"}
        settings["rl"] = {"eval_policy": "greedy", **rl}
    return settings


def short_value(value: Any) -> str:
    """A JSON value in at most 40 characters, for one-line messages; ``(unset)`` for a missing
    key."""
    if value is ABSENT:
        return "(unset)"
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= 40 else text[:37] + "..."
