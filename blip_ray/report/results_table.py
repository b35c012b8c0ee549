"""The results table: its numbers computed once (:func:`table_rows`), rendered three ways, as
markdown (report.md and the terminal), CSV (``table.csv``) and LaTeX (``table.tex``, :mod:`.latex`),
so the three always agree.

Choices, and why:

- A table row is one (method, exact hyperparameter setting). ACC, BWT (official) and forgetting
  (:data:`STAT_KEYS`) show the mean and the interquartile mean over seeds, each with its 95%
  stratified-bootstrap interval (:mod:`.statistics`: rliable; RL resamples the seeds of each game);
  the other scores, mean ± :func:`metrics.ci95`'s Student-t half-width. One seed shows the value
  with "(n=1)", never an interval of nan. A metric undefined for every seed (FWT without a
  baseline, capacity of a method without bits) shows "n/a", as does a bootstrapped score undefined
  for any seed (NaN propagates, as in :func:`metrics.ci95`). State bytes show the mean only,
  human-readable: a size, not a noisy score; after the first and the last task
  (``1.2 KiB → 12.0 KiB``) where they differ, so a memory that grows with the tasks stands out
  against a constant one.
- A reference (a method whose role is ``reference``, e.g. joint training) is labelled so and listed
  after the continual methods: it bounds them, it does not compete with them. For the same reason
  the LaTeX table's bold "best per column", the average rank and Welch's test against BLIP are
  among the continual rows only.
- Rank is the average rank on ACC over the seeds (RL: seed x game cells) all continual rows share;
  "p vs BLIP" is Welch's t-test on per-seed ACC against the best BLIP row (the first in the
  table), so "is BLIP better than this baseline" reads off one column.
- ``table.csv`` keeps full precision, one column per number (mean, Student-t half-width, count,
  bootstrap bounds, IQM and its bounds, rank, p), so a paper's table can be typeset from it
  without parsing; the markdown and LaTeX tables round to three decimals, and the bold best is
  decided on the rounded means (what the reader compares).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from blip_ray import metrics
from blip_ray.records.trials import TrialResult
from blip_ray.report import statistics
from blip_ray.report.tables import (
    capacity_label,
    cell,
    last_value,
    ok_groups,
    trial_metrics,
    trial_terms,
)

STAT_KEYS: tuple[str, ...] = tuple(metrics.TASK_TERMS)
"""The scores with bootstrap intervals and an IQM: ACC, BWT (official) and forgetting."""
BLIP = "blip"
"""The method the ``p vs BLIP`` column tests every other continual row against."""


@dataclass(frozen=True)
class Stat:
    """Mean, 95% CI half-width and count of one table cell's per-seed values."""

    mean: float
    half_width: float
    """NaN for one seed (no interval) or where a seed's value is NaN."""
    n: int
    defined: bool
    """False where the value is undefined for every seed (shown as n/a)."""

    @staticmethod
    def of(values: Sequence[float]) -> Stat:
        if all(math.isnan(v) for v in values):
            return Stat(math.nan, math.nan, len(values), defined=False)
        mean, half_width = metrics.ci95(values)
        return Stat(mean, half_width, len(values), defined=True)


@dataclass(frozen=True)
class TableRow:
    """One results-table row's numbers; every rendering of the table reads these."""

    method: str
    label: str
    """The hyperparameter setting, ``k=v`` sorted (:func:`tables.setting_label`)."""
    reference: bool
    """A reference such as joint training: it bounds the continual methods."""
    scores: dict[str, Stat]
    """Per :data:`metrics.METRICS` key."""
    capacity: Stat
    capacity_label: str | None
    state_first: float
    """Mean state bytes after the first task (NaN where a trial recorded none)."""
    state_last: float
    """Mean state bytes after the last task."""
    seeds: int
    run: str = ""
    """The experiment the row comes from, where a table shows several (``blip-ray compare``)."""
    name: str = ""
    """The method, with its setting in brackets where the method ran with several."""
    bootstrap: dict[str, statistics.Aggregate] = field(default_factory=dict)
    """Per :data:`STAT_KEYS` key: mean and IQM with their bootstrap intervals."""
    terms: dict[str, dict[int, np.ndarray]] = field(default_factory=dict, repr=False)
    """Per :data:`STAT_KEYS` key, seed -> the scores resampled (:func:`tables.trial_terms`); a
    row's seeds are distinct (a pooled report refuses a seed twice)."""
    rank: float = math.nan
    """Average rank on ACC among the continual rows (NaN for a reference, or fewer than two)."""
    welch_p: float = math.nan
    """Welch's t-test p-value on ACC against the best BLIP row (NaN for that row itself)."""

    @property
    def state_grows(self) -> bool:
        return math.isfinite(self.state_first) and not math.isclose(
            self.state_first, self.state_last
        )


def scores_array(per_seed: dict[int, np.ndarray]) -> np.ndarray:
    """One row's resampled scores as (seeds, games); NaN where the seeds hold different games."""
    values = list(per_seed.values())
    if len({value.size for value in values}) != 1:
        return np.full((len(values), 1), math.nan)
    return np.stack(values)


def table_rows(
    trials: Sequence[TrialResult], *, reps: int = statistics.DEFAULT_REPS
) -> list[TableRow]:
    """The table's rows (ok trials): continual methods by best mean ACC first, then the
    references; bootstrap intervals from ``reps`` resamples."""
    keyed = []
    for group in ok_groups(trials):
        scores = [trial_metrics(trial) for trial in group.trials]
        reference = any(trial.role == "reference" for trial in group.trials)
        firsts = [trial.state_bytes[0] for trial in group.trials if trial.state_bytes]
        terms = {
            key: {trial.seed: trial_terms(trial, key) for trial in group.trials}
            for key in STAT_KEYS
        }
        row = TableRow(
            method=group.method,
            label=group.label,
            reference=reference,
            scores={m.key: Stat.of([s[m.key] for s in scores]) for m in metrics.METRICS},
            capacity=Stat.of([last_value(trial.capacity) for trial in group.trials]),
            capacity_label=capacity_label(group.trials),
            state_first=float(np.mean(firsts)) if len(firsts) == len(group.trials) else math.nan,
            state_last=float(np.mean([last_value(trial.state_bytes) for trial in group.trials])),
            seeds=len(group.trials),
            name=group.name,
            bootstrap={
                key: statistics.aggregate(scores_array(terms[key]), reps=reps) for key in STAT_KEYS
            },
            terms=terms,
        )
        mean_acc = float(np.mean([s["acc"] for s in scores]))
        order = (reference, math.isnan(mean_acc), -np.nan_to_num(mean_acc), group.method)
        keyed.append((order, row))
    return _compared([row for _, row in sorted(keyed, key=lambda item: item[0])])


def _compared(rows: list[TableRow]) -> list[TableRow]:
    """The rows with the continual ones' average rank and Welch p against the best BLIP row."""
    competing = [row for row in rows if not row.reference]
    ranks = statistics.average_ranks({row.name: row.terms["acc"] for row in competing})
    blip = next((row for row in competing if row.method == BLIP), None)
    out = []
    for row in rows:
        if row.reference:
            out.append(row)
            continue
        p = math.nan
        if blip is not None and row is not blip:
            p = statistics.welch_p(seed_acc(blip), seed_acc(row))
        out.append(dataclasses.replace(row, rank=ranks[row.name], welch_p=p))
    return out


def seed_acc(row: TableRow) -> list[float]:
    """The row's ACC per seed (RL: the mean of its per-game terms)."""
    return [float(np.mean(terms)) for terms in row.terms["acc"].values()]


def header(*, runs: bool = False) -> list[str]:
    """The table's column names (``Run`` first where rows come from several experiments): each
    score, an IQM column after each of :data:`STAT_KEYS`."""
    labels = []
    for metric in metrics.METRICS:
        labels.append(metric.label)
        if metric.key in STAT_KEYS:
            labels.append(f"{metric.label.split(' (')[0]} IQM")
    columns = ["Method", "Hyperparameters", *labels, "Capacity", "State"]
    columns += ["Rank (ACC)", "p vs BLIP (ACC)", "Seeds"]
    return ["Run", *columns] if runs else columns


def _format_ci(stat: Stat, plus_minus: str = "±") -> str:
    if not stat.defined:
        return "n/a"
    if stat.n == 1:
        return f"{stat.mean:.3f} (n=1)"
    return f"{stat.mean:.3f} {plus_minus} {stat.half_width:.3f}"  # "nan" if a seed is undefined


def format_interval(estimate: statistics.Interval) -> str:
    """``0.850 [0.800, 0.900]``; the value alone with "(n=1)" where no interval was drawn."""
    if math.isnan(estimate.point):
        return "n/a"
    if math.isnan(estimate.low):
        return f"{estimate.point:.3f} (n=1)"
    return f"{estimate.point:.3f} [{estimate.low:.3f}, {estimate.high:.3f}]"


def _format_p(p: float) -> str:
    return "n/a" if math.isnan(p) else f"{p:.2g}"


def _human_bytes(size: float) -> str:
    if math.isnan(size):
        return "n/a"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(size) < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"


def text_cells(
    row: TableRow, *, plus_minus: str, arrow: str, escape: Callable[[str], str] = str
) -> list[tuple[str | None, str]]:
    """The cells after Method and Hyperparameters (scores and IQMs, capacity, state, rank, p,
    seeds), each with the metric key whose best mean it shows (None for the rest); ``escape``
    applies to the only free text among them, the capacity's label."""
    capacity = _format_ci(row.capacity, plus_minus)
    if row.capacity_label and row.capacity.defined:
        capacity = f"{capacity} ({escape(row.capacity_label)})"
    state = _human_bytes(row.state_last)
    if row.state_grows:
        state = f"{_human_bytes(row.state_first)} {arrow} {state}"
    cells: list[tuple[str | None, str]] = []
    for metric in metrics.METRICS:
        if metric.key in STAT_KEYS:
            aggregate = row.bootstrap[metric.key]
            cells += [(metric.key, format_interval(aggregate.mean))]
            cells += [(None, format_interval(aggregate.iqm))]
        else:
            cells.append((metric.key, _format_ci(row.scores[metric.key], plus_minus)))
    rank = "n/a" if math.isnan(row.rank) else f"{row.rank:.2f}"
    others = [capacity, state, rank, _format_p(row.welch_p), str(row.seeds)]
    return cells + [(None, text) for text in others]


def markdown_table(trials: Sequence[TrialResult], *, reps: int = statistics.DEFAULT_REPS) -> str:
    """The results table alone (ok trials, best mean ACC first), for a CLI to print."""
    return render_markdown(table_rows(trials, reps=reps))


def render_markdown(rows: Sequence[TableRow]) -> str:
    """Rows as a markdown table; a ``Run`` column where any row names its experiment."""
    if not rows:
        return "_No trials with status ok._"
    runs = any(row.run for row in rows)
    names = header(runs=runs)
    lines = ["| " + " | ".join(names) + " |", "|" + "---|" * len(names)]
    for row in rows:
        method = f"{row.method} (reference)" if row.reference else row.method
        cells = [*([row.run] if runs else []), method, row.label]
        cells += [text for _, text in text_cells(row, plus_minus="±", arrow="→")]
        lines.append("| " + " | ".join(cell(text) for text in cells) + " |")
    return "\n".join(lines)


BOOTSTRAP_PARTS = ("mean_low", "mean_high", "iqm", "iqm_low", "iqm_high")
"""table.csv's bootstrap columns per :data:`STAT_KEYS` key, after its mean, ci95 and n."""


def _bootstrap_record(key: str, aggregate: statistics.Aggregate) -> dict[str, float]:
    mean, iqm = aggregate.mean, aggregate.iqm
    values = (mean.low, mean.high, iqm.point, iqm.low, iqm.high)
    return {f"{key}_{part}": value for part, value in zip(BOOTSTRAP_PARTS, values, strict=True)}


def table_frame(rows: Sequence[TableRow]) -> pd.DataFrame:
    """table.csv: one row per table row; per score ``<key>_mean``, ``<key>_ci95`` (the Student-t
    half-width, NaN for one seed) and ``<key>_n``, for :data:`STAT_KEYS` also the bootstrap
    bounds of the mean and the IQM with its bounds (:data:`BOOTSTRAP_PARTS`); then ``acc_rank``
    and ``acc_welch_p_vs_blip``; at full precision."""
    runs = any(row.run for row in rows)
    keys = [*(metric.key for metric in metrics.METRICS), "capacity"]
    columns = [*(["run"] if runs else []), "method", "role", "hyperparameters"]
    for key in keys:
        columns += [f"{key}_{part}" for part in ("mean", "ci95", "n")]
        columns += [f"{key}_{part}" for part in BOOTSTRAP_PARTS] if key in STAT_KEYS else []
    columns += ["capacity_label", "state_bytes_first", "state_bytes_last", "seeds"]
    columns += ["acc_rank", "acc_welch_p_vs_blip"]
    records = []
    for row in rows:
        record: dict[str, Any] = dict(run=row.run, method=row.method, hyperparameters=row.label)
        record["role"] = "reference" if row.reference else "continual"
        for key in keys:
            stat = row.capacity if key == "capacity" else row.scores[key]
            record.update({f"{key}_mean": stat.mean, f"{key}_ci95": stat.half_width})
            record[f"{key}_n"] = stat.n
        for key, aggregate in row.bootstrap.items():
            record.update(_bootstrap_record(key, aggregate))
        record.update(capacity_label=row.capacity_label, state_bytes_first=row.state_first)
        record.update(state_bytes_last=row.state_last, seeds=row.seeds)
        record.update(acc_rank=row.rank, acc_welch_p_vs_blip=row.welch_p)
        records.append(record)
    return pd.DataFrame(records, columns=columns)
