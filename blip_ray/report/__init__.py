"""Many trials -> tidy CSVs, one results table with 95% intervals (markdown, CSV, LaTeX), the
statistics that separate methods, and plots; no Ray, no torch.

The only input is :class:`~blip_ray.records.trials.TrialResult`, so a report can be rebuilt without
a cluster. Every score comes from :mod:`blip_ray.metrics` and every interval, IQM, rank and test
from :mod:`.statistics` (rliable); this package otherwise only groups and formats (:mod:`.tables`,
:mod:`.results_table`, :mod:`.latex`, :mod:`.improvement`, :mod:`.markdown`) and draws
(:mod:`.plots`).
"""

from blip_ray.report.markdown import ReportPaths, write_report
from blip_ray.report.results_table import markdown_table, render_markdown, table_rows
from blip_ray.report.tables import matrices_frame, summary_frame

__all__ = [
    "ReportPaths",
    "markdown_table",
    "matrices_frame",
    "render_markdown",
    "summary_frame",
    "table_rows",
    "write_report",
]
