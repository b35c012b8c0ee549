"""The ``rl:`` section of an experiment spec: budgets, evaluation and PPO settings of RL tracks."""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from blip_ray.experiments import spec as base
from blip_ray.rl.config import PpoSettings
from blip_ray.rl.sequences import RL_SEQUENCES


@dataclass(frozen=True)
class RlSpec:
    """RL settings shared by every trial of a spec (defaults: the sequence's, the paper's)."""

    steps_per_task: int | None = None
    """Env steps per task; None: the sequence's default (atari6: the paper's 10M)."""
    eval_episodes: int = 10
    """Deterministic evaluation episodes per task (the paper: 10)."""
    eval_interval: int = 100
    """Training iterations between evaluations inside a task (learning curves); 0: task ends."""
    eval_max_steps: int | None = None
    """Cap on the steps of one evaluation episode (None: the game's own end)."""
    num_env_runners: int | None = None
    """Remote env runners per trial; None: sized from the trial's CPUs (0 on 1 CPU)."""
    ppo: dict[str, Any] = field(default_factory=dict)
    """Overrides of the sequence's PPO settings (``blip_ray.rl.config.PpoSettings`` fields)."""
    reference_returns: dict[str, float] = field(default_factory=dict)
    """Raw return of a single-task reference run per task name (e.g. PPO trained on that game
    alone, same budget): 1 of the report's per-game normalization. Tasks without one use the best
    return observed in the experiment."""

    def smoke(self) -> RlSpec:
        """Seconds instead of hours: one tiny PPO batch per task, short evaluations."""
        ppo = {
            **self.ppo,
            "num_envs": 2,
            "rollout_length": 32,
            "num_minibatches": 2,
            "num_epochs": 1,
        }
        return dataclasses.replace(
            self,
            steps_per_task=64,
            eval_episodes=1,
            eval_interval=0,
            eval_max_steps=50,
            num_env_runners=0,
            ppo=ppo,
        )


def parse_rl(raw: Any, benchmark: str) -> RlSpec:
    if raw is None:
        return RlSpec()
    if not isinstance(raw, dict):
        raise base.SpecError("rl: expected a mapping like {steps_per_task: 100000}")
    base._unknown(raw, {f.name for f in dataclasses.fields(RlSpec)}, "rl")
    optional = {"steps_per_task": 1, "eval_max_steps": 1, "num_env_runners": 0}
    values: dict[str, Any] = {}
    for key, minimum in optional.items():
        if raw.get(key) is not None:
            values[key] = base._integer(raw[key], f"rl.{key}", minimum=minimum)
    if "eval_episodes" in raw:
        values["eval_episodes"] = base._integer(raw["eval_episodes"], "rl.eval_episodes", minimum=1)
    if "eval_interval" in raw:
        values["eval_interval"] = base._integer(raw["eval_interval"], "rl.eval_interval", minimum=0)
    ppo = raw.get("ppo") or {}
    if not isinstance(ppo, dict):
        raise base.SpecError("rl.ppo: expected a mapping of PPO settings")
    hints = typing.get_type_hints(PpoSettings)
    base._unknown(ppo, set(hints), "rl.ppo")
    values["ppo"] = {k: base._typed(v, hints[k], f"rl.ppo.{k}") for k, v in ppo.items()}
    for key, value in values["ppo"].items():
        if isinstance(value, int | float) and not value > 0 and key not in ("entropy_coeff",):
            raise base.SpecError(f"rl.ppo.{key}: must be > 0, got {value}")
    values["reference_returns"] = _references(raw.get("reference_returns"), benchmark)
    return RlSpec(**values)


def _references(raw: Any, benchmark: str) -> dict[str, float]:
    if raw is None:
        return {}
    names = [task.name for task in RL_SEQUENCES[benchmark].tasks]
    values = _return_mapping(raw, "rl.reference_returns", example=f"{{{names[0]}: 100.0}}")
    unknown = sorted(k for k in values if k not in names)
    if unknown:
        raise base.SpecError(
            f"rl.reference_returns: unknown task {unknown[0]!r}; {benchmark}'s tasks are "
            f"{', '.join(names)}"
        )
    return values


def load_reference_returns(path: str | Path) -> dict[str, float]:
    """Single-task reference returns from a YAML file (``{Boxing: 90.0, ...}``), for
    ``blip-ray report --reference-returns``; task names are checked against the experiment's."""
    raw = base.read_yaml(path, example="a YAML mapping of task name to return")
    return _return_mapping(raw, str(path), example="{Boxing: 90.0}")


def _return_mapping(raw: Any, where: str, *, example: str) -> dict[str, float]:
    if not isinstance(raw, dict) or not raw:
        raise base.SpecError(f"{where}: expected a mapping of task name to return, like {example}")
    return {str(k): base._number(v, f"{where}.{k}") for k, v in raw.items()}
