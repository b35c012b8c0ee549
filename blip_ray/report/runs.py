"""Reports over experiment directories: one rewritten in place or into ``--out``, several of one
benchmark pooled into one report (``blip-ray report DIR DIR --out OUT``), or several side by
side (``blip-ray compare DIR DIR``). No Ray: everything is read back from the directories.

Pooling exists to add methods and seeds to an experiment after it ran, so only the spec keys
that say which trials ran (:data:`MAY_DIFFER`) may differ; every other key of
:data:`~blip_ray.records.layout.RESULT_KEYS` decides what a trial computes and must match,
or the pooled means would average different experiments. A seed of a method and setting that
finished in two of the directories is refused rather than counted twice.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from blip_ray.errors import UserError
from blip_ray.records.layout import (
    FINAL_STAGE,
    SEARCH_STAGE,
    UnreadableFile,
    differences,
    read_provenance,
    read_run_record,
    read_spec_record,
    result_settings,
    short_value,
    trial_dirs,
)
from blip_ray.records.trials import TrialResult, load_trials, normalize_rl_returns, trial_order
from blip_ray.report import render_markdown, table_rows, write_report
from blip_ray.report.protocol import is_protocol_dir, write_protocol_report
from blip_ray.report.references import write_references
from blip_ray.report.tables import setting_label

MAY_DIFFER = ("methods", "seeds", "samples", "download")
"""Spec keys pooled experiments may differ in: which methods, settings and seeds ran, and whether
missing data could be downloaded (which changes no number)."""


def report_experiments(
    run_dirs: Sequence[Path], *, out: Path | None, reference_returns: dict[str, float] | None
) -> tuple[list[TrialResult], str]:
    """``blip-ray report``: one experiment's report (into ``out``, else in place), or the pooled
    report of several into ``out``; returns the trials and the table to print."""
    run_dirs, skipped = [Path(d) for d in run_dirs], []
    if len(run_dirs) == 1 and is_protocol_dir(run_dirs[0]):
        return _report_protocol(run_dirs[0], out=out, reference_returns=reference_returns)
    # a run with search: pools by its final stage (its search trials ran other seeds and tasks)
    run_dirs = [d / FINAL_STAGE if is_protocol_dir(d) else d for d in run_dirs]
    for run_dir in run_dirs:
        _check_holds_trials(run_dir)
    if len(run_dirs) == 1:
        (run_dir,) = run_dirs
        references = bool((_readable(read_spec_record, run_dir, skipped) or {}).get("references"))
        if references and reference_returns is not None:
            raise UserError(
                f"--reference-returns: {run_dir} is a references experiment (it writes them); "
                "pass the experiment whose returns they normalize"
            )
        header = {"title": run_dir.name, **(_readable(read_run_record, run_dir, skipped) or {})}
        return write_experiment_report(
            run_dir,
            references,
            header,
            reference_returns=reference_returns,
            out_dir=out,
            skipped=skipped,
        )
    if out is None:
        raise UserError(
            f"report: pooling {len(run_dirs)} experiments needs --out DIR, a directory of its "
            "own for the pooled report (each experiment keeps its own)"
        )
    if any(out.resolve() == run_dir.resolve() for run_dir in run_dirs):
        raise UserError(f"--out: {out} is one of the pooled experiments; choose a new directory")
    trials = pooled_trials(run_dirs, reference_returns=reference_returns)
    records = [read_run_record(run_dir) for run_dir in run_dirs]
    benchmark = (read_spec_record(run_dirs[0]) or {}).get("benchmark")
    paths = write_report(
        trials,
        out,
        title=f"{out.resolve().name} ({benchmark}, {len(run_dirs)} experiments pooled)",
        wall_s=_total([record.get("wall_s") for record in records]),
        planned=_total([record.get("planned") for record in records]),
        sources=[run_dir.name for run_dir in run_dirs],
    )
    return trials, paths.table


def _report_protocol(
    top: Path, *, out: Path | None, reference_returns: dict[str, float] | None
) -> tuple[list[TrialResult], str]:
    """A run with ``search:``, in place: each stage's report, then the run's own."""
    if out is not None:
        raise UserError(
            f"--out: {top} is a run with search:, reported in place; to report its final runs "
            f"elsewhere, pass its final stage: blip-ray report {top / FINAL_STAGE} --out {out}"
        )
    trials: list[TrialResult] = []
    for stage in (SEARCH_STAGE, FINAL_STAGE):
        if (top / stage).is_dir() and any(True for _ in trial_dirs(top / stage)):
            trials, _ = report_experiments(
                [top / stage], out=None, reference_returns=reference_returns
            )
    return trials, write_protocol_report(top)


def write_experiment_report(
    experiment_dir: Path,
    references: bool,
    header: dict[str, Any],
    *,
    reference_returns: dict[str, float] | None = None,
    out_dir: Path | None = None,
    skipped: list[str] | None = None,
) -> tuple[list[TrialResult], str]:
    """The experiment's report (a references experiment's: its reference returns; otherwise
    with the provenance the experiment recorded), into its own directory or ``out_dir``; returns
    the trials and the table to print, followed by a line per file left out (``skipped``, with
    those found reading the trials)."""
    out_dir = Path(out_dir if out_dir is not None else experiment_dir)
    skipped = [] if skipped is None else skipped
    if references:
        trials = load_trials(experiment_dir, normalize=False, skipped=skipped)
        out_dir.mkdir(parents=True, exist_ok=True)
        return trials, _with_skipped(write_references(trials, out_dir, **header), skipped)
    trials = load_trials(experiment_dir, reference=reference_returns, skipped=skipped)
    provenance = _readable(read_provenance, experiment_dir, skipped)
    paths = write_report(trials, out_dir, **header, provenance=provenance, skipped=skipped)
    return trials, _with_skipped(paths.table, skipped)


def _readable(
    read: Callable[[Path], dict[str, Any] | None], experiment_dir: Path, skipped: list[str]
) -> dict[str, Any] | None:
    """``read(experiment_dir)``; None, named in ``skipped``, where its file is unreadable."""
    try:
        return read(experiment_dir)
    except UnreadableFile as err:
        skipped.append(f"{err}: left out")
        return None


def _with_skipped(table: str, skipped: Sequence[str]) -> str:
    return "\n".join([table, *(f"skipped: {line}" for line in skipped)])


def pooled_trials(
    run_dirs: Sequence[Path], *, reference_returns: dict[str, float] | None = None
) -> list[TrialResult]:
    """The trials of several experiments of one benchmark and the same settings, RL returns
    normalized on one scale over all of them."""
    specs = [_poolable_spec(run_dir) for run_dir in run_dirs]
    first = result_settings(specs[0])
    for run_dir, spec in zip(run_dirs[1:], specs[1:], strict=True):
        for key, mine, theirs in differences(first, result_settings(spec)):
            if key.split(".")[0] not in MAY_DIFFER:
                raise UserError(
                    f"cannot pool: {run_dirs[0]} has {key}={short_value(mine)}, {run_dir} has "
                    f"{key}={short_value(theirs)}; pool experiments of one benchmark and the same "
                    "settings (blip-ray compare shows different ones side by side)"
                )
    per_dir = [load_trials(run_dir, normalize=False) for run_dir in run_dirs]
    _check_seeds_once(run_dirs, per_dir)
    if reference_returns is None:
        reference_returns = _one_reference(run_dirs, per_dir)
    trials = [trial for trials in per_dir for trial in trials]
    normalize_rl_returns(trials, reference_returns)
    return sorted(trials, key=trial_order)


def compare_table(
    run_dirs: Sequence[Path], *, reference_returns: dict[str, float] | None = None
) -> str:
    """``blip-ray compare``: the results tables of several experiments as one, a Run column
    first, led by one-line notes on what differs between them."""
    run_dirs = [Path(d) for d in run_dirs]
    if len(run_dirs) < 2:
        raise UserError("compare: give two or more experiment directories (report shows one)")
    names = [d.name for d in run_dirs]
    if len(set(names)) < len(names):
        names = [str(d) for d in run_dirs]
    rows, notes, per_run_scale = [], [], False
    for run_dir, name in zip(run_dirs, names, strict=True):
        _check_holds_trials(run_dir)
        if (read_spec_record(run_dir) or {}).get("references"):
            raise UserError(f"compare: {run_dir} is a references experiment; report it alone")
        trials = load_trials(run_dir, reference=reference_returns)
        rows += [dataclasses.replace(row, run=name) for row in table_rows(trials)]
        per_run_scale |= any(
            scale["source"] == "best observed" for t in trials for scale in t.normalization or []
        )
    specs = [read_spec_record(run_dir) for run_dir in run_dirs]
    missing = [name for name, spec in zip(names, specs, strict=True) if spec is None]
    if missing:
        notes.append(f"note: no spec record in {', '.join(missing)}: settings not compared")
    settings = [result_settings(spec) for spec in specs if spec is not None]
    if differing := _differing_keys(settings):
        notes.append(f"note: the runs differ in {'; '.join(differing)}")
    if per_run_scale:
        notes.append(
            "note: each run's normalized return of 1 is its own best return where no reference "
            "is given; pass --reference-returns FILE for one scale"
        )
    return "\n".join([*notes, render_markdown(rows)])


def _differing_keys(settings: Sequence[dict[str, Any]]) -> list[str]:
    """``key: value | value | ...`` (one value per run) for each setting where any run differs;
    which methods and seeds ran is what the table shows, not a note."""
    keys: list[str] = []
    for other in settings[1:]:
        found = [key for key, _, _ in differences(settings[0], other)]
        keys += [k for k in found if k not in keys and k.split(".")[0] not in MAY_DIFFER]
    values = {key: [_lookup(s, key) for s in settings] for key in keys}
    return [f"{key}: {' | '.join(short_value(v) for v in values[key])}" for key in keys]


def _lookup(settings: dict[str, Any], dotted: str) -> Any:
    value: Any = settings
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _poolable_spec(run_dir: Path) -> dict[str, Any]:
    spec = read_spec_record(run_dir)
    if spec is None:
        raise UserError(
            f"cannot pool {run_dir}: it has no spec record, so its settings cannot be checked "
            "against the others'; report it alone"
        )
    if spec.get("references"):
        raise UserError(
            f"cannot pool {run_dir}: it is a references experiment; report it alone "
            f"(blip-ray report {run_dir})"
        )
    return spec


def _check_seeds_once(run_dirs: Sequence[Path], per_dir: Sequence[list[TrialResult]]) -> None:
    """A seed of one method and setting finished in two experiments would count twice."""
    seen: dict[tuple[str, str, int], Path] = {}
    for run_dir, trials in zip(run_dirs, per_dir, strict=True):
        for trial in (t for t in trials if t.status == "ok"):
            key = (trial.method, json.dumps(trial.hyperparameters, sort_keys=True), trial.seed)
            if key in seen and seen[key] != run_dir:
                raise UserError(
                    f"cannot pool: {trial.method} ({setting_label(trial.hyperparameters)}) seed "
                    f"{trial.seed} finished in both {seen[key]} and {run_dir}; a seed counts "
                    "once: pool experiments that ran other seeds"
                )
            seen[key] = run_dir


def _one_reference(
    run_dirs: Sequence[Path], per_dir: Sequence[list[TrialResult]]
) -> dict[str, float] | None:
    """The experiments' single-task reference returns (their specs'), where they agree; a pooled
    report has one normalization scale, so two different ones need ``--reference-returns``."""
    given = [
        (run_dir, next((t.reference for t in trials if t.reference), None))
        for run_dir, trials in zip(run_dirs, per_dir, strict=True)
    ]
    given = [(run_dir, reference) for run_dir, reference in given if reference]
    for run_dir, reference in given[1:]:
        if reference != given[0][1]:
            raise UserError(
                f"cannot pool: {given[0][0]} and {run_dir} have different rl.reference_returns; "
                "pass --reference-returns FILE for the pooled report's one scale"
            )
    return given[0][1] if given else None


def _check_holds_trials(run_dir: Path) -> None:
    if not trial_dirs(run_dir):
        raise UserError(f"{run_dir} holds no trials; pass an experiment directory under runs/")


def _total(values: Sequence[float | int | None]) -> float | int | None:
    """The sum where every experiment recorded the value, else unknown (None)."""
    known = [v for v in values if v is not None]
    return sum(known) if len(known) == len(values) else None
