"""Which Ray the trials run on: the embedded local instance (``embedded``: started in a session
of its own, stopped after the experiment is saved) or an attached cluster (``connect``: address,
reachability, resources). Imports Ray, ``experiments.specs`` and ``blip_ray.errors``; ``run`` uses
it, nothing below imports it."""
