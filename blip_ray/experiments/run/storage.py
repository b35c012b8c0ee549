"""Where an experiment lives: the storage root, a new or resumable experiment directory, and the
spec it started with (so ``--resume`` cannot silently continue a different experiment)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from blip_ray.errors import UserError
from blip_ray.experiments.specs.experiment import ExperimentSpec
from blip_ray.records.checkpoints import checkpoint_problem
from blip_ray.records.layout import (
    ABSENT,
    CHECKPOINT_GLOB,
    EXPERIMENT_STATE,
    FINAL_STAGE,
    PROVENANCE_FILE,
    RESULT_KEYS,
    SEARCH_STAGE,
    SPEC_RECORD,
    UnreadableFile,
    differences,
    read_json,
    read_spec_record,
    result_settings,
    short_value,
    trial_dirs,
)
from blip_ray.records.rows import read_trial


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

    candidates = [root / name] if name else _experiments_of(spec, root)
    candidates = [
        c
        for c in candidates
        if _resumable(c, search=spec.search is not None and spec.stage is None, tune=tune)
    ]
    if not candidates:
        raise UserError(
            f"nothing to resume: no experiment of '{spec.name}' under {root}; "
            "run without --resume to start one"
        )
    others = [c.name for c in candidates[1:]]
    if spec.search is None or spec.stage is not None:  # a stage is checked as it resumes
        check_resumable(candidates[0])
    _check_same_spec(spec, candidates[0], others=others)
    return candidates[0]


def protocol_dir_for(
    spec: ExperimentSpec, *, storage: str | None, name: str | None, resume: bool
) -> Path:
    """The directory of a spec with ``search:``: a new one, or (``resume``) the one whose search
    stage can be continued. Each stage's own directory is checked as it is resumed."""
    return experiment_dir_for(spec, storage=storage, name=name, resume=resume)


def _resumable(path: Path, *, search: bool, tune: Any) -> bool:
    """Tune can continue the experiment at ``path`` (a search spec's: its search stage)."""
    if not search:
        return tune.Tuner.can_restore(str(path))
    return any(tune.Tuner.can_restore(str(path / stage)) for stage in (SEARCH_STAGE, FINAL_STAGE))


def check_resumable(experiment_dir: Path) -> None:
    """Refuse, naming the file, to resume from a truncated or garbled file: Tune's experiment
    state, the spec and provenance records, a trial's row files or its latest checkpoint (each an
    input of the resumed run). Nothing is changed, so every finished row stays where it is."""
    problems = []
    states = sorted(experiment_dir.glob(EXPERIMENT_STATE))
    for path in [experiment_dir / SPEC_RECORD, experiment_dir / PROVENANCE_FILE, *states[-1:]]:
        try:
            read_json(path)
        except UnreadableFile as err:
            problems.append(str(err))
    for trial_dir in trial_dirs(experiment_dir):
        try:
            problems += [str(err) for err in read_trial(trial_dir).unreadable]
        except UnreadableFile as err:
            problems.append(str(err))
        checkpoints = sorted(trial_dir.glob(CHECKPOINT_GLOB))
        found = checkpoint_problem(checkpoints[-1]) if checkpoints else None
        problems += [found] if found else []
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise UserError(
            f"--resume: {problems[0]}{more}; resuming would build on it. `blip-ray report "
            f"{experiment_dir}` reports what finished; run the trials it lacks as a new "
            "experiment and pool both (blip-ray report DIR NEW --out OUT)"
        )


def _experiments_of(spec: ExperimentSpec, root: Path) -> list[Path]:
    """The experiment directories under ``root`` that ran ``spec``, latest first: those whose
    saved spec has its name or computes the same trials (whatever ``--name`` called them), and,
    from before specs were saved, those named ``<spec name>-<time>``."""
    now = result_settings(spec.record())
    found = []
    for path in (p for p in root.iterdir() if p.is_dir()):
        try:
            record = read_json(path / SPEC_RECORD)
        except UserError:  # unreadable: not an experiment to resume
            continue
        if record is None:  # from before the record, or not an experiment
            if path.name.startswith(f"{spec.name}-"):
                found.append(path)
            continue
        if record.get("name") == spec.name or result_settings(record) == now:
            found.append(path)
    return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)


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


def _check_same_spec(
    spec: ExperimentSpec, experiment_dir: Path, *, others: Sequence[str] = ()
) -> None:
    """Tune restores trials as they were configured: a changed spec would be silently ignored.

    The refusal names up to three differing keys (nested ones by their path, ``rl.ppo.lr``) with
    both values, and ``others``: the spec's other experiments, which ``--name`` can pick.
    """
    record = read_spec_record(experiment_dir)
    if record is None:
        return
    started, now = result_settings(record), result_settings(spec.record())
    found = [
        difference
        for key in RESULT_KEYS
        for difference in differences(started.get(key, ABSENT), now.get(key, ABSENT), key)
    ]
    if not found:
        return
    (key, old, new), *more = found
    also = ", ".join(f"{k} {short_value(a)} -> {short_value(b)}" for k, a, b in more[:2])
    also += f" and {len(more) - 2} more" if len(more) > 2 else ""
    hint = f"; or pick another experiment with --name ({', '.join(others[:5])})" if others else ""
    raise UserError(
        f"--resume: {experiment_dir.name} started with {key}={short_value(old)}, this spec has "
        f"{key}={short_value(new)}"
        + (f" (also {also})" if also else "")
        + "; resume with the spec "
        "and flags (--smoke, --data-dir) it started with, or run without --resume" + hint
    )
