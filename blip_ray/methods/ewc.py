"""EWC (Kirkpatrick et al. 2017) with one penalty per past task, and online EWC (Schwarz 2018).

Both use the Fisher estimator of the official baselines (HAT's ``fisher_matrix_diag`` in
``src/approaches/ewc.py``, github.com/joansj/hat, and BLIP's ``RL/ppo_ewc.py``): squared gradients
of each minibatch's mean loss, times the minibatch size, averaged over the samples. The loss is the
task's cross-entropy with the true labels in classification, ``-log pi(sampled a | s)`` in RL
(:meth:`TaskSamples.nll`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

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


def minibatch_fisher(
    params: dict[str, nn.Parameter],
    batches: Iterable[Any],
    loss_fn: Callable[[Any], torch.Tensor],
) -> dict[str, torch.Tensor]:
    """``sum_b N_b * grad(mean loss_b)^2 / sum_b N_b`` for each parameter in ``params``.

    ``loss_fn(batch)`` returns the per-sample losses of a minibatch (its length is N_b).
    """
    fisher = {name: torch.zeros_like(p) for name, p in params.items()}
    total = 0
    for batch in batches:
        losses = loss_fn(batch)
        grads = torch.autograd.grad(losses.mean(), list(params.values()), allow_unused=True)
        for (name, _), grad in zip(params.items(), grads, strict=True):
            if grad is not None:
                fisher[name].add_(grad.detach().square(), alpha=losses.shape[0])
        total += losses.shape[0]
    if total == 0:
        raise ValueError("no samples to estimate the Fisher from")
    return {name: f / total for name, f in fisher.items()}


def task_fisher(model: Model, samples: TaskSamples, *, batch_size: int) -> dict[str, torch.Tensor]:
    """The trunk's Fisher on the task's samples, in the model's current mode (train, as HAT)."""
    with torch.enable_grad():  # the RL learner ends tasks under no_grad
        return minibatch_fisher(
            trunk_parameters(model),
            samples.batches(batch_size, shuffle=False),
            lambda batch: samples.nll(model, batch),
        )


def quadratic_penalty(
    params: dict[str, nn.Parameter],
    fisher: dict[str, torch.Tensor],
    anchor: dict[str, torch.Tensor],
) -> torch.Tensor:
    """``sum F (theta - theta*)^2 / 2`` over the trunk."""
    terms = [(fisher[n] * (p - anchor[n]).square()).sum() for n, p in params.items()]
    return torch.stack(terms).sum() / 2


def anchored_penalty(
    model: Model,
    importance: dict[str, torch.Tensor] | None,
    anchor: dict[str, torch.Tensor] | None,
    *,
    weight: float,
) -> torch.Tensor | None:
    """``weight * sum importance (theta - theta*)^2`` over the trunk; None before a first anchor
    (online EWC's weight is ``lamb / 2``, MAS's ``lamb``, SI's ``c``)."""
    if importance is None or anchor is None:
        return None
    return 2 * weight * quadratic_penalty(trunk_parameters(model), importance, anchor)


@dataclasses.dataclass(frozen=True)
class EwcConfig(MethodConfig):
    """Offline EWC: one Fisher and one anchor kept per finished task."""

    lamb: float = 5000.0
    """Penalty strength (HAT's and the official baselines' value)."""
    fisher_batch_size: int = 20
    """Minibatch size of the Fisher estimate (HAT's ``fisher_matrix_diag`` default)."""

    def __post_init__(self) -> None:
        require(self, "lamb", self.lamb >= 0, ">= 0")
        require(self, "fisher_batch_size", self.fisher_batch_size >= 1, ">= 1")


@register_method("ewc")
class EwcMethod(ContinualMethod):
    """``loss + lamb * sum_k sum F_k (theta - theta_k)^2 / 2`` over past tasks k; state grows."""

    config_class = EwcConfig

    def setup(self, model: Model) -> None:
        self.fishers: list[dict[str, torch.Tensor]] = []
        self.anchors: list[dict[str, torch.Tensor]] = []

    def penalty(self, model: Model, task_id: int, inputs: torch.Tensor) -> torch.Tensor | None:
        if not self.fishers:
            return None
        params = trunk_parameters(model)
        total = sum(
            quadratic_penalty(params, f, a) for f, a in zip(self.fishers, self.anchors, strict=True)
        )
        return self.config.lamb * total

    def after_task(self, model: Model, task_id: int, *, samples: TaskSamples) -> None:
        self.fishers.append(task_fisher(model, samples, batch_size=self.config.fisher_batch_size))
        self.anchors.append(trunk_snapshot(model))

    def state_dict(self) -> dict[str, Any]:
        return {"fishers": self.fishers, "anchors": self.anchors}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.fishers, self.anchors = list(state["fishers"]), list(state["anchors"])


@dataclasses.dataclass(frozen=True)
class OnlineEwcConfig(MethodConfig):
    """Online EWC: a single running Fisher and the latest anchor."""

    lamb: float = 5000.0
    """Penalty strength (the paper's RL value)."""
    gamma: float = 1.0
    """Decay of the running Fisher; 1.0 is the official RL code's plain running sum."""
    fisher_batch_size: int = 20
    """Minibatch size of the Fisher estimate."""

    def __post_init__(self) -> None:
        require(self, "lamb", self.lamb >= 0, ">= 0")
        require(self, "gamma", 0 < self.gamma <= 1, "in (0, 1]")
        require(self, "fisher_batch_size", self.fisher_batch_size >= 1, ">= 1")


@register_method("online_ewc")
class OnlineEwcMethod(ContinualMethod):
    """``F <- gamma F + F_t``, anchor at the latest task's weights; constant state."""

    config_class = OnlineEwcConfig
    tracks = ("supervised", "rl")

    def setup(self, model: Model) -> None:
        self.fisher: dict[str, torch.Tensor] | None = None
        self.anchor: dict[str, torch.Tensor] | None = None

    def penalty(self, model: Model, task_id: int, inputs: torch.Tensor) -> torch.Tensor | None:
        return anchored_penalty(model, self.fisher, self.anchor, weight=self.config.lamb / 2)

    def after_task(self, model: Model, task_id: int, *, samples: TaskSamples) -> None:
        new = task_fisher(model, samples, batch_size=self.config.fisher_batch_size)
        if self.fisher is None:
            self.fisher = new
        else:
            self.fisher = {n: self.config.gamma * f + new[n] for n, f in self.fisher.items()}
        self.anchor = trunk_snapshot(model)

    def state_dict(self) -> dict[str, Any]:
        return {"fisher": self.fisher, "anchor": self.anchor}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.fisher, self.anchor = state["fisher"], state["anchor"]
