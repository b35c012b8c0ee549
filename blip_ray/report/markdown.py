"""report.md (run header, results, statistics, RL budget and normalization, failed trials, plots)
and :func:`write_report`, which writes it next to the CSVs, the LaTeX table and the PNGs it
links."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from blip_ray.records.trials import TrialResult
from blip_ray.report import improvement, latex, results_table, statistics, tables
from blip_ray.report.plots import write_plots
from blip_ray.report.provenance import provenance_lines

FILE_NAMES = (
    *("summary.csv", "matrices.csv", "report.md", "table.csv", "table.tex"),
    "improvement.csv",
)


@dataclass(frozen=True)
class ReportPaths:
    """Where :func:`write_report` put each file, so a CLI can print them and tests can open them."""

    summary_csv: Path
    matrices_csv: Path
    report_md: Path
    table_csv: Path
    table_tex: Path
    improvement_csv: Path
    plots: tuple[Path, ...]
    table: str
    """The results table as report.md shows it, for a CLI to print (not drawn twice)."""


@dataclass(frozen=True)
class _Header:
    """What report.md says about the run(s) above the results."""

    title: str
    wall_s: float | None
    planned: int | None
    sources: tuple[str, ...]
    reps: int = statistics.DEFAULT_REPS
    """Bootstrap resamples behind every interval."""
    provenance: Mapping[str, Any] | None = None
    """The experiment's record of what ran it, one entry per run segment (None: pooled, or
    recorded before provenance)."""
    skipped: tuple[str, ...] = ()
    """The experiment's files that could not be read and were left out, each a line."""


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m {secs:02d}s" if hours else f"{minutes}m {secs:02d}s"


def _trial_line(trial: TrialResult) -> str:
    total = len(trial.task_names) or "?"
    where = f"after {len(trial.matrix)} of {total} tasks"
    error = f": {' '.join(str(trial.error).split())}" if trial.error else ""
    setting = tables.setting_label(trial.hyperparameters)
    return f"- {trial.method}, seed {trial.seed}, {setting} ({where}){error}"


#: How the budget line names the evaluation policy (records before ``eval_policy``: greedy).
_POLICY_WORDS = {"greedy": "deterministic (greedy)", "sampled": "sampled-policy"}


def _rl_sections(trials: Sequence[TrialResult]) -> list[str]:
    """RL: the budget the trials ran with and each task's normalization scale."""
    rl = [t for t in trials if t.normalization]
    if not rl:
        return []
    lines, budgets = [], []
    for trial in rl:
        if trial.budget and trial.budget not in budgets:
            budgets.append(trial.budget)
    if budgets:
        lines += ["", "## Budget", ""]
        for budget in budgets:
            cap = budget.get("eval_max_steps")
            lines.append(
                f"- {budget['steps_per_task']:,} env steps per task; evaluation: "
                f"{budget['eval_episodes']} {_POLICY_WORDS[budget.get('eval_policy', 'greedy')]} "
                "episodes per task"
                + (f", each capped at {cap:,} agent steps" if cap else ", played to the end")
                + "."
            )
    lines += [
        *("", "## Normalization", ""),
        "Per task, a raw return R reads (R - zero) / (one - zero). Zero: a uniformly random "
        "policy's return (as many episodes, with the same step cap, as the evaluation; mean "
        "over trials). One: a single-task reference return (the spec's rl.reference_returns or "
        "`blip-ray report --reference-returns`) or, without one, the best return any trial of "
        "this experiment reached. Learning curves show raw scores.",
        *("", "| Task | Zero (raw) | Zero from | One (raw) | One from |", "|---|---|---|---|---|"),
    ]
    scale = rl[0].normalization or []
    lines += [
        f"| {tables.cell(s['task'])} | {s['low']:.4g} | {s['low_source']} | {s['high']:.4g} "
        f"| {s['source']} |"
        for s in scale
    ]
    unscaled = [s["task"] for s in scale if not s["high"] > s["low"]]
    if unscaled:
        lines += [
            "",
            f"No usable scale for {', '.join(unscaled)}: one is not above zero (no policy "
            "evaluated here, nor a given reference, beat the random policy), so their normalized "
            "returns, and every metric that averages over them, read n/a. Raw returns follow.",
        ]
    return lines + _raw_returns(trials)


def _raw_returns(trials: Sequence[TrialResult]) -> list[str]:
    """RL: raw scores per game right after training it and after the last task (seed means)."""
    groups = [g for g in tables.ok_groups(trials) if all(t.raw_matrix for t in g.trials)]
    if not groups:
        return []
    names = tables.shared_names(groups[0].trials) or [
        f"task {u}" for u in range(len(groups[0].trials[0].raw_matrix[0]))
    ]
    lines = [
        *("", "## Raw returns", ""),
        "Mean raw score over seeds: right after training each task (R[u, u]) and after the last "
        "task (R[T-1, u]).",
        "",
        "| Method | When | " + " | ".join(tables.cell(n) for n in names) + " |",
        "|---|---|" + "---|" * len(names),
    ]
    for group in groups:
        raw = np.array([t.raw_matrix for t in group.trials], dtype=float).mean(axis=0)
        for when, values in (("just trained", np.diag(raw)), ("after the last", raw[-1])):
            cells = " | ".join(f"{v:.4g}" for v in values)
            lines.append(f"| {tables.cell(group.name)} | {when} | {cells} |")
    return lines


def _markdown(
    trials: Sequence[TrialResult],
    rows: Sequence[results_table.TableRow],
    found: improvement.Improvements,
    plots: list[tuple[str, Path]],
    header: _Header,
) -> str:
    title, wall_s, planned = header.title, header.wall_s, header.planned
    status = Counter(trial.status for trial in trials)
    units = sorted({tables.UNITS.get(trial.metric, trial.metric) for trial in trials}) or ["none"]
    lines = [f"# {title}", "", f"Values: {', '.join(units)}."]
    if header.sources:
        names = ", ".join(header.sources)
        lines.append(f"Pooled from {len(header.sources)} experiments: {names}.")
    if wall_s is not None:
        rate = f", {len(trials) * 60 / wall_s:.2f} trials per minute" if wall_s > 0 else ""
        segments = len((header.provenance or {}).get("segments") or [])
        summed = f" over {segments} run segments" if segments > 1 else ""
        pooled = " summed over the experiments" if header.sources else ""
        lines.append(f"Wall time{pooled}: {_duration(wall_s)} ({wall_s:.1f} s{summed}){rate}.")
    known = ("ok", "failed", "incomplete")
    others = "".join(f", {n} {s}" for s, n in sorted(status.items()) if s not in known)
    if planned is not None and planned > len(trials):
        others += f", {planned - len(trials)} not started ({planned} planned)"
    else:
        others += f" ({len(trials)} in all)"
    lines += [
        f"Trials: {status['ok']} ok, {status['failed']} failed, {status['incomplete']} incomplete"
        f"{others}.",
        *("", "## Results", "", results_table.render_markdown(rows), ""),
        "ACC, BWT (official) and forgetting: mean over seeds [95% bootstrap interval], and "
        "beside it the interquartile mean (IQM) [95% bootstrap interval] (see Statistics); the "
        "other scores: mean ± 95% confidence half-width (Student t); (n=1): a single seed, no "
        f"interval. Only trials with status ok count toward this table ({status['ok']} of "
        f"{len(trials)}); summary.csv lists every trial. FWT is against the untrained network; "
        "n/a: not defined for this method or run. State: bytes of method state kept after the "
        "last task, mean over seeds (first task → last task where they differ: a memory that "
        "grows with the tasks). A reference (joint training) bounds the continual methods and is "
        "listed after them, unranked and untested. The same table for a paper: table.csv (per "
        "score its mean, Student-t half-width, seeds, bootstrap bounds and IQM at full "
        "precision) and table.tex (booktabs; the best continual method per score in bold).",
        *improvement.markdown_lines(rows, found, reps=header.reps),
        "",
        "improvement.csv lists every pair's P(X > Y) with its bounds.",
        *_rl_sections(trials),
        *("", "## Failed trials", ""),
    ]
    failed = [trial for trial in trials if trial.status == "failed"]
    lines += [_trial_line(trial) for trial in failed] or ["None."]
    unfinished = [trial for trial in trials if trial.status not in {"ok", "failed"}]
    if unfinished:
        lines += ["", "## Incomplete trials", "", *(_trial_line(t) for t in unfinished)]
    lines += ["", "## Plots", ""]
    for caption, path in plots:
        lines += [f"### {caption}", "", f"![{caption}]({path.name})", ""]
    if not plots:
        lines.append("None (no trial with status ok).")
    if header.skipped:
        lines += ["## Files left out (unreadable)", "", *(f"- {line}" for line in header.skipped)]
        lines.append("")
    lines += provenance_lines(header.provenance)
    return "\n".join(lines).rstrip() + "\n"


def write_report(
    trials: list[TrialResult],
    out_dir: Path,
    *,
    title: str,
    wall_s: float | None = None,
    planned: int | None = None,
    provenance: Mapping[str, Any] | None = None,
    sources: Sequence[str] = (),
    skipped: Sequence[str] = (),
    reps: int = statistics.DEFAULT_REPS,
) -> ReportPaths:
    """Write summary.csv, matrices.csv, the results table as table.csv and table.tex, the PNG
    plots and report.md (linking them) to out_dir.

    ``wall_s`` is the whole run's wall time; with it the report states trials per minute.
    ``planned`` is the size of the spec's grid: trials an interrupted run never started are
    counted as such. ``provenance`` (the experiment's record of what ran it, one entry per run
    segment) adds a Provenance section; ``sources`` names the experiments a pooled report was
    made from; ``skipped`` names the files that could not be read and were left out. ``reps``:
    bootstrap resamples per interval (:mod:`.statistics`; fixed-seeded, so reproducible).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary_csv, matrices_csv, report_md, table_csv, table_tex, improvement_csv = (
        out_dir / name for name in FILE_NAMES
    )
    tables.summary_frame(trials).to_csv(summary_csv, index=False)
    tables.matrices_frame(trials).to_csv(matrices_csv, index=False)
    rows = results_table.table_rows(trials, reps=reps)
    results_table.table_frame(rows).to_csv(table_csv, index=False)
    table_tex.write_text(latex.latex_table(rows, title=title), encoding="utf-8")
    found = improvement.improvements(rows, reps=reps)
    improvement.improvement_frame(found).to_csv(improvement_csv, index=False)
    plots = write_plots(trials, out_dir, reps=reps)
    header = _Header(title, wall_s, planned, tuple(sources), reps, provenance, tuple(skipped))
    report_md.write_text(_markdown(trials, rows, found, plots, header), encoding="utf-8")
    return ReportPaths(
        *(summary_csv, matrices_csv, report_md, table_csv, table_tex, improvement_csv),
        plots=tuple(path for _, path in plots),
        table=results_table.render_markdown(rows),
    )
