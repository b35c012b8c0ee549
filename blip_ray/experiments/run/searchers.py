"""``search: {algorithm: optuna}``: Tune's OptunaSearch (TPE) for each method, behind one searcher.

The search stage is one Tune run of every method. :class:`MethodSearch` keeps one OptunaSearch
per method (its own space, seeded by ``search.seed`` and the method's name), each behind a
ConcurrencyLimiter, and asks them in turn until every method has proposed its budget. A proposed
configuration runs on every search seed (one trial each); when all of them have ended, the
method's searcher is told the configuration's score: the search metric on the trials' validation
matrices (never test), averaged over the seeds, or a failure if any seed failed. A method with
nothing searched runs its one configuration. The whole state is saved with Tune's experiment
state, so ``--resume`` continues the same search.
"""

from __future__ import annotations

import pickle
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from ray import tune
from ray.tune.search import ConcurrencyLimiter, Searcher
from ray.tune.search.optuna import OptunaSearch

from blip_ray import metrics
from blip_ray.experiments.plan.stages import search_budget, split_configuration
from blip_ray.experiments.specs.checks import SearchLeaf
from blip_ray.experiments.specs.experiment import ExperimentSpec
from blip_ray.experiments.specs.search import method_space

SCORE = "score"
"""The key under which a method's OptunaSearch is told a configuration's score."""
CONFIGURATIONS_AT_ONCE = 2
"""Configurations of one method in flight at once: TPE proposes from what has been scored, so
fewer in flight means better-informed proposals, more means busier CPUs (several methods run
side by side)."""


@dataclass
class _Configuration:
    method: str
    values: dict[str, Any]
    seeds_left: list[int]
    """Seeds not yet handed out as trials."""
    running: int = 0
    scores: dict[int, float] = field(default_factory=dict)
    failed: bool = False


class MethodSearch(Searcher):
    """Every method's OptunaSearch as one Tune searcher; each configuration on every seed."""

    def __init__(
        self,
        run: dict[str, Any],
        methods: dict[str, tuple[dict[str, Any], dict[str, SearchLeaf], int]],
        *,
        seeds: Sequence[int],
        metric: str,
        mode: str,
        seed: int,
    ) -> None:
        """``run``: the trials' shared settings; ``methods``: name -> (fixed hyperparameters,
        searched space, budget); ``metric``: the selection metric on validation matrices."""
        # no metric for Tune itself: trials report rows, and the score is made here from them
        super().__init__(metric=None, mode=None)
        self._run = run
        self._fixed = {name: fixed for name, (fixed, _, _) in methods.items()}
        self._left = {name: budget for name, (_, _, budget) in methods.items()}
        self._searchers = {
            name: _optuna(space, mode=mode, seed=seed, method=name) if space else None
            for name, (_, space, _) in methods.items()
        }
        self._seeds = list(seeds)
        self._selection_metric = metric
        self._order = list(methods)
        self._turn = 0
        self._configurations: dict[str, _Configuration] = {}
        self._handing: list[str] = []
        """Configurations with seeds still to hand out, oldest first."""
        self._trials: dict[str, tuple[str, int]] = {}

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict, **spec):
        return True  # the spaces are the methods' own (given to __init__)

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        if not self._handing and not self._propose():
            done = not any(self._left.values())
            return Searcher.FINISHED if done else None  # None: wait for a score
        key = self._handing[0]
        configuration = self._configurations[key]
        seed = configuration.seeds_left.pop(0)
        if not configuration.seeds_left:
            self._handing.pop(0)
        configuration.running += 1
        self._trials[trial_id] = (key, seed)
        hp, train = split_configuration(self._fixed[configuration.method] | configuration.values)
        method = {"name": configuration.method, "hp": hp, "train": train, "seed": seed}
        return {"run": self._run, "method": method}

    def on_trial_complete(
        self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False
    ) -> None:
        if trial_id not in self._trials:
            return
        key, seed = self._trials.pop(trial_id)
        configuration = self._configurations[key]
        configuration.running -= 1
        score = None
        if not error and result:
            references = (self._run.get("rl") or {}).get("reference_returns") or {}
            score = _validation_score(result, self._selection_metric, references)
        if score is None:
            configuration.failed = True
        else:
            configuration.scores[seed] = score
        if configuration.running or configuration.seeds_left:
            return
        searcher = self._searchers[configuration.method]
        if searcher is None:
            return
        if configuration.failed:
            searcher.on_trial_complete(key, None, error=True)
        else:
            searcher.on_trial_complete(
                key, {SCORE: float(np.mean(list(configuration.scores.values())))}
            )

    def _propose(self) -> bool:
        """A new configuration from the next method whose searcher has one now."""
        for _ in range(len(self._order)):
            method = self._order[self._turn]
            self._turn = (self._turn + 1) % len(self._order)
            if self._left[method] <= 0:
                continue
            key = f"{method}-{sum(c.method == method for c in self._configurations.values())}"
            searcher = self._searchers[method]
            values = {} if searcher is None else searcher.suggest(key)
            if values is None:  # its limiter waits for a score
                continue
            if values == Searcher.FINISHED:
                self._left[method] = 0
                continue
            self._left[method] -= 1
            values = {k: _readable(v) for k, v in values.items()}
            self._configurations[key] = _Configuration(method, values, list(self._seeds))
            self._handing.append(key)
            return True
        return False

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as f:
            pickle.dump(self.__dict__, f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            self.__dict__.update(pickle.load(f))


def method_search(spec: ExperimentSpec, run: dict[str, Any]) -> MethodSearch:
    """The search stage's searcher for a spec with ``search: {algorithm: optuna}``."""
    search = spec.search
    assert search is not None and search.algorithm == "optuna"
    methods = {}
    for name, hp in spec.methods.items():
        fixed = {k: v for k, v in hp.items() if not isinstance(v, SearchLeaf)}
        methods[name] = (fixed, method_space(hp, spec.train_search), search_budget(spec, name))
    return MethodSearch(
        run,
        methods,
        seeds=spec.seeds,
        metric=search.metric,
        mode=search.mode,
        seed=search.seed,
    )


def total_trials(spec: ExperimentSpec) -> int:
    """Trials of an Optuna search stage: every method's budget times the seeds."""
    return sum(search_budget(spec, name) for name in spec.methods) * len(spec.seeds)


def _optuna(space: dict[str, SearchLeaf], *, mode: str, seed: int, method: str) -> Searcher:
    import optuna

    domains = {key: _domain(leaf) for key, leaf in space.items()}
    sampler = optuna.samplers.TPESampler(
        seed=(seed * 1_000_003 + zlib.crc32(method.encode())) % 2**31
    )
    searcher = OptunaSearch(space=domains, metric=SCORE, mode=mode, sampler=sampler)
    return ConcurrencyLimiter(searcher, max_concurrent=CONFIGURATIONS_AT_ONCE)


def _domain(leaf: SearchLeaf) -> Any:
    """A leaf as Tune's domain; Optuna draws a grid's values as a choice."""
    if leaf.kind in ("grid", "choice"):
        return tune.choice(list(leaf.values))
    if leaf.kind == "uniform":
        return tune.uniform(*leaf.values)
    return tune.loguniform(*leaf.values)


def _readable(value: Any) -> Any:
    """A drawn real to four significant digits (what runs, and a value a reader can copy), as
    the random search draws them."""
    return float(f"{value:.4g}") if isinstance(value, float) else value


def _validation_score(
    result: dict[str, Any], metric: str, references: dict[str, float]
) -> float | None:
    """The metric on a finished trial's validation matrix; None where it did not finish all its
    tasks or holds no validation rows. RL returns are normalized per game first, from the trial's
    own random-policy returns to the spec's reference returns (the report normalizes with the
    random policy's mean over all trials, so its figures differ slightly)."""
    matrix = result.get("valid_matrix")
    if not matrix or result.get("failed") or result.get("tasks_done") != result.get("num_tasks"):
        return None
    if result.get("metric") == "return":
        high = [references[name] for name in result["task_names"]]
        matrix = metrics.normalize_returns(matrix, result["random_row"], high).tolist()
    value = metrics.summary(matrix)[metric]
    return None if np.isnan(value) else float(value)
