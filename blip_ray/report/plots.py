"""Every report figure, as PNG files next to report.md.

Choices, and why:

- ``tasks_*.png`` draws every point: zero-shot values (trained task t < evaluated task u) dotted,
  from training the task onward solid, the task's own training point marked, so forward transfer
  and forgetting are both visible on one line.
- Figures use matplotlib's object API on an Agg canvas, never pyplot: no global state, no window,
  nothing to close (rliable's profile plot draws onto such a figure's axes).
- RL adds ``profile.png``, rliable's performance profile: per method the share of its
  (seed, game) normalized final scores above each threshold, with a 95% bootstrap band; a curve
  above another everywhere is better on every score level, not only on average.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from blip_ray.records.trials import TrialResult
from blip_ray.report import statistics
from blip_ray.report.tables import (
    UNITS,
    Group,
    capacity_label,
    ok_groups,
    shared_names,
    task_name,
    trial_terms,
)

ANNOTATE_MAX_TASKS = 12
"""Heat maps write each cell's value up to this many tasks; beyond, the text would not fit."""


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


def _seed_mean(group: Group) -> tuple[np.ndarray, list[str], str]:
    """The group's seed-mean matrix, a name per task column, and the metric's name."""
    mean = _mean_over_trials([trial.matrix for trial in group.trials])
    names = [task_name(shared_names(group.trials), u) for u in range(mean.shape[1])]
    return mean, names, group.trials[0].metric


def _new_figure(width: float, height: float) -> tuple[Figure, Any]:
    figure = Figure(figsize=(min(width, 10.0), min(height, 8.0)), dpi=100)
    FigureCanvasAgg(figure)  # Agg renders to files only, whatever backend the caller set
    return figure, figure.add_subplot()


def _title(group: Group) -> str:
    seeds = len(group.trials)
    return f"{group.name}, mean of {seeds} seed{'s' * (seeds != 1)}"


def _plot_matrix(group: Group) -> Figure:
    """Heat map of the seed-mean R; accuracy on a fixed 0-1 scale so methods compare by eye."""
    mean, names, metric = _seed_mean(group)
    rows, tasks = mean.shape
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
    return figure


def _plot_tasks(group: Group) -> Figure:
    """One line per evaluated task u along the sequence: dotted before u is trained (zero-shot,
    forward transfer), solid from its training on (forgetting), a dot where it was trained."""
    mean, names, metric = _seed_mean(group)
    rows, tasks = mean.shape
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
    return figure


def _plot_capacity(groups: list[Group]) -> Figure:
    """Seed-mean capacity per task, one line per (method, setting), each labelled with what it
    counts (BLIP's bits frozen, HAT's units used, PackNet's weights owned): how fast each method
    spends its network."""
    figure, axes = _new_figure(8.0, 4.0)
    means = [_mean_over_trials([[trial.capacity] for trial in g.trials])[0] for g in groups]
    for group, capacity in zip(groups, means, strict=True):
        label = f"{group.name}: {capacity_label(group.trials)}"
        axes.plot(np.arange(capacity.size), capacity, "o-", label=label)
    steps = range(max(capacity.size for capacity in means))
    names = [task_name(shared_names([t for g in groups for t in g.trials]), t) for t in steps]
    axes.set_xticks(steps, names, rotation=45 if len(names) > 6 else 0, fontsize="small")
    axes.set_xlabel("after training task")
    axes.set_ylabel("capacity used (fraction of the network)")
    axes.set_ylim(bottom=0)
    axes.set_title(_capacity_title(groups), fontsize="medium")
    axes.legend(fontsize="small", loc="center left", bbox_to_anchor=(1, 0.5))
    return figure


def _capacity_title(groups: list[Group]) -> str:
    seeds = sorted({len(group.trials) for group in groups})
    counts = " or ".join(map(str, seeds))
    return f"Network capacity used after each task, mean of {counts} seed{'s' * (seeds != [1])}"


#: Line styles of a setting's seeds in the learning curves (the game sets the colour).
SEED_STYLES = ("--", ":", "-.", (0, (5, 1)), (0, (1, 3)), (0, (3, 1, 1, 1, 1, 1)))


def _plot_curves(group: Group) -> Figure:
    """RL learning curves: each game's raw evaluation return against env steps, in the game's
    colour: one thin line per seed, each seed its own line style (the legend names them), and over
    several seeds their mean drawn thick and solid. A setting's seeds evaluate at the same
    iterations, but RLlib's env-step counts differ between seeds by a few dozen steps, so the mean
    pairs the seeds' k-th evaluations and draws them at their mean env step (up to the shortest
    seed's curve)."""
    trials = [trial for trial in group.trials if trial.curve]
    names = shared_names(trials)
    tasks = max(len(point["returns"]) for trial in trials for point in trial.curve)
    figure, axes = _new_figure(8.0, 4.0)
    palette = colormaps["tab10" if tasks <= 10 else "tab20"]
    alone = len(trials) == 1
    for u in range(tasks):
        color = palette(u % palette.N)
        seeds = [{p["env_steps"]: p["returns"][u] for p in t.curve if u < len(p["returns"])}
                 for t in trials]  # fmt: skip
        for i, points in enumerate(seeds):
            if points:
                axes.plot(list(points), list(points.values()), color=color,
                          linestyle="-" if alone else SEED_STYLES[i % len(SEED_STYLES)],
                          linewidth=1 if alone else 0.7, alpha=1 if alone else 0.6,
                          label=task_name(names, u) if alone else None)  # fmt: skip
        seeds = [sorted(points.items()) for points in seeds if points]
        length = min(map(len, seeds), default=0)
        if not alone and length:
            paired = np.array([points[:length] for points in seeds])  # seed, evaluation, (x, y)
            mean = paired.mean(axis=0)
            label = f"{task_name(names, u)} (mean of {len(seeds)} seeds)"
            axes.plot(mean[:, 0], mean[:, 1], "-", color=color, linewidth=2, label=label)
    for i, trial in enumerate([] if alone else trials):
        style = SEED_STYLES[i % len(SEED_STYLES)]
        axes.plot([], [], color="gray", linestyle=style, linewidth=0.7, label=f"seed {trial.seed}")
    axes.set_xlabel("env steps (all tasks)")
    axes.set_ylabel("evaluation return (raw score)")
    axes.set_title(f"{group.name}: learning curves", fontsize="medium")
    axes.legend(fontsize="small", loc="center left", bbox_to_anchor=(1, 0.5))
    return figure


def profile_scores(groups: Sequence[Group]) -> dict[str, np.ndarray]:
    """Per RL group (every trial's returns normalized), its final normalized score per seed and
    game, (seeds, games); groups with a NaN score or differing games left out."""
    out = {}
    for group in groups:
        if not all(trial.metric == "normalized_return" for trial in group.trials):
            continue
        finals = [trial_terms(trial, "acc") for trial in group.trials]
        if len({final.size for final in finals}) == 1 and not np.isnan(finals).any():
            reference = any(trial.role == "reference" for trial in group.trials)
            out[f"{group.name} (reference)" if reference else group.name] = np.stack(finals)
    return out


def _plot_profile(scores: dict[str, np.ndarray], reps: int) -> Figure:
    """rliable's performance profile of ``scores`` (:func:`profile_scores`) with its bands."""
    from rliable import plot_utils  # imports seaborn: only RL reports pay for it

    values = np.concatenate([array.ravel() for array in scores.values()])
    thresholds = np.linspace(min(0.0, values.min()), max(1.0, values.max()), 101)
    profiles, bands = statistics.performance_profile(scores, thresholds, reps=reps)
    figure, axes = _new_figure(7.0, 4.5)
    palette = colormaps["tab10" if len(scores) <= 10 else "tab20"]
    colors = {name: palette(i % palette.N) for i, name in enumerate(scores)}
    plot_utils.plot_performance_profiles(
        profiles, thresholds, performance_profile_cis=bands, ax=axes, colors=colors,
        xlabel="normalized final score (τ)", ylabel="fraction of runs with score > τ",
        labelsize="medium", ticklabelsize="small",
    )  # fmt: skip
    seeds = sorted({array.shape[0] for array in scores.values()})
    games = next(iter(scores.values())).shape[1]
    counted = "/".join(map(str, seeds))
    axes.set_title(
        f"Performance profiles ({counted} seeds x {games} games, 95% bootstrap bands)",
        fontsize="medium",
    )
    axes.legend(fontsize="small", loc="upper right")
    return figure


def write_plots(
    trials: Sequence[TrialResult], out_dir: Path, *, reps: int = statistics.DEFAULT_REPS
) -> list[tuple[str, Path]]:
    """Every plot of the ok trials as (caption, path), in the order the report lists them;
    ``reps``: the profile's bootstrap resamples."""
    plots: list[tuple[str, Path]] = []

    def save(figure: Figure, file_name: str, caption: str) -> None:
        figure.tight_layout()
        figure.savefig(out_dir / file_name)
        plots.append((caption, out_dir / file_name))

    plotted = [group for group in ok_groups(trials) if any(t.matrix for t in group.trials)]
    for group in plotted:
        stem, name = group.file_stem, group.name
        save(_plot_matrix(group), f"matrix_{stem}.png", f"{name}: matrix R[t, u]")
        save(_plot_tasks(group), f"tasks_{stem}.png", f"{name}: each task along the sequence")
        if any(trial.curve for trial in group.trials):
            save(_plot_curves(group), f"curves_{stem}.png", f"{name}: learning curves per game")
    with_capacity = [g for g in plotted if any(c is not None for t in g.trials for c in t.capacity)]
    if with_capacity:
        counted = sorted({f"{g.method}: {capacity_label(g.trials)}" for g in with_capacity})
        caption = f"Capacity used per task ({'; '.join(counted)})"
        save(_plot_capacity(with_capacity), "capacity.png", caption)
    if scores := profile_scores(plotted):
        caption = "Performance profiles: normalized final score per seed and game"
        save(_plot_profile(scores, reps), "profile.png", caption)
    return plots
