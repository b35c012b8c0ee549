"""The continual-run settings the learner and the callback share, carried inside the PPO config.

RLlib builds learners and callbacks itself, from the frozen ``AlgorithmConfig``; the one place both
can read custom values from is ``config.learner_config_dict``. :class:`ContinualSettings` is stored
there as a plain dict under :data:`SETTINGS_KEY` (plain so configs pickle and print), and read back
as a typed object on each side.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

#: Key of the settings inside ``AlgorithmConfig.learner_config_dict``.
SETTINGS_KEY = "continual"


@dataclasses.dataclass(frozen=True)
class ContinualSettings:
    """What a continual PPO run needs beyond PPO itself (built by ``blip_ray.rl.config``)."""

    sequence: str
    """Name of the RL task sequence (``blip_ray.rl.sequences.RL_SEQUENCES``)."""
    num_tasks: int
    """Tasks trained, the first ``num_tasks`` of the sequence."""
    steps_per_task: int
    """Env-step budget of each task; task ``t`` ends once ``(t + 1) * steps_per_task`` lifetime
    env steps have been sampled (checked after every training iteration)."""
    method: str
    """RL method name (``blip_ray.rl.methods.RL_METHODS``)."""
    method_hp: Mapping[str, Any]
    """Hyperparameters over the method's RL defaults (fields of its ``MethodConfig``)."""
    lr: float
    """Adam's learning rate at the start of every task; it decays linearly to 0 within a task."""
    adam_eps: float
    """Adam's epsilon (the official PPO uses 1e-5; PyTorch's default is 1e-8)."""
    eval_episodes: int
    """Deterministic episodes per task in every evaluation (the paper: 10)."""
    eval_interval: int
    """Training iterations between evaluations inside a task; 0 evaluates at task ends only."""
    eval_max_steps: int | None
    """Cap on the agent steps of one evaluation episode (None: the env's own limit)."""
    eval_seed: int
    """Seed of the first evaluation episode; episode ``i`` uses ``eval_seed + i``."""

    def __post_init__(self) -> None:
        if self.num_tasks < 1:
            raise ValueError(f"num_tasks must be >= 1, got {self.num_tasks}")
        if self.steps_per_task < 1:
            raise ValueError(f"steps_per_task must be >= 1, got {self.steps_per_task}")
        if self.eval_episodes < 1:
            raise ValueError(f"eval_episodes must be >= 1, got {self.eval_episodes}")
        if self.eval_interval < 0:
            raise ValueError(f"eval_interval must be >= 0, got {self.eval_interval}")
        if self.eval_max_steps is not None and self.eval_max_steps < 1:
            raise ValueError(f"eval_max_steps must be >= 1 when set, got {self.eval_max_steps}")
        if not (self.lr > 0 and self.adam_eps > 0):
            raise ValueError("lr and adam_eps must be > 0")

    def to_dict(self) -> dict[str, Any]:
        """A plain dict for ``learner_config_dict`` (see :func:`settings_from_config`)."""
        data = dataclasses.asdict(self)
        data["method_hp"] = dict(self.method_hp)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ContinualSettings:
        return cls(**{**data, "method_hp": dict(data["method_hp"])})


def settings_from_config(config: Any) -> ContinualSettings:
    """The settings of an ``AlgorithmConfig`` built by ``blip_ray.rl.config.build_ppo_config``."""
    learner_dict = getattr(config, "learner_config_dict", None) or {}
    if SETTINGS_KEY not in learner_dict:
        raise KeyError(
            f"the AlgorithmConfig has no learner_config_dict[{SETTINGS_KEY!r}]; build it with "
            "blip_ray.rl.build_ppo_config"
        )
    return ContinualSettings.from_dict(learner_dict[SETTINGS_KEY])
