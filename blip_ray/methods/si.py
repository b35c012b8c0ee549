"""SI, Synaptic Intelligence (Zenke, Poole & Ganguli 2017), on both tracks.

Reference: the official code, github.com/ganguli-lab/pathint: ``pathint/protocols.py``
(``PATH_INT_PROTOCOL`` with ``omega_decay="sum"``), ``pathint/optimizers.py`` (``unreg_grads``, the
gradient of the loss WITHOUT the regulariser, and ``deltas``, the update applied),
``pathint/regularizers.py`` (``quadratic_regularizer``) and ``fig_transfer_cifar/train.py``
(``c = 0.1``, ``xi = 1e-3``; its permuted-MNIST runs used ``xi = 0.1``).

Per optimizer step, ``W -= g_plain * delta`` with ``g_plain`` the gradient of the task loss alone
and ``delta`` the step actually applied (clipping included); at a task end
``omega = relu(omega + W / ((theta* - theta)^2 + xi))`` (the reference takes the ``relu`` of the
sum), ``theta* = theta`` and ``W = 0``; the penalty is ``c * sum omega (theta - theta*)^2``.
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
class SiConfig(MethodConfig):
    """SI's strength and damping (the reference's split-CIFAR values)."""

    c: float = 0.1
    """Weight of ``sum omega (theta - theta*)^2`` (the reference's ``lam``/``cval``)."""
    xi: float = 1e-3
    """Damping of ``W / (delta^2 + xi)`` where a parameter barely moved over the task."""

    def __post_init__(self) -> None:
        require(self, "c", math.isfinite(self.c) and self.c >= 0, "a finite number >= 0")
        require(self, "xi", math.isfinite(self.xi) and self.xi > 0, "a finite number > 0")


@register_method("si")
class SiMethod(ContinualMethod):
    """The path integral of the plain gradient along each task's updates sets the importance."""

    config_class = SiConfig
    tracks = ("supervised", "rl")

    def setup(self, model: Model) -> None:
        params = trunk_parameters(model)
        self.anchor = trunk_snapshot(model)  # theta*: the start
        self.omega: dict[str, torch.Tensor] | None = None
        self.path = {n: torch.zeros_like(p) for n, p in params.items()}  # W
        self.previous = trunk_snapshot(model)
        self.plain: dict[str, torch.Tensor] = {}
        for name, param in params.items():
            # The backward pass hands each parameter the gradient of loss + penalty, before any
            # clipping; the penalty's own gradient is known, so the plain gradient is exact.
            param.register_hook(lambda grad, name=name, param=param: self._keep(name, param, grad))

    def _keep(self, name: str, param: torch.Tensor, grad: torch.Tensor) -> None:
        if self.omega is None:  # a copy: autograd may hand this very tensor on as .grad
            self.plain[name] = grad.detach().clone()
        else:
            moved = param.detach() - self.anchor[name]
            self.plain[name] = grad.detach() - 2 * self.config.c * self.omega[name] * moved

    def before_task(self, model: Model, task_id: int) -> None:
        self.previous = trunk_snapshot(model)
        self.plain.clear()

    def penalty(self, model: Model, task_id: int, inputs: torch.Tensor) -> torch.Tensor | None:
        return anchored_penalty(model, self.omega, self.anchor, weight=self.config.c)

    def after_step(self, model: Model, task_id: int) -> None:
        for name, param in trunk_parameters(model).items():
            now = param.detach()
            if name in self.plain:
                self.path[name].sub_(self.plain[name] * (now - self.previous[name]))
            self.previous[name].copy_(now)
        self.plain.clear()

    def after_task(self, model: Model, task_id: int, *, samples: TaskSamples) -> None:
        omega = {}
        for name, param in trunk_parameters(model).items():
            moved = (param.detach() - self.anchor[name]).square() + self.config.xi
            total = self.path[name] / moved
            if self.omega is not None:
                total = total + self.omega[name]
            omega[name] = total.clamp_min(0.0)
            self.anchor[name] = param.detach().clone()
            self.path[name].zero_()
        self.omega = omega

    def state_dict(self) -> dict[str, Any]:
        return {"omega": self.omega, "anchor": self.anchor}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.omega, self.anchor = state["omega"], dict(state["anchor"])
