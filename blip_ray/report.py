"""Many trials -> tidy CSVs, one mean ± 95% CI markdown table and plots; no Ray, no torch.

The only input is :class:`~blip_ray.experiments.records.TrialResult`, so a report can be rebuilt
from saved records without a cluster. Every number comes from :mod:`blip_ray.metrics` (one formula
for every method); this module only groups, formats and draws.

Choices, and why:

- ``summary.csv`` names hyperparameter columns by their plain name and prefixes ``hp_`` only when
  the name would collide with a fixed column (a hyperparameter called ``acc`` becomes ``hp_acc``):
  the usual case reads naturally and no column is ever overwritten.
- The markdown table and the plots count status ``ok`` trials only: a failed or incomplete trial's
  metrics describe a shorter run and would bias the means. Such trials still get a row in
  ``summary.csv`` (metrics over their finished rows) and a section in ``report.md``.
- A table row is one (method, exact hyperparameter setting); its seeds are summarised by
  :func:`metrics.ci95`. One seed shows the mean with "(n=1)", never "± nan". A metric undefined
  for every seed (FWT without a baseline, capacity of a method without bits) shows "n/a". State
  bytes show the mean only, human-readable: a size, not a noisy score.
- ``tasks_*.png`` draws every point: zero-shot values (trained task t < evaluated task u) dotted,
  from training the task onward solid, the task's own training point marked, so forward transfer
  and forgetting are both visible on one line.
- Figures use matplotlib's object API on an Agg canvas, never pyplot: no global state, no window,
  nothing to close.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from blip_ray.experiments.records import TrialResult
from blip_ray.metrics import METRIC_NAMES, ci95, summary

FIXED_COLUMNS = ("trial_id", "method", "seed", *METRIC_NAMES, "capacity", "state_bytes")
FIXED_COLUMNS += ("tasks_done", "status", "error")
"""summary.csv's columns besides the hyperparameters (which go between ``seed`` and ``acc``)."""
MATRIX_COLUMNS = (
    *("trial_id", "method", "seed", "trained_task", "eval_task", "task_name", "value"),
    "raw_value",
)
"""``value``: the matrix entry (accuracy, normalized return); ``raw_value``: RL's raw game score."""
TABLE_LABELS = {
    "acc": "ACC",
    "bwt": "BWT (1/T, official)",
    "bwt_gem": "BWT (1/(T-1), GEM)",
    "forgetting": "Forgetting",
    "fwt": "FWT",
}
UNITS = {"accuracy": "accuracy (fraction)", "normalized_return": "normalized return"}
FILE_NAMES = ("summary.csv", "matrices.csv", "report.md")
ANNOTATE_MAX_TASKS = 12
"""Heat maps write each cell's value up to this many tasks; beyond, the text would not fit."""


@dataclass(frozen=True)
class ReportPaths:
    """Where :func:`write_report` put each file, so a CLI can print them and tests can open them."""

    summary_csv: Path
    matrices_csv: Path
    report_md: Path
    plots: tuple[Path, ...]


@dataclass(frozen=True)
class _Group:
    """One table row and one set of plots: a method's ok trials with one hyperparameter setting."""

    method: str
    label: str
    name: str
    """The method, with its setting in brackets where the method ran with several."""
    file_stem: str
    trials: list[TrialResult]


def _setting_label(hyperparameters: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(hyperparameters.items())) or "defaults"


def _slug(text: str) -> str:
    """Filesystem-safe on every OS: letters, digits, ``.``, ``-``, ``_`` only."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text.replace("=", "-")).strip("._") or "x"


def _trial_metrics(trial: TrialResult) -> dict[str, float]:
    """metrics.summary over the finished rows; all NaN when the trial finished no task."""
    if not trial.matrix:
        return dict.fromkeys(METRIC_NAMES, math.nan)
    try:
        return summary(trial.matrix, trial.initial_row)
    except ValueError as exc:  # name the trial: the bare message does not say which one
        raise ValueError(f"trial {trial.trial_id}: {exc}") from exc


def _last(values: Sequence[float | int | None]) -> float:
    return math.nan if not values or values[-1] is None else float(values[-1])


def _hp_columns(trials: Sequence[TrialResult]) -> dict[str, str]:
    """Hyperparameter name -> column: the plain name, ``hp_``-prefixed only on a collision."""
    taken, columns = set(FIXED_COLUMNS), {}
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
        row: dict[str, Any] = {
            "trial_id": trial.trial_id,
            "method": trial.method,
            "seed": trial.seed,
        }
        for name, column in hp_columns.items():
            row[column] = _csv_value(trial.hyperparameters.get(name))
        row.update(_trial_metrics(trial))
        row["capacity"] = _last(trial.capacity)
        row["state_bytes"] = trial.state_bytes[-1] if trial.state_bytes else None
        row.update(tasks_done=len(trial.matrix), status=trial.status, error=trial.error)
        rows.append(row)
    columns = [*FIXED_COLUMNS[:3], *hp_columns.values(), *FIXED_COLUMNS[3:]]
    frame = pd.DataFrame(rows, columns=columns)
    for column in hp_columns.values():  # 20 stays "20", not "20.0", where another trial lacks it
        frame[column] = pd.Series([row[column] for row in rows], dtype=object)
    frame["state_bytes"] = frame["state_bytes"].astype("Int64")  # "123", not "123.0"
    return frame


def matrices_frame(trials: Sequence[TrialResult]) -> pd.DataFrame:
    """Every finished matrix entry in long form: one row per (trial, trained task, eval task)."""
    rows = [
        (
            *(trial.trial_id, trial.method, trial.seed, t, u, _task_name(trial.task_names, u)),
            value,
            trial.raw_matrix[t][u] if trial.raw_matrix else None,
        )
        for trial in trials
        for t, row in enumerate(trial.matrix)
        for u, value in enumerate(row)
    ]
    return pd.DataFrame(rows, columns=list(MATRIX_COLUMNS))


def _task_name(names: Sequence[str], index: int) -> str:
    return names[index] if index < len(names) else f"task {index}"


def _shared_names(trials: Sequence[TrialResult]) -> list[str]:
    """Task names for a seed-averaged plot: positions when seeds ordered the tasks differently."""
    first = list(trials[0].task_names)
    if any(list(t.task_names) != first for t in trials[1:]):
        return []
    return first


def _groups(trials: Sequence[TrialResult]) -> list[_Group]:
    """Status-ok trials by (method, exact hyperparameters), each with a unique file stem."""
    grouped: dict[tuple[str, str], list[TrialResult]] = {}
    for trial in trials:
        if trial.status == "ok":
            key = json.dumps(trial.hyperparameters, sort_keys=True, default=str)
            grouped.setdefault((trial.method, key), []).append(trial)
    settings_per_method = Counter(method for method, _ in grouped)
    groups, taken = [], set()
    for (method, key), members in sorted(grouped.items()):
        label = _setting_label(members[0].hyperparameters)
        name, stem = method, _slug(method)
        if settings_per_method[method] > 1:
            name, stem = f"{method} ({label})", f"{stem}__{_slug(label)}"
        if len(stem) > 80 or stem.lower() in taken:  # short, and unique on case-blind disks too
            stem = f"{stem[:70]}_{hashlib.sha1(f'{method}|{key}'.encode()).hexdigest()[:8]}"
        taken.add(stem.lower())
        groups.append(_Group(method, label, name, stem, members))
    return groups


def _format_ci(values: Sequence[float]) -> str:
    if all(math.isnan(v) for v in values):
        return "n/a"
    mean, half_width = ci95(values)
    if len(values) == 1:
        return f"{mean:.3f} (n=1)"
    return f"{mean:.3f} ± {half_width:.3f}"  # "nan" if some seed is undefined: shown, not dropped


def _human_bytes(size: float) -> str:
    if math.isnan(size):
        return "n/a"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(size) < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"


def _cell(text: str) -> str:
    """One markdown table cell: a ``|`` or a line break would split the row."""
    return " ".join(str(text).split()).replace("|", "\\|")


def markdown_table(trials: Sequence[TrialResult]) -> str:
    """The results table alone (ok trials, best mean ACC first), for a CLI to print."""
    rows = []
    for group in _groups(trials):
        metrics = [_trial_metrics(trial) for trial in group.trials]
        mean_acc = float(np.mean([m["acc"] for m in metrics]))
        state = [_last(trial.state_bytes) for trial in group.trials]
        cells = [
            group.method,
            group.label,
            *(_format_ci([m[name] for m in metrics]) for name in METRIC_NAMES),
            _format_ci([_last(trial.capacity) for trial in group.trials]),
            _human_bytes(float(np.mean(state))),
            str(len(group.trials)),
        ]
        rows.append(((math.isnan(mean_acc), -np.nan_to_num(mean_acc), group.method), cells))
    if not rows:
        return "_No trials with status ok._"
    header = ["Method", "Hyperparameters", *TABLE_LABELS.values(), "Capacity", "State", "Seeds"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for _, cells in sorted(rows, key=lambda row: row[0]):
        lines.append("| " + " | ".join(_cell(cell) for cell in cells) + " |")
    return "\n".join(lines)


def _mean_over_trials(series: list[list[list[float]]]) -> np.ndarray:
    """Cell-wise mean of ragged 2-D lists; cells no trial has stay NaN (no empty-mean warning)."""
    rows = max(len(matrix) for matrix in series)
    cols = max((len(row) for matrix in series for row in matrix), default=0)
    stack = np.full((len(series), rows, cols), np.nan)
    for index, matrix in enumerate(series):
        for t, row in enumerate(matrix):
            stack[index, t, : len(row)] = [np.nan if v is None else v for v in row]
    count = np.isfinite(stack).sum(axis=0)
    return np.where(count > 0, np.nansum(stack, axis=0) / np.maximum(count, 1), np.nan)


def _new_figure(width: float, height: float) -> tuple[Figure, Any]:
    figure = Figure(figsize=(min(width, 10.0), min(height, 8.0)), dpi=100)
    FigureCanvasAgg(figure)  # Agg renders to files only, whatever backend the caller set
    return figure, figure.add_subplot()


def _title(group: _Group) -> str:
    seeds = len(group.trials)
    return f"{group.name}, mean of {seeds} seed{'s' * (seeds != 1)}"


def _plot_matrix(group: _Group, path: Path) -> None:
    """Heat map of the seed-mean R; accuracy on a fixed 0-1 scale so methods compare by eye."""
    mean = _mean_over_trials([trial.matrix for trial in group.trials])
    rows, tasks = mean.shape
    names = [_task_name(_shared_names(group.trials), u) for u in range(tasks)]
    metric = group.trials[0].metric
    figure, axes = _new_figure(0.6 * tasks + 3.0, 0.5 * rows + 2.5)
    low, high = (0.0, 1.0) if metric == "accuracy" else (np.nanmin(mean), np.nanmax(mean))
    image = axes.imshow(mean, vmin=low, vmax=high, cmap="viridis")
    figure.colorbar(image, ax=axes, label=UNITS.get(metric, metric))
    axes.set_xticks(range(tasks), names, rotation=45, ha="right", fontsize="small")
    axes.set_yticks(range(rows), names[:rows], fontsize="small")
    axes.set_xlabel("evaluated task")
    axes.set_ylabel("after training task")
    axes.set_title(_title(group), fontsize="medium")
    if tasks <= ANNOTATE_MAX_TASKS:
        middle = (low + high) / 2
        for (t, u), value in np.ndenumerate(mean):
            if np.isfinite(value):
                color = "white" if value < middle else "black"
                axes.text(u, t, f"{value:.2f}", ha="center", va="center", color=color, fontsize=8)
    figure.tight_layout()
    figure.savefig(path)


def _plot_tasks(group: _Group, path: Path) -> None:
    """One line per evaluated task u along the sequence: dotted before u is trained (zero-shot,
    forward transfer), solid from its training on (forgetting), a dot where it was trained."""
    mean = _mean_over_trials([trial.matrix for trial in group.trials])
    rows, tasks = mean.shape
    names = [_task_name(_shared_names(group.trials), u) for u in range(tasks)]
    metric = group.trials[0].metric
    figure, axes = _new_figure(7.0, 4.0)
    steps = np.arange(rows)
    palette = colormaps["tab10" if tasks <= 10 else "tab20"]  # distinct colours up to 20 tasks
    for u in range(tasks):
        color = palette(u % palette.N)
        axes.plot(steps[: u + 1], mean[: u + 1, u], ":", color=color, linewidth=1)
        axes.plot(steps[u:], mean[u:, u], "-", color=color, label=names[u])
        if u < rows:
            axes.plot([u], [mean[u, u]], "o", color=color)
    axes.set_xticks(steps, names[:rows], rotation=45 if rows > 6 else 0, fontsize="small")
    axes.set_xlabel("after training task (dotted: not trained yet)")
    axes.set_ylabel(UNITS.get(metric, metric))
    axes.set_title(_title(group), fontsize="medium")
    axes.legend(fontsize="small", ncol=1 + tasks // 8, loc="center left", bbox_to_anchor=(1, 0.5))
    figure.tight_layout()
    figure.savefig(path)


def _plot_capacity(groups: list[_Group], path: Path) -> None:
    """Seed-mean capacity per task, one line per (method, setting): how fast bits run out."""
    figure, axes = _new_figure(8.0, 4.0)
    means = [_mean_over_trials([[trial.capacity] for trial in g.trials])[0] for g in groups]
    for group, capacity in zip(groups, means, strict=True):
        axes.plot(np.arange(capacity.size), capacity, "o-", label=group.name)
    steps = range(max(capacity.size for capacity in means))
    names = [_task_name(_shared_names([t for g in groups for t in g.trials]), t) for t in steps]
    axes.set_xticks(steps, names, rotation=45 if len(names) > 6 else 0, fontsize="small")
    axes.set_xlabel("after training task")
    axes.set_ylabel("capacity used (fraction of bits)")
    axes.set_ylim(bottom=0)
    axes.legend(fontsize="small", loc="center left", bbox_to_anchor=(1, 0.5))
    figure.tight_layout()
    figure.savefig(path)


def _plot_curves(group: _Group, path: Path) -> None:
    """RL learning curves: each game's raw evaluation return against env steps (seed 0 order
    of games; one line per seed, thin, so the spread shows)."""
    trials = [trial for trial in group.trials if trial.curve]
    names = _shared_names(trials)
    tasks = max(len(point["returns"]) for trial in trials for point in trial.curve)
    figure, axes = _new_figure(8.0, 4.0)
    palette = colormaps["tab10" if tasks <= 10 else "tab20"]
    for u in range(tasks):
        for i, trial in enumerate(trials):
            steps = [p["env_steps"] for p in trial.curve if u < len(p["returns"])]
            values = [p["returns"][u] for p in trial.curve if u < len(p["returns"])]
            label = _task_name(names, u) if i == 0 else None
            axes.plot(steps, values, "-", color=palette(u % palette.N), linewidth=1, label=label)
    axes.set_xlabel("env steps (all tasks)")
    axes.set_ylabel("evaluation return (raw score)")
    axes.set_title(f"{group.name}: learning curves", fontsize="medium")
    axes.legend(fontsize="small", loc="center left", bbox_to_anchor=(1, 0.5))
    figure.tight_layout()
    figure.savefig(path)


def _write_plots(trials: Sequence[TrialResult], out_dir: Path) -> list[tuple[str, Path]]:
    """Every plot of the ok trials as (caption, path), in the order the report lists them."""
    groups = [group for group in _groups(trials) if any(t.matrix for t in group.trials)]
    plots = []
    for group in groups:
        for kind, caption, draw in (
            ("matrix", "matrix R[t, u]", _plot_matrix),
            ("tasks", "each task along the sequence", _plot_tasks),
        ):
            path = out_dir / f"{kind}_{group.file_stem}.png"
            draw(group, path)
            plots.append((f"{group.name}: {caption}", path))
        if any(trial.curve for trial in group.trials):
            path = out_dir / f"curves_{group.file_stem}.png"
            _plot_curves(group, path)
            plots.append((f"{group.name}: learning curves per game", path))
    with_capacity = [g for g in groups if any(c is not None for t in g.trials for c in t.capacity)]
    if with_capacity:
        _plot_capacity(with_capacity, out_dir / "capacity.png")
        plots.append(("BLIP capacity used per task", out_dir / "capacity.png"))
    return plots


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m {secs:02d}s" if hours else f"{minutes}m {secs:02d}s"


def _trial_line(trial: TrialResult) -> str:
    total = len(trial.task_names) or "?"
    where = f"after {len(trial.matrix)} of {total} tasks"
    error = f": {' '.join(str(trial.error).split())}" if trial.error else ""
    setting = _setting_label(trial.hyperparameters)
    return f"- {trial.method}, seed {trial.seed}, {setting} ({where}){error}"


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
                f"{budget['eval_episodes']} deterministic episodes per task"
                + (f", each capped at {cap:,} agent steps" if cap else ", played to the end")
                + "."
            )
    lines += [
        "",
        "## Normalization",
        "",
        "Per task, a raw return R reads (R - zero) / (one - zero). Zero: a uniformly random "
        "policy's return (as many episodes, with the same step cap, as the evaluation; mean "
        "over trials). One: a single-task reference return (the spec's rl.reference_returns or "
        "`blip-ray report --reference-returns`) or, without one, the best return any trial of "
        "this experiment reached. Learning curves show raw scores.",
        "",
        "| Task | Zero (raw) | Zero from | One (raw) | One from |",
        "|---|---|---|---|---|",
    ]
    scale = rl[0].normalization or []
    lines += [
        f"| {_cell(s['task'])} | {s['low']:.4g} | {s['low_source']} | {s['high']:.4g} "
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
    groups = [g for g in _groups(trials) if all(t.raw_matrix for t in g.trials)]
    if not groups:
        return []
    names = _shared_names(groups[0].trials) or [
        f"task {u}" for u in range(len(groups[0].trials[0].raw_matrix[0]))
    ]
    lines = [
        "",
        "## Raw returns",
        "",
        "Mean raw score over seeds: right after training each task (R[u, u]) and after the last "
        "task (R[T-1, u]).",
        "",
        "| Method | When | " + " | ".join(_cell(n) for n in names) + " |",
        "|---|---|" + "---|" * len(names),
    ]
    for group in groups:
        raw = np.array([t.raw_matrix for t in group.trials], dtype=float).mean(axis=0)
        for when, values in (("just trained", np.diag(raw)), ("after the last", raw[-1])):
            cells = " | ".join(f"{v:.4g}" for v in values)
            lines.append(f"| {_cell(group.name)} | {when} | {cells} |")
    return lines


def _markdown(
    trials: Sequence[TrialResult],
    plots: list[tuple[str, Path]],
    title: str,
    wall_s: float | None,
    planned: int | None = None,
) -> str:
    status = Counter(trial.status for trial in trials)
    units = sorted({UNITS.get(trial.metric, trial.metric) for trial in trials}) or ["none"]
    lines = [f"# {title}", "", f"Values: {', '.join(units)}."]
    if wall_s is not None:
        rate = f", {len(trials) * 60 / wall_s:.2f} trials per minute" if wall_s > 0 else ""
        lines.append(f"Wall time: {_duration(wall_s)} ({wall_s:.1f} s){rate}.")
    known = ("ok", "failed", "incomplete")
    others = "".join(f", {n} {s}" for s, n in sorted(status.items()) if s not in known)
    if planned is not None and planned > len(trials):
        others += f", {planned - len(trials)} not started ({planned} planned)"
    else:
        others += f" ({len(trials)} in all)"
    lines += [
        f"Trials: {status['ok']} ok, {status['failed']} failed, {status['incomplete']} incomplete"
        f"{others}.",
        *("", "## Results", "", markdown_table(trials), ""),
        "Mean ± 95% confidence half-width over seeds (Student t); (n=1): a single seed, no "
        f"interval. Only trials with status ok count toward this table ({status['ok']} of "
        f"{len(trials)}); summary.csv lists every trial. FWT is against the untrained network; "
        "n/a: not defined for this method or run. State: bytes of method state kept after the "
        "last task (mean over seeds).",
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
    return "\n".join(lines).rstrip() + "\n"


def write_report(
    trials: list[TrialResult],
    out_dir: Path,
    *,
    title: str,
    wall_s: float | None = None,
    planned: int | None = None,
) -> ReportPaths:
    """Write summary.csv, matrices.csv, the PNG plots and report.md (linking them) to out_dir.

    ``wall_s`` is the whole run's wall time; with it the report states trials per minute.
    ``planned`` is the size of the spec's grid: trials an interrupted run never started are
    counted as such.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary_csv, matrices_csv, report_md = (out_dir / name for name in FILE_NAMES)
    summary_frame(trials).to_csv(summary_csv, index=False)
    matrices_frame(trials).to_csv(matrices_csv, index=False)
    plots = _write_plots(trials, out_dir)
    report_md.write_text(_markdown(trials, plots, title, wall_s, planned), encoding="utf-8")
    return ReportPaths(summary_csv, matrices_csv, report_md, tuple(path for _, path in plots))
