"""MAS, Memory Aware Synapses (Aljundi et al. 2018), on both tracks.

Reference: the official code, github.com/rahafaljundi/MAS-Memory-Aware-Synapses,
``MAS_to_be_published/MAS_utils/MAS_based_Training.py`` (``compute_importance_l2``,
``MAS_Omega_update``, ``accumelate_reg_params``, ``Weight_Regularized_SGD``) with ``MAS.py``'s
``MAS_Omega_Acuumelation`` defaults: importance from one sample at a time (``b1=True``), added to
the importance of earlier tasks, ``reg_lambda = 1``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

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
from blip_ray.methods.ewc import anchored_penalty


@dataclasses.dataclass(frozen=True)
class MasConfig(MethodConfig):
    """MAS's penalty strength (the official ``reg_lambda``)."""

    lamb: float = 1.0
    """Weight of ``sum Omega (theta - theta*)^2`` (official gradient: ``2 lamb Omega dtheta``)."""

    def __post_init__(self) -> None:
        require(self, "lamb", math.isfinite(self.lamb) and self.lamb >= 0, "a finite number >= 0")


def output_importance(model: Model, samples: TaskSamples) -> dict[str, torch.Tensor]:
    """Per trunk parameter, the mean over the task's samples of ``|d ||f(x)||_2^2 / d theta|``.

    ``f(x)`` is the task's own head (the policy's logits on RL): the official
    ``compute_importance_l2`` with one sample per step (``MSELoss(sum)`` against zeros, ``abs`` of
    the gradient, running mean), the network in eval mode.
    """
    params = trunk_parameters(model)
    importance = {name: torch.zeros_like(p) for name, p in params.items()}
    was_training, count = model.training, 0
    model.eval()
    try:
        with torch.enable_grad():  # the RL learner ends tasks under no_grad
            for inputs, _ in samples.batches(1, shuffle=False):
                norm = samples.logits(model, inputs).square().sum()
                grads = torch.autograd.grad(norm, list(params.values()), allow_unused=True)
                for name, grad in zip(params, grads, strict=True):
                    if grad is not None:
                        importance[name].add_(grad.abs())
                count += 1
    finally:
        model.train(was_training)
    if count == 0:
        raise ValueError("no samples to estimate MAS's importance from")
    return {name: value / count for name, value in importance.items()}


@register_method("mas")
class MasMethod(ContinualMethod):
    """``loss + lamb * sum Omega (theta - theta*)^2`` with ``Omega`` summed over finished tasks
    and ``theta*`` the trunk after the latest task; state constant in the number of tasks."""

    config_class = MasConfig
    tracks = ("supervised", "rl")

    def setup(self, model: Model) -> None:
        self.omega: dict[str, torch.Tensor] | None = None
        self.anchor: dict[str, torch.Tensor] | None = None

    def penalty(self, model: Model, task_id: int, inputs: torch.Tensor) -> torch.Tensor | None:
        return anchored_penalty(model, self.omega, self.anchor, weight=self.config.lamb)

    def after_task(self, model: Model, task_id: int, *, samples: TaskSamples) -> None:
        new = output_importance(model, samples)
        self.omega = new if self.omega is None else {n: o + new[n] for n, o in self.omega.items()}
        self.anchor = trunk_snapshot(model)

    def state_dict(self) -> dict[str, Any]:
        return {"omega": self.omega, "anchor": self.anchor}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.omega, self.anchor = state["omega"], state["anchor"]
