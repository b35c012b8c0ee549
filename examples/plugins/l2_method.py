"""A method of one's own: L2 towards the trunk after the previous task, as a blip-ray plugin.

The penalty is ``strength / 2 * sum((w - w_prev)^2)`` over the trunk's parameters, ``w_prev`` the
weights when the previous task ended (none on the first task): EWC with a Fisher of ones, the
classic baseline of Kirkpatrick et al. (2017, "L2" in their Figure 2). Everything a method needs
is the registry decorator and the hooks of ``ContinualMethod``; ``blip-ray run`` imports this file
in the driver and in every Ray worker when a spec lists it under ``plugins:`` (or ``--plugin``):

    blip-ray run examples/plugins/spec.yaml
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from blip_ray.methods import ContinualMethod, MethodConfig, TaskSamples, register_method
from blip_ray.methods.base import Model, require, trunk_parameters, trunk_snapshot


@dataclasses.dataclass(frozen=True)
class L2Config(MethodConfig):
    """Hyperparameters of :class:`L2Method`; a spec's ``methods: {l2: {strength: ...}}``."""

    strength: float = 1.0
    """Weight of the squared distance to the previous task's trunk."""

    def __post_init__(self) -> None:
        require(self, "strength", self.strength >= 0, ">= 0")


@register_method("l2")
class L2Method(ContinualMethod):
    """Keeps the trunk near where the previous task left it, every weight alike."""

    config_class = L2Config
    tracks = ("supervised", "rl")

    def __init__(self, config: L2Config | None = None) -> None:
        super().__init__(config)
        self.anchor: dict[str, torch.Tensor] = {}

    def penalty(self, model: Model, task_id: int, inputs: torch.Tensor) -> torch.Tensor | None:
        if not self.anchor:
            return None
        distance = sum(
            ((param - self.anchor[name]) ** 2).sum()
            for name, param in trunk_parameters(model).items()
        )
        return 0.5 * self.config.strength * distance

    def after_task(self, model: Model, task_id: int, *, samples: TaskSamples) -> None:
        self.anchor = trunk_snapshot(model)

    def state_dict(self) -> dict[str, Any]:
        return {"anchor": self.anchor}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.anchor = dict(state["anchor"])
