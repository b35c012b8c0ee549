"""The Tune search space of a spec: grids expand, sampled values are shared by all seeds."""

from __future__ import annotations

from collections import defaultdict

from ray.tune.search.variant_generator import generate_variants

from blip_ray.experiments.run.launch import param_space, planned_trials
from blip_ray.experiments.specs.experiment import parse_spec

SPEC = {
    "name": "s",
    "benchmark": "pdigits",
    "seeds": [0, 1, 2],
    "samples": 3,
    "methods": {
        "blip": {"f_prior": {"loguniform": [1e-17, 1e-11]}},
        "ewc": {"lamb": {"grid": [10, 100]}},
    },
}


def variants() -> list[dict]:
    space = param_space(parse_spec(SPEC))
    out = []
    for _ in range(SPEC["samples"]):  # what Tune's num_samples does
        out += [v["method"] for _, v in generate_variants(space, constant_grid_search=True)]
    return out


def test_sampled_hyperparameters_are_shared_by_every_seed():
    seeds_per_value = defaultdict(set)
    for method in variants():
        if method["name"] == "blip":
            seeds_per_value[method["hp"]["f_prior"]].add(method["seed"])
    assert len(seeds_per_value) == 3
    assert all(seeds == {0, 1, 2} for seeds in seeds_per_value.values())
    assert all(1e-17 <= value <= 1e-11 for value in seeds_per_value)


def test_grid_leaves_cross_with_seeds():
    ewc = {(m["hp"]["lamb"], m["seed"]) for m in variants() if m["name"] == "ewc"}
    assert ewc == {(lamb, seed) for lamb in (10.0, 100.0) for seed in (0, 1, 2)}


def test_planned_trials_counts_what_tune_expands():
    assert planned_trials(parse_spec(SPEC)) == len(variants()) == 3 * (3 + 2 * 3)
