"""Experiments: a YAML spec in, Tune trials on Ray, an experiment directory out.

Four rooms, importing only downwards (``specs`` <- ``plan`` <- ``run``, with ``cluster`` beside
``plan`` under ``run``):

- ``specs``: the spec language (YAML reader, checks, the experiment's typed spec, ``blip-ray
  list``); no Ray.
- ``plan``: what a spec will run, without Ray (trials and grids, the time estimate,
  ``--dry-run``).
- ``cluster``: which Ray the trials run on (the embedded instance, or an attached cluster).
- ``run``: running on Ray (Tune's tuner, the trainables, loggers, trackers, progress, the
  experiment directory to use and its provenance).

The experiment directory's files (rows, records, layout) are ``blip_ray.records``, below this
package and the report, which both read them.
"""
