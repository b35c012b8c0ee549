"""table.tex: the results table (:mod:`.results_table`'s rows and cells) as a booktabs
``tabular``, LaTeX-escaped, the best continual value of each score in bold."""

from __future__ import annotations

import math
from collections.abc import Sequence

from blip_ray import metrics
from blip_ray.report.results_table import TableRow, header, text_cells

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
        f"% {latex_escape(title)}: ACC, BWT and forgetting: mean and IQM over seeds [95% "
        "stratified-bootstrap interval]; other scores: mean $\\pm$ 95% Student-t half-width; "
        "bold: the best continual method per score. Needs \\usepackage{booktabs}.",
        "\\begin{tabular}{ll" + "r" * (len(names) - 2) + "}",
        "\\toprule",
        " & ".join(latex_escape(name) for name in names) + " \\\\",
        "\\midrule",
    ]
    for index, row in enumerate(rows):
        if row.reference and index > 0 and not rows[index - 1].reference:
            lines.append("\\midrule")  # the references bound the methods above; set apart
        method = f"{row.method} (reference)" if row.reference else row.method
        cells = [latex_escape(method), latex_escape(row.label)]
        values = text_cells(row, plus_minus="$\\pm$", arrow="$\\rightarrow$", escape=latex_escape)
        for key, text in values:
            bold = key is not None and index in best[key]
            cells.append(f"\\textbf{{{text}}}" if bold else text)
        lines.append(" & ".join(cells) + " \\\\")
    lines += ["\\bottomrule", "\\end{tabular}"]
    return "\n".join(lines) + "\n"
