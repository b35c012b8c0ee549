"""The probability of improvement between the results table's continual rows: computed once
(:func:`improvements`), written as ``improvement.csv`` and as report.md's matrices, with the
sentence saying how every interval of the report was drawn.

P(X > Y) is the chance that a run of X scores above a run of Y (per game for RL, then averaged
over games; Agarwal et al. 2021). It is read on ACC and on BWT (official), both higher-is-better,
so no score is turned round; forgetting is left out (BWT already measures what was lost). A
reference (joint training) bounds the methods and is not compared with them.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from blip_ray import metrics
from blip_ray.report import statistics
from blip_ray.report.results_table import TableRow, format_interval, scores_array
from blip_ray.report.tables import cell

KEYS = ("acc", "bwt")
"""The scores P(X > Y) is read on."""
COLUMNS = ("metric", "x", "y", "probability", "low", "high")

Improvements = dict[str, dict[tuple[str, str], statistics.Interval]]
"""Per score of :data:`KEYS`: (row X's name, row Y's name) -> P(X > Y) with its interval."""


def improvements(rows: Sequence[TableRow], *, reps: int = statistics.DEFAULT_REPS) -> Improvements:
    """P(X > Y) for every ordered pair of continual methods, per score of :data:`KEYS`: each
    method by its first row (the table lists a method's best setting first), so a sweep of many
    settings compares methods, not every setting with every other."""
    competing = compared_rows(rows)
    return {
        key: statistics.improvement_matrix(
            {row.name: scores_array(row.terms[key]) for row in competing}, reps=reps
        )
        for key in KEYS
    }


def compared_rows(rows: Sequence[TableRow]) -> list[TableRow]:
    """Each continual method's first row (its best setting: the table lists best ACC first)."""
    competing, seen = [], set()
    for row in rows:
        if not row.reference and row.method not in seen:
            seen.add(row.method)
            competing.append(row)
    return competing


def improvement_frame(found: Improvements) -> pd.DataFrame:
    """improvement.csv: one line per (score, X, Y), at full precision."""
    records = [
        (key, x, y, p.point, p.low, p.high)
        for key, pairs in found.items()
        for (x, y), p in pairs.items()
    ]
    return pd.DataFrame(records, columns=list(COLUMNS))


def _labels() -> dict[str, str]:
    return {metric.key: metric.label for metric in metrics.METRICS}


def method_sentence(rows: Sequence[TableRow], *, reps: int) -> str:
    """How many seeds each row has and how the report's intervals were drawn."""
    seeds = sorted({row.seeds for row in rows})
    counted = f"{seeds[0]}" if len(seeds) == 1 else f"from {seeds[0]} to {seeds[-1]}"
    games = max((terms.size for row in rows for terms in row.terms["acc"].values()), default=1)
    strata = (
        f" (each of the {games} games a stratum: normalized scores per game)" if games > 1 else ""
    )
    cells = "seed x game" if games > 1 else "seed"
    return (
        f"Seeds per row: {counted}. Intervals of ACC, BWT and forgetting and of P(X > Y): "
        f"stratified bootstrap over seeds{strata}, {reps} reps, 95% percentile intervals "
        f"(rliable); the IQM is the mean of the middle 50% of the {cells} scores. Rank: the "
        f"average rank on ACC per {cells} shared by every continual row (1 = best). p vs BLIP: "
        "Welch's t-test (unequal variances) on per-seed ACC against the first BLIP row."
    )


def markdown_lines(rows: Sequence[TableRow], found: Improvements, *, reps: int) -> list[str]:
    """report.md's Statistics section: the sentence, then a P(row > column) matrix per score."""
    if not rows:
        return ["", "## Statistics", "", "No trials with status ok: nothing to compare."]
    lines = ["", "## Statistics", "", method_sentence(rows, reps=reps)]
    names = [row.name for row in compared_rows(rows)]
    if len(names) < 2:
        return [*lines, "", "Fewer than two continual methods: no probability of improvement."]
    if len(names) < sum(not row.reference for row in rows):
        lines += ["", "Several settings of a method: P(X > Y) compares each method's best."]
    for key in KEYS:
        lines += [
            *("", f"Probability of improvement on {_labels()[key]}: P(row > column) [95% CI].", ""),
            "| X \\ Y | " + " | ".join(cell(name) for name in names) + " |",
            "|---|" + "---|" * len(names),
        ]
        for x in names:
            values = ["—" if x == y else format_interval(found[key][x, y]) for y in names]
            lines.append(f"| {cell(x)} | " + " | ".join(values) + " |")
    return lines
