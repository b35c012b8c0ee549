"""The results table: its numbers computed once (:func:`table_rows`), rendered three ways, as
markdown (report.md and the terminal), CSV (``table.csv``) and LaTeX (``table.tex``), so the three
always agree.

Choices, and why:

- A table row is one (method, exact hyperparameter setting); its seeds are summarised by
  :func:`metrics.ci95`. One seed shows the mean with "(n=1)", never "± nan". A metric undefined
  for every seed (FWT without a baseline, capacity of a method without bits) shows "n/a". State
  bytes show the mean only, human-readable: a size, not a noisy score; after the first and the
  last task (``1.2 KiB → 12.0 KiB``) where they differ, so a memory that grows with the tasks
  stands out against a constant one.
- A reference (a method whose role is ``reference``, e.g. joint training) is labelled so and listed
  after the continual methods: it bounds them, it does not compete with them. For the same reason
  the LaTeX table's bold "best per column" is chosen among the continual rows only.
- ``table.csv`` keeps full precision, one column each for mean, CI half-width and count, so a
  paper's table can be typeset from it without parsing "±"; the markdown and LaTeX tables round to
  three decimals, and the bold best is decided on the rounded values (what the reader compares).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from blip_ray import metrics
from blip_ray.records.trials import TrialResult
from blip_ray.report.tables import capacity_label, cell, last_value, ok_groups, trial_metrics


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

    @property
    def state_grows(self) -> bool:
        return math.isfinite(self.state_first) and not math.isclose(
            self.state_first, self.state_last
        )


def table_rows(trials: Sequence[TrialResult]) -> list[TableRow]:
    """The table's rows (ok trials): continual methods by best mean ACC first, then the
    references."""
    keyed = []
    for group in ok_groups(trials):
        scores = [trial_metrics(trial) for trial in group.trials]
        reference = any(trial.role == "reference" for trial in group.trials)
        firsts = [trial.state_bytes[0] for trial in group.trials if trial.state_bytes]
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
        )
        mean_acc = float(np.mean([s["acc"] for s in scores]))
        order = (reference, math.isnan(mean_acc), -np.nan_to_num(mean_acc), group.method)
        keyed.append((order, row))
    return [row for _, row in sorted(keyed, key=lambda item: item[0])]


def header(*, runs: bool = False) -> list[str]:
    """The table's column names (``Run`` first where rows come from several experiments)."""
    labels = [metric.label for metric in metrics.METRICS]
    columns = ["Method", "Hyperparameters", *labels, "Capacity", "State", "Seeds"]
    return ["Run", *columns] if runs else columns


def _format_ci(stat: Stat, plus_minus: str = "±") -> str:
    if not stat.defined:
        return "n/a"
    if stat.n == 1:
        return f"{stat.mean:.3f} (n=1)"
    return f"{stat.mean:.3f} {plus_minus} {stat.half_width:.3f}"  # "nan" if a seed is undefined


def _human_bytes(size: float) -> str:
    if math.isnan(size):
        return "n/a"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(size) < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"


def _text_cells(
    row: TableRow, *, plus_minus: str, arrow: str, escape: Callable[[str], str] = str
) -> list[str]:
    """The cells after Method and Hyperparameters: scores, capacity, state, seeds; ``escape``
    applies to the only free text among them, the capacity's label."""
    capacity = _format_ci(row.capacity, plus_minus)
    if row.capacity_label and row.capacity.defined:
        capacity = f"{capacity} ({escape(row.capacity_label)})"
    state = _human_bytes(row.state_last)
    if row.state_grows:
        state = f"{_human_bytes(row.state_first)} {arrow} {state}"
    scores = [_format_ci(row.scores[metric.key], plus_minus) for metric in metrics.METRICS]
    return [*scores, capacity, state, str(row.seeds)]


def markdown_table(trials: Sequence[TrialResult]) -> str:
    """The results table alone (ok trials, best mean ACC first), for a CLI to print."""
    return render_markdown(table_rows(trials))


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
        cells += _text_cells(row, plus_minus="±", arrow="→")
        lines.append("| " + " | ".join(cell(text) for text in cells) + " |")
    return "\n".join(lines)


def table_frame(rows: Sequence[TableRow]) -> pd.DataFrame:
    """table.csv: one row per table row; per score ``<key>_mean``, ``<key>_ci95`` (NaN for one
    seed) and ``<key>_n``, at full precision."""
    runs = any(row.run for row in rows)
    keys = [*(metric.key for metric in metrics.METRICS), "capacity"]
    columns = [*(["run"] if runs else []), "method", "role", "hyperparameters"]
    columns += [f"{key}_{part}" for key in keys for part in ("mean", "ci95", "n")]
    columns += ["capacity_label", "state_bytes_first", "state_bytes_last", "seeds"]
    records = []
    for row in rows:
        record: dict[str, Any] = dict(run=row.run, method=row.method, hyperparameters=row.label)
        record["role"] = "reference" if row.reference else "continual"
        for key in keys:
            stat = row.capacity if key == "capacity" else row.scores[key]
            record.update({f"{key}_mean": stat.mean, f"{key}_ci95": stat.half_width})
            record[f"{key}_n"] = stat.n
        record.update(capacity_label=row.capacity_label, state_bytes_first=row.state_first)
        record.update(state_bytes_last=row.state_last, seeds=row.seeds)
        records.append(record)
    return pd.DataFrame(records, columns=columns)


_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}


def latex_escape(text: str) -> str:
    """Text as LaTeX typesets it literally (method names and settings hold ``_``, ``%``, ...)."""
    return "".join(_LATEX_SPECIAL.get(char, char) for char in str(text))


def best_rows(rows: Sequence[TableRow], metric: metrics.Metric) -> set[int]:
    """Indices of the rows holding the best rounded mean of ``metric`` (its direction), among
    continual rows with a defined value; none where fewer than two compete."""
    rounded = {
        index: float(f"{row.scores[metric.key].mean:.3f}")
        for index, row in enumerate(rows)
        if not row.reference and math.isfinite(row.scores[metric.key].mean)
    }
    if len(rounded) < 2:
        return set()
    best = (max if metric.higher_is_better else min)(rounded.values())
    return {index for index, value in rounded.items() if value == best}


def latex_table(rows: Sequence[TableRow], *, title: str) -> str:
    """table.tex: a booktabs ``tabular`` to ``\\input`` into a paper's table; the best continual
    value of each score in bold; references below a rule of their own."""
    if not rows:
        return f"% {latex_escape(title)}: no trials with status ok.\n"
    names = header()
    best = {metric.key: best_rows(rows, metric) for metric in metrics.METRICS}
    lines = [
        f"% {latex_escape(title)}: mean $\\pm$ 95% CI half-width over seeds; bold: the best "
        "continual method per score. Needs \\usepackage{booktabs}.",
        "\\begin{tabular}{ll" + "r" * (len(names) - 2) + "}",
        "\\toprule",
        " & ".join(latex_escape(name) for name in names) + " \\\\",
        "\\midrule",
    ]
    keys = [metric.key for metric in metrics.METRICS]
    for index, row in enumerate(rows):
        if row.reference and index > 0 and not rows[index - 1].reference:
            lines.append("\\midrule")  # the references bound the methods above; set apart
        method = f"{row.method} (reference)" if row.reference else row.method
        cells = [latex_escape(method), latex_escape(row.label)]
        values = _text_cells(row, plus_minus="$\\pm$", arrow="$\\rightarrow$", escape=latex_escape)
        for position, text in enumerate(values):
            bold = position < len(keys) and index in best[keys[position]]
            cells.append(f"\\textbf{{{text}}}" if bold else text)
        lines.append(" & ".join(cells) + " \\\\")
    lines += ["\\bottomrule", "\\end{tabular}"]
    return "\n".join(lines) + "\n"
