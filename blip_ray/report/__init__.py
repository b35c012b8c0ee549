"""Many trials -> tidy CSVs, one mean ± 95% CI results table (markdown, CSV, LaTeX) and plots;
no Ray, no torch.

The only input is :class:`~blip_ray.records.trials.TrialResult`, so a report can be rebuilt without
a cluster. Every number comes from :mod:`blip_ray.metrics`; this package only groups and formats
(:mod:`.tables`, :mod:`.results_table`, :mod:`.markdown`) and draws (:mod:`.plots`).
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
