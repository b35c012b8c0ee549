"""Many trials -> tidy CSVs, one mean ± 95% CI markdown table and plots; no Ray, no torch.

The only input is :class:`~blip_ray.records.TrialResult`, so a report can be rebuilt without a
cluster. Every number comes from :mod:`blip_ray.metrics`; this package only groups and formats
(:mod:`.tables`, :mod:`.markdown`) and draws (:mod:`.plots`).
"""

from blip_ray.report.markdown import ReportPaths, write_report
from blip_ray.report.tables import markdown_table, matrices_frame, summary_frame

__all__ = ["ReportPaths", "markdown_table", "matrices_frame", "summary_frame", "write_report"]
