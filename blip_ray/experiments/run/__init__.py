"""Running on Ray: ``launch`` (Tune's tuner over the spec's param space, resume, the report at
the end), the trainables of both tracks (``trainable``), the row loggers and experiment trackers
(``loggers``, ``trackers``), progress lines (``progress``), the experiment directory to use
(``storage``) and each run segment's provenance (``provenance``). The top of ``experiments``: it
imports ``specs``, ``plan``, ``cluster``, ``blip_ray.records`` and ``blip_ray.report``; only the
CLI and the Python API import it. A new search algorithm's Tune wiring goes into ``launch``."""
