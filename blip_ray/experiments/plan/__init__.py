"""Planning without Ray: the trials and grids a spec makes (``grid``), the wall-time estimate
(``estimate``) and ``blip-ray run --dry-run`` (``dry_run``). Imports ``experiments.specs`` and the
lower layers, never Ray and nothing of ``run`` or ``cluster``. A new search stage's trial counts
go into ``grid``."""
