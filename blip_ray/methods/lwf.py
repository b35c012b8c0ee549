"""Learning without Forgetting (Li & Hoiem 2016): distil the previous model's old-head outputs."""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import torch
from torch.nn import functional as F

from blip_ray.methods.base import (
    ContinualMethod,
    MethodConfig,
    Model,
    TaskSamples,
    register_method,
    require,
)


@dataclasses.dataclass(frozen=True)
class LwfConfig(MethodConfig):
    """LwF's distillation settings (Li & Hoiem's temperature)."""

    lamb: float = 1.0
    """Weight of the distillation loss, summed over the old heads."""
    temperature: float = 2.0
    """Softmax temperature of the distillation targets."""

    def __post_init__(self) -> None:
        require(self, "lamb", self.lamb >= 0, ">= 0")
        require(self, "temperature", self.temperature > 0, "> 0")


@register_method("lwf")
class LwfMethod(ContinualMethod):
    """``loss + lamb * sum_{k<t} KD(old_k(x), new_k(x))`` on the current task's inputs.

    The previous model is a frozen copy taken at each task end; its state is one network's worth of
    parameters, constant in the number of tasks.
    """

    config_class = LwfConfig

    def setup(self, model: Model) -> None:
        self.old_model: Model | None = None
        self._pending: dict[str, torch.Tensor] | None = None

    def penalty(self, model: Model, task_id: int, inputs: torch.Tensor) -> torch.Tensor | None:
        if self.old_model is None or task_id == 0:
            return None
        temp = self.config.temperature
        with torch.no_grad():
            old_features = self.old_model.features(inputs)
        features = model.features(inputs)
        terms = []
        for k in range(task_id):
            target = F.softmax(self.old_model.heads[k](old_features) / temp, dim=1)
            log_pred = F.log_softmax(model.heads[k](features) / temp, dim=1)
            terms.append(-(target * log_pred).sum(1).mean())
        return self.config.lamb * torch.stack(terms).sum()

    def after_task(self, model: Model, task_id: int, *, samples: TaskSamples) -> None:
        self.old_model = _frozen_copy(model)

    def state_dict(self) -> dict[str, Any]:
        return {"old_model": self.old_model.state_dict() if self.old_model is not None else None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._pending = state["old_model"]

    def before_task(self, model: Model, task_id: int) -> None:
        if self._pending is not None:  # a restart: rebuild the previous model from its weights
            self.old_model = _frozen_copy(model)
            self.old_model.load_state_dict(self._pending)
            self._pending = None


def _frozen_copy(model: Model) -> Model:
    old = copy.deepcopy(model).eval()
    for param in old.parameters():
        param.requires_grad_(False)
    return old
