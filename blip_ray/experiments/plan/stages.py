"""The two stages of a spec with ``search:`` as plain specs, without Ray.

:func:`search_stage` is the spec's search: each method's configurations (:func:`configurations`,
the same budget for every method) on the search seeds, over the tasks the protocol searches on.
:func:`final_stage` is each method's chosen configuration on the spec's own seeds over the whole
sequence. Each stage is an ordinary experiment (its own Tune run, rows, report and ``--resume``);
:mod:`blip_ray.experiments.run.protocol` runs one after the other.

Draws are seeded by ``search.seed`` and the method's name, so the same spec searches the same
configurations on every machine, and adding a method does not change another's draws.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import zlib
from typing import TYPE_CHECKING, Any

import numpy as np

from blip_ray.experiments.specs.checks import SearchLeaf
from blip_ray.experiments.specs.search import SearchSettings, finite_size, method_space

if TYPE_CHECKING:
    from blip_ray.experiments.specs.experiment import ExperimentSpec

TRAIN_PREFIX = "train."
"""A configuration's key for a searched training setting: ``train.lr``."""


def configurations(spec: ExperimentSpec) -> dict[str, tuple[dict[str, Any], ...]]:
    """Every method's search configurations: its fixed hyperparameters with one draw of its
    searched ones (and of the searched training settings, as ``train.<key>``). Optuna proposes
    its configurations while the search runs; for it this is {} (see :func:`search_budget`)."""
    search = _settings(spec)
    if search.algorithm == "optuna":
        return {}
    out = {}
    for name, hp in spec.methods.items():
        fixed = {k: v for k, v in hp.items() if not isinstance(v, SearchLeaf)}
        space = method_space(hp, spec.train_search)
        rng = np.random.default_rng([search.seed, zlib.crc32(name.encode())])
        out[name] = tuple(fixed | drawn for drawn in _draw(space, search, rng))
    return out


def search_budget(spec: ExperimentSpec, method: str) -> int:
    """Configurations the search gives ``method``: the budget, or its whole finite space when that
    is smaller (one configuration for a method with nothing searched)."""
    search = _settings(spec)
    size = finite_size(method_space(spec.methods[method], spec.train_search))
    return search.budget if size is None else min(size, search.budget)


def search_stage(spec: ExperimentSpec) -> ExperimentSpec:
    """The search as a spec: ``<name>-search``, the search seeds, the protocol's tasks."""
    search = _settings(spec)
    return dataclasses.replace(
        spec,
        name=f"{spec.name}-search",
        seeds=search.seeds,
        tasks=search.search_tasks(spec.tasks),
        configurations=configurations(spec),
        stage="search",
        samples=1,
    )


def final_stage(spec: ExperimentSpec, chosen: dict[str, dict[str, Any]]) -> ExperimentSpec:
    """The final runs as a spec: ``<name>-final``, each method's ``chosen`` configuration (all
    its hyperparameters and ``train.<key>`` settings) on the spec's seeds and every task."""
    _settings(spec)
    missing = [name for name in spec.methods if name not in chosen]
    if missing:
        raise ValueError(f"final stage: no chosen configuration for {', '.join(missing)}")
    return dataclasses.replace(
        spec,
        name=f"{spec.name}-final",
        configurations={name: (dict(chosen[name]),) for name in spec.methods},
        stage="final",
        samples=1,
    )


def split_configuration(configuration: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A configuration as (method hyperparameters, training settings without the prefix)."""
    hp = {k: v for k, v in configuration.items() if not k.startswith(TRAIN_PREFIX)}
    train = {
        k[len(TRAIN_PREFIX) :]: v for k, v in configuration.items() if k.startswith(TRAIN_PREFIX)
    }
    return hp, train


def _settings(spec: ExperimentSpec) -> SearchSettings:
    if spec.search is None:
        raise ValueError(f"{spec.name}: the spec has no search: section")
    return spec.search


def _draw(
    space: dict[str, SearchLeaf], search: SearchSettings, rng: np.random.Generator
) -> list[dict[str, Any]]:
    """``search.budget`` configurations of ``space``: every combination of a finite space that
    fits the budget (always, for a grid search), else distinct combinations drawn without
    replacement, else (a range in the space) independent draws of every value."""
    if not space:
        return [{}]
    keys = list(space)
    size = finite_size(space)
    if size is not None:
        combinations = list(itertools.product(*(space[k].values for k in keys)))
        if size > search.budget:
            picked = np.sort(rng.choice(size, size=search.budget, replace=False))
            combinations = [combinations[int(i)] for i in picked]
        return [dict(zip(keys, combination, strict=True)) for combination in combinations]
    return [{k: _sample(space[k], rng) for k in keys} for _ in range(search.budget)]


def _sample(leaf: SearchLeaf, rng: np.random.Generator) -> Any:
    if leaf.kind in ("grid", "choice"):
        return leaf.values[int(rng.integers(len(leaf.values)))]
    low, high = leaf.values
    if leaf.kind == "uniform":
        drawn = rng.uniform(low, high)
    else:
        drawn = math.exp(rng.uniform(math.log(low), math.log(high)))
    return float(f"{drawn:.4g}")  # four significant digits: a value a reader can copy
