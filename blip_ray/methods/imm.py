"""IMM (Lee et al. 2017): weight transfer + L2 transfer during training, then a merge per task end.

``merge="mode"`` (the default, as the name and the official baselines' ``imm-mode``, HAT's
``src/approaches/imm_mode.py``) is mode-IMM, the Fisher-weighted average of the task solutions;
``merge="mean"`` is mean-IMM, their plain running average. Only the trunk is merged: each head is
trained by its own task alone, so averaging heads would only mix an untrained head into the new one.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

import torch

from blip_ray.methods.base import (
    ContinualMethod,
    MethodConfig,
    Model,
    TaskSamples,
    register_method,
    require,
    trunk_parameters,
    trunk_snapshot,
)
from blip_ray.methods.ewc import task_fisher


@dataclasses.dataclass(frozen=True)
class ImmConfig(MethodConfig):
    """IMM's merge rule and its L2-transfer regulariser."""

    merge: Literal["mean", "mode"] = "mode"
    """``mean``: average of the task solutions; ``mode``: Fisher-weighted average."""
    l2_transfer: float = 1e-4
    """Weight of ``sum (theta - theta_prev)^2`` toward the previous merged solution."""
    fisher_batch_size: int = 20
    """Minibatch size of the Fisher estimate (mode merge only)."""

    def __post_init__(self) -> None:
        require(self, "merge", self.merge in ("mean", "mode"), "mean or mode")
        require(self, "l2_transfer", self.l2_transfer >= 0, ">= 0")
        require(self, "fisher_batch_size", self.fisher_batch_size >= 1, ">= 1")


@register_method("imm_mode")
class ImmModeMethod(ContinualMethod):
    """Train task t from the merged solution of tasks < t, then merge the new solution into it."""

    config_class = ImmConfig

    def setup(self, model: Model) -> None:
        self.merged: dict[str, torch.Tensor] | None = None
        self.fisher: dict[str, torch.Tensor] | None = None

    def penalty(self, model: Model, task_id: int, inputs: torch.Tensor) -> torch.Tensor | None:
        if self.merged is None or self.config.l2_transfer == 0:
            return None
        params = trunk_parameters(model)
        terms = [(p - self.merged[n]).square().sum() for n, p in params.items()]
        return self.config.l2_transfer * torch.stack(terms).sum()

    @torch.no_grad()
    def after_task(self, model: Model, task_id: int, *, samples: TaskSamples) -> None:
        params = trunk_parameters(model)
        if self.config.merge == "mode":
            new_fisher = task_fisher(model, samples, batch_size=self.config.fisher_batch_size)
        if self.merged is not None:
            for name, param in params.items():
                if self.config.merge == "mean":
                    param.mul_(1.0 / (task_id + 1)).add_(
                        self.merged[name], alpha=task_id / (task_id + 1)
                    )
                else:
                    old_f, new_f = self.fisher[name], new_fisher[name]
                    denom = old_f + new_f
                    mixed = (old_f * self.merged[name] + new_f * param) / denom.clamp_min(1e-30)
                    param.copy_(torch.where(denom > 0, mixed, (self.merged[name] + param) / 2))
        if self.config.merge == "mode":
            self.fisher = (
                new_fisher
                if self.fisher is None
                else {n: f + new_fisher[n] for n, f in self.fisher.items()}
            )
        self.merged = trunk_snapshot(model)

    def state_dict(self) -> dict[str, Any]:
        return {"merged": self.merged, "fisher": self.fisher}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.merged, self.fisher = state["merged"], state["fisher"]
