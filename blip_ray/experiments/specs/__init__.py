"""The spec language: the YAML reader and one-value checks (``checks``), the track sections
(``tracks``), :class:`~blip_ray.experiments.specs.experiment.ExperimentSpec` (``experiment``) and
``blip-ray list`` (``listing``). Imports the method, model, data and RL registries and settings,
never Ray, and nothing else of ``experiments``: planning and running build on it. A new spec key
goes into ``experiment`` (or a track section into ``tracks``) with its check."""
