"""Choosing each method's configuration from its search trials, on validation scores only.

A configuration's score is the search metric on each search trial's **validation** matrix (RL:
the evaluation episodes reserved for selection), averaged over the search seeds. Only a
configuration that finished on every search seed can be chosen (a partly failed one would be
scored on fewer, luckier seeds); the best mean wins, and a tie goes to the configuration listed
first. Test scores (``TrialResult.matrix``) are never read here.

The record (:func:`selection_record`, saved as ``selection.json`` and in the final stage's
provenance) and the report's two tables (:func:`selection_markdown`) are made from the same
:class:`MethodSelection` values.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from blip_ray import metrics
from blip_ray.errors import UserError
from blip_ray.records.trials import TrialResult
from blip_ray.report.tables import cell, setting_label


@dataclass
class ScoredConfiguration:
    """One configuration of a method's search and its validation scores."""

    configuration: dict[str, Any]
    """Every hyperparameter of the method as run (``train.<key>`` for training settings)."""
    seed_scores: dict[int, float] = field(default_factory=dict)
    """Validation score per search seed that finished."""
    complete: bool = False
    """Finished on every search seed (only such a configuration can be chosen)."""
    rank: int | None = None
    """1 for the chosen one; None for an incomplete configuration."""

    @property
    def score(self) -> float:
        values = list(self.seed_scores.values())
        return float(np.mean(values)) if values else math.nan


@dataclass
class MethodSelection:
    """A method's search: its scored configurations and the chosen one."""

    method: str
    scored: list[ScoredConfiguration]
    """In the order the search listed them."""

    @property
    def chosen(self) -> ScoredConfiguration:
        return next(s for s in self.scored if s.rank == 1)


def validation_score(trial: TrialResult, metric: str) -> float:
    """``metric`` on the trial's validation matrix; NaN where it has none or it failed."""
    if trial.status != "ok" or not trial.valid_matrix:
        return math.nan
    return float(metrics.summary(trial.valid_matrix)[metric])


def select(
    trials: Sequence[TrialResult],
    *,
    metric: str,
    higher_is_better: bool,
    seeds: Sequence[int],
) -> dict[str, MethodSelection]:
    """Every method's search trials grouped by configuration, scored and ranked; raises
    :class:`UserError` for a method none of whose configurations finished on every seed."""
    grouped: dict[str, dict[str, ScoredConfiguration]] = {}
    for trial in trials:
        key = json.dumps(trial.hyperparameters, sort_keys=True, default=str)
        scored = grouped.setdefault(trial.method, {}).setdefault(
            key, ScoredConfiguration(dict(trial.hyperparameters))
        )
        value = validation_score(trial, metric)
        if not math.isnan(value):
            scored.seed_scores[trial.seed] = value
    out = {}
    for method, by_key in grouped.items():
        scored = list(by_key.values())
        for s in scored:
            s.complete = set(s.seed_scores) >= set(seeds)
        ranked = sorted(
            (s for s in scored if s.complete),
            key=lambda s: -s.score if higher_is_better else s.score,
        )  # sorted is stable: a tie keeps the configuration listed first
        if not ranked:
            raise UserError(
                f"search: no configuration of {method} finished on every search seed "
                f"({', '.join(map(str, seeds))}); see the search stage's report, fix the cause "
                "and --resume"
            )
        for rank, s in enumerate(ranked, start=1):
            s.rank = rank
        out[method] = MethodSelection(method, scored)
    return out


def selection_record(
    selections: Mapping[str, MethodSelection], settings: Mapping[str, Any]
) -> dict[str, Any]:
    """The selection as plain JSON: the search's ``settings`` (searcher, budget, metric,
    protocol, seeds) and per method its configurations, scores and choice."""
    return {
        **settings,
        "methods": {
            method: {
                "configurations": len(selection.scored),
                "chosen": selection.chosen.configuration,
                "score": selection.chosen.score,
                "tried": [
                    {
                        "configuration": s.configuration,
                        "score": s.score,
                        "seed_scores": {str(k): v for k, v in s.seed_scores.items()},
                        "complete": s.complete,
                        "rank": s.rank,
                    }
                    for s in selection.scored
                ],
            }
            for method, selection in selections.items()
        },
    }


def chosen_configurations(record: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Method -> chosen configuration, from a selection record."""
    return {method: dict(entry["chosen"]) for method, entry in record["methods"].items()}


def selection_markdown(record: Mapping[str, Any]) -> str:
    """The report's selection table (per method: configurations tried, the chosen one, its
    validation score) and the search table (every configuration, ranked)."""
    metric = record["metric"]
    seeds = record["search_seeds"]
    lines = [
        "## Selection (validation)",
        "",
        f"{record['algorithm']} search, at most {record['budget']} configurations per method, "
        f"each scored by validation {metric} ({'higher' if record['mode'] == 'max' else 'lower'} "
        f"is better) averaged over {len(seeds)} search seed{'s' * (len(seeds) != 1)} "
        f"({', '.join(map(str, seeds))}) on {record['tasks_searched']} of "
        f"{record['tasks']} tasks; test scores are not read. The final runs use seeds "
        f"{', '.join(map(str, record['final_seeds']))}."
        + (f" This run took the selection from {record['from']}." if record.get("from") else ""),
        "",
        f"| Method | Configurations | Chosen | Validation {metric} |",
        "|---|---|---|---|",
    ]
    for method, entry in record["methods"].items():
        lines.append(
            f"| {cell(method)} | {entry['configurations']} | "
            f"{cell(setting_label(_searched(entry)) or '(defaults)')} | {entry['score']:.3f} |"
        )
    lines += [
        "",
        "## Search trials",
        "",
        f"| Method | Rank | Configuration | Validation {metric} (mean) | Per search seed |",
        "|---|---|---|---|---|",
    ]
    for method, entry in record["methods"].items():
        keys = _varying_keys(entry)
        tried = sorted(entry["tried"], key=lambda t: (t["rank"] is None, t["rank"] or 0))
        for tried_one in tried:
            shown = {k: tried_one["configuration"].get(k) for k in keys}
            per_seed = ", ".join(f"{v:.3f}" for v in tried_one["seed_scores"].values())
            lines.append(
                f"| {cell(method)} | {tried_one['rank'] or 'incomplete'} | "
                f"{cell(setting_label(shown) or '(defaults)')} | "
                f"{_number(tried_one['score'])} | {per_seed or 'n/a'} |"
            )
    return "\n".join(lines) + "\n"


def _searched(entry: Mapping[str, Any]) -> dict[str, Any]:
    """The chosen configuration's values of the keys its search varied."""
    return {k: entry["chosen"].get(k) for k in _varying_keys(entry)}


def _varying_keys(entry: Mapping[str, Any]) -> list[str]:
    """The configuration keys whose values differ between a method's tried configurations."""
    configurations = [t["configuration"] for t in entry["tried"]]
    keys = sorted({k for c in configurations for k in c})
    return [k for k in keys if len({json.dumps(c.get(k), default=str) for c in configurations}) > 1]


def _number(value: float) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.3f}"
