"""The spec's ``search:`` section: hyperparameters chosen on validation scores, then reported on
test with fresh seeds.

A spec with ``search:`` runs in two stages (:mod:`blip_ray.experiments.run.protocol`):

1. **search**: every method gets the same budget of configurations, drawn from its searched
   hyperparameters (``{grid: ...}``, ``{choice: ...}``, ``{uniform: ...}``, ``{loguniform: ...}``
   in ``methods:`` and ``train:``); each configuration runs on every search seed, over the whole
   sequence (``protocol: full``) or over its first ``first_tasks`` tasks (``first_tasks``, the
   protocol of A-GEM, Chaudhry et al. 2019: tune on the first tasks, report on all of them). A
   configuration's score is ``metric`` on the **validation** matrix (RL: the evaluation episodes
   reserved for selection), averaged over the search seeds; test scores are never read.
2. **final**: each method's best configuration runs on the spec's ``seeds`` (disjoint from the
   search seeds) over the whole sequence; the report's comparison is these runs, on test.

Equal budget: a method whose space holds fewer configurations than ``budget`` (a short grid, or no
searched value at all) runs each of them once; the report shows every method's count.
"""

from __future__ import annotations

import importlib.util
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from blip_ray.experiments.specs import checks
from blip_ray.experiments.specs.checks import SearchLeaf, SpecError
from blip_ray.metrics import METRICS

ALGORITHMS = ("grid", "random", "optuna")
PROTOCOLS = ("full", "first_tasks")
#: Metrics a search can maximise (or, for forgetting, minimise) on the validation matrix.
SEARCH_METRICS = tuple(metric.key for metric in METRICS if not metric.needs_baseline)


@dataclass(frozen=True)
class SearchSettings:
    """How the search stage chooses each method's configuration."""

    seeds: tuple[int, ...]
    """Seeds of the search trials; none of them is a final seed (``seeds:``)."""
    algorithm: Literal["grid", "random", "optuna"] = "random"
    """``grid``: every combination of grid/choice values (at most ``budget``); ``random``:
    ``budget`` draws (a finite space no larger than the budget runs whole); ``optuna``: Tune's
    OptunaSearch (TPE) proposing ``budget`` configurations one after another, each scored on
    all search seeds (``pip install 'blip-ray[search]'``)."""
    budget: int = 8
    """Configurations per method (the same for every method)."""
    metric: str = "acc"
    """Selection metric on the validation matrix: acc, bwt (higher is better) or forgetting
    (lower is better)."""
    protocol: Literal["full", "first_tasks"] = "full"
    """``full``: search trials run the whole sequence; ``first_tasks``: only its first
    ``first_tasks`` tasks."""
    first_tasks: int | None = None
    """Tasks of a search trial under ``protocol: first_tasks``."""
    seed: int = 0
    """Seeds the searcher's own draws (random configurations, Optuna's sampler)."""
    selection: str | None = None
    """A committed selection (a search's ``selection.json``) to run the final stage from instead
    of searching again; its path as given, relative to the spec file's directory."""
    selection_path: str | None = None
    """``selection`` resolved (absolute)."""

    @property
    def higher_is_better(self) -> bool:
        return next(m for m in METRICS if m.key == self.metric).higher_is_better

    @property
    def mode(self) -> str:
        """Tune's name for the direction: ``max`` or ``min``."""
        return "max" if self.higher_is_better else "min"

    def search_tasks(self, tasks: int) -> int:
        """Tasks of one search trial in a run of ``tasks`` tasks."""
        return self.first_tasks if self.protocol == "first_tasks" else tasks

    def describe(self, tasks: int) -> str:
        """One line for headers: ``random search, 8 configurations per method on validation acc,
        3 search seeds, first 3 of 10 tasks``."""
        span = (
            f"first {self.first_tasks} of {tasks} tasks"
            if self.protocol == "first_tasks"
            else f"all {tasks} tasks"
        )
        return (
            f"{self.algorithm} search, {self.budget} configurations per method on validation "
            f"{self.metric} ({self.mode}), {_plural(len(self.seeds), 'search seed')}, {span}"
        )


KEYS = {"algorithm", "budget", "metric", "protocol", "first_tasks", "seeds", "seed", "selection"}


def parse_search(
    raw: Any, *, final_seeds: tuple[int, ...], tasks: int, base: Path | None = None
) -> SearchSettings | None:
    """The ``search:`` section checked against the run's final seeds and task count; ``base``:
    the spec file's directory (a relative ``selection`` path starts there)."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise SpecError(
            "search: expected a mapping such as {algorithm: random, budget: 8, metric: acc, "
            "seeds: [100, 101, 102]}"
        )
    checks.unknown(raw, KEYS, "search")
    if "seeds" not in raw:
        raise SpecError(
            "search.seeds: missing; list the search trials' seeds, e.g. [100, 101, 102]"
        )
    seeds = checks.seed_list(raw["seeds"], "search.seeds", example="[100, 101]")
    shared = sorted(set(seeds) & set(final_seeds))
    if shared:
        raise SpecError(
            f"search.seeds: seed {shared[0]} is also a final seed (seeds:); the final runs need "
            "seeds the search never saw, so use disjoint lists"
        )
    algorithm = checks.typed(
        raw.get("algorithm", "random"), Literal[ALGORITHMS], "search.algorithm"
    )
    if algorithm == "optuna" and importlib.util.find_spec("optuna") is None:
        raise SpecError(
            "search.algorithm: optuna needs the optional package 'optuna'; install it: "
            "pip install 'blip-ray[search]'"
        )
    metric = raw.get("metric", "acc")
    if metric not in SEARCH_METRICS:
        raise SpecError(
            f"search.metric: expected one of {', '.join(SEARCH_METRICS)}, got {metric!r}"
        )
    protocol = checks.typed(raw.get("protocol", "full"), Literal[PROTOCOLS], "search.protocol")
    first = checks.optional(checks.integer, raw, "first_tasks", minimum=1)
    if protocol == "first_tasks":
        if first is None:
            raise SpecError(
                "search.first_tasks: protocol first_tasks needs it, e.g. first_tasks: 3"
            )
        if first > tasks:
            raise SpecError(f"search.first_tasks: the run has {tasks} tasks, got {first}")
        if first < 2 and metric != "acc":
            raise SpecError(
                f"search.first_tasks: {metric} needs at least 2 tasks (nothing to forget after "
                "one); use first_tasks: 2 or more, or metric: acc"
            )
    elif first is not None:
        raise SpecError("search.first_tasks: only protocol first_tasks reads it; remove it")
    selection = raw.get("selection")
    path = None
    if selection is not None:
        selection = checks.string(selection, "search.selection")
        path = str(((base or Path.cwd()) / Path(selection).expanduser()).resolve())
    return SearchSettings(
        selection=selection,
        selection_path=path,
        seeds=seeds,
        algorithm=algorithm,
        budget=checks.integer(raw.get("budget", 8), "search.budget", minimum=1),
        metric=metric,
        protocol=protocol,
        first_tasks=first,
        seed=checks.integer(raw.get("seed", 0), "search.seed", minimum=0),
    )


def method_space(hp: dict[str, Any], train_search: dict[str, SearchLeaf]) -> dict[str, SearchLeaf]:
    """A method's searched values: its own, then the spec's searched training settings as
    ``train.<key>`` (each method searches them on its own budget)."""
    own = {k: v for k, v in hp.items() if isinstance(v, SearchLeaf)}
    return own | {f"train.{k}": v for k, v in train_search.items()}


def finite_size(space: dict[str, SearchLeaf]) -> int | None:
    """Configurations in a space of grid/choice values only; None where a range is drawn."""
    if any(leaf.kind in ("uniform", "loguniform") for leaf in space.values()):
        return None
    return math.prod(len(leaf.values) for leaf in space.values())


def check_spaces(
    search: SearchSettings,
    methods: dict[str, dict[str, Any]],
    train_search: dict[str, SearchLeaf],
) -> None:
    """Every method's space fits the algorithm and the budget."""
    for name, hp in methods.items():
        space = method_space(hp, train_search)
        size = finite_size(space)
        if search.algorithm == "grid" and size is None:
            key = next(k for k, v in space.items() if v.kind in ("uniform", "loguniform"))
            raise SpecError(
                f"methods.{name}.{key}: a grid search cannot draw a {space[key].kind} range; "
                "list values ({grid: [...]}) or use search.algorithm: random"
            )
        if search.algorithm == "grid" and size > search.budget:
            raise SpecError(
                f"methods.{name}: its grid holds {size} configurations, above search.budget "
                f"{search.budget}; raise the budget or use search.algorithm: random"
            )


def read_selection(search: SearchSettings, methods: dict[str, Any]) -> dict[str, Any] | None:
    """The committed selection ``search.selection`` names, checked to choose for every method
    of the spec with the same search (metric, seeds, protocol); None without one."""
    if search.selection_path is None:
        return None
    where = f"search.selection: {search.selection}"
    try:
        record = json.loads(Path(search.selection_path).read_text())
    except FileNotFoundError:
        raise SpecError(
            f"{where}: no such file; give the selection.json of a finished search (relative to "
            "the spec's directory), or remove the key to search"
        ) from None
    except (OSError, ValueError) as err:
        raise SpecError(f"{where}: unreadable ({err}); give a search's selection.json") from None
    if not isinstance(record, dict) or not isinstance(record.get("methods"), dict):
        raise SpecError(f"{where}: not a selection record (no methods); give a selection.json")
    missing = [name for name in methods if name not in record["methods"]]
    if missing:
        raise SpecError(
            f"{where}: chooses nothing for {', '.join(missing)}; search them (remove the key) "
            "or remove them from methods:"
        )
    for key, ours in (("metric", search.metric), ("search_seeds", list(search.seeds))):
        if record.get(key) != ours:
            raise SpecError(
                f"{where}: its search used {key} {record.get(key)}, this spec {ours}; use the "
                "spec that searched, or remove the key to search again"
            )
    return record


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"
