"""UCL, Uncertainty-regularized Continual Learning (Ahn, Cha, Lee & Moon, NeurIPS 2019).

The trunk is Bayesian (:mod:`blip_ray.models.bayesian`): a mean per weight and one ``sigma`` per
output unit. A unit whose ``sigma`` shrank on earlier tasks is important: its incoming means are
pulled back to their saved values with strength ``std_init / sigma_old``, the means that were large
relative to their ``sigma`` are also held by an L1 term, and ``sigma`` is kept from growing back.
"""

from __future__ import annotations

import dataclasses
import math
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
    trunk_snapshot,
)
from blip_ray.models.bayesian import BayesianLayer


@dataclasses.dataclass(frozen=True)
class UclConfig(MethodConfig):
    """UCL's regulariser weights and the Bayesian trunk's noise share (the reference's defaults).

    Reference: the official code, github.com/csm9493/UCL: ``approaches/ucl.py``
    (``custom_regularization``; the learning rate of ``rho`` divided on plateaus with the main
    one), ``bayes_layer.py`` (layers, init), ``arguments.py`` (defaults: ``alpha 0.01``,
    ``beta 0.03``, ``ratio 0.5``, ``lr_rho 0.001``) and ``README.md``, whose commands set per
    benchmark: PMNIST ``beta 0.03, ratio 0.5, lr_rho 0.001, alpha 0.01``; split CIFAR-10/100
    ``beta 0.0002, ratio 0.125, lr_rho 0.01, alpha 0.3``; split CIFAR-100 ``beta 0.002,
    ratio 0.125, lr_rho 0.01, alpha 5``; Omniglot ``beta 0.00001, ratio 0.5, lr_rho 0.02,
    alpha 5``. The reference trains with its Adam (``lr 0.001``, ``lr_rho`` for every ``rho``);
    here every method shares the loop's SGD, so ``lr_rho`` is the SGD rate of the ``rho`` group.
    Heads are per task and plain, as the reference's split benchmarks, so they are not regularised.
    """

    alpha: float = 0.01
    """Weight of the mean term on the first task only (a decay toward the initial weights, whose
    ``sigma`` is ``std_init``: strength 1); from the second task on it is 1, as the reference."""
    beta: float = 0.03
    """Weight of the two ``sigma`` terms (``s^2/s_old^2 - log`` of it, and ``s^2 - log s^2``)."""
    ratio: float = 0.5
    """Share of the init variance ``2/fan`` given to the noise: ``std_init = sqrt(ratio * 2/fan)``
    (the network is built with it; the regulariser scales by it)."""
    lr_rho: float = 0.001
    """Initial learning rate of every ``weight_rho``, divided with the loop's on each plateau."""

    def __post_init__(self) -> None:
        for name in ("alpha", "beta"):
            value = getattr(self, name)
            require(self, name, math.isfinite(value) and value >= 0, "a finite number >= 0")
        require(self, "ratio", 0 < self.ratio <= 1, "in (0, 1]")
        require(self, "lr_rho", math.isfinite(self.lr_rho) and self.lr_rho > 0, "a number > 0")


def bayesian_layers(model: Model) -> list[tuple[str, BayesianLayer]]:
    """The trunk's Bayesian layers by name, input to output (the reference's layer order)."""
    return [(n, m) for n, m in model.trunk.named_modules() if isinstance(m, BayesianLayer)]


def ucl_penalty(
    layers: list[tuple[str, BayesianLayer]],
    saved: dict[str, torch.Tensor],
    *,
    alpha: float,
    beta: float,
    after_first_task: bool,
    batch_size: int,
) -> torch.Tensor:
    """The reference's ``custom_regularization`` without the data term, for one minibatch.

    Per layer, with ``s = softplus(rho)``, ``s_old`` the saved one and ``c = std_init / s_old``
    (per output unit): the mean term ``|| max(c_out, c_in) * (mu - mu_old) ||^2`` (``c_in`` the
    previous layer's ``c`` of the unit feeding the weight, 0 for the first layer; channels repeat
    over a flattened map) plus ``|| c * (b - b_old) ||^2``; the L1 term
    ``std_init^2 * |mu_old^2 / s_old^2 * (mu - mu_old)|_1`` (the bias likewise); the ``sigma``
    terms ``sum(s^2/s_old^2 - log(s^2/s_old^2)) + sum(s^2 - log s^2)``. The loss adds
    ``(alpha * mean / 2 + [t > 0] * L1 + beta * sigma / 2) / batch_size``.
    """
    mean_sum, l1_sum, sigma_sum = [], [], []
    incoming: torch.Tensor | None = None
    for name, layer in layers:
        mu, mu_old = layer.weight_mu, saved[f"{name}.weight_mu"]
        sigma, sigma_old = layer.weight_sigma, F.softplus(saved[f"{name}.weight_rho"])
        strength = layer.std_init / sigma_old
        out_units, in_units = mu.shape[:2]
        unit_strength = strength.reshape(out_units)
        feeding = _feeding_strength(incoming, in_units, like=unit_strength)
        weight_strength = torch.maximum(unit_strength[:, None], feeding[None, :])
        weight_strength = weight_strength.reshape(out_units, in_units, *(1,) * (mu.dim() - 2))
        moved = mu - mu_old
        mean = (weight_strength * moved).square().sum()
        l1 = (mu_old.square() / sigma_old.square() * moved).abs().sum()
        if layer.bias is not None:
            bias_old, unit_sigma_old = saved[f"{name}.bias"], sigma_old.reshape(out_units)
            bias_moved = layer.bias - bias_old
            mean = mean + (unit_strength * bias_moved).square().sum()
            l1 = l1 + (bias_old.square() / unit_sigma_old.square() * bias_moved).abs().sum()
        shrink = sigma.square() / sigma_old.square()
        variance = sigma.square()
        sigma_sum.append((shrink - shrink.log()).sum() + (variance - variance.log()).sum())
        mean_sum.append(mean)
        l1_sum.append(l1 * layer.std_init**2)
        incoming = unit_strength
    l1_weight = 1.0 if after_first_task else 0.0
    total = (
        alpha * torch.stack(mean_sum).sum() / 2
        + l1_weight * torch.stack(l1_sum).sum()
        + beta * torch.stack(sigma_sum).sum() / 2
    )
    return total / batch_size


def _feeding_strength(
    incoming: torch.Tensor | None, in_units: int, *, like: torch.Tensor
) -> torch.Tensor:
    """Strength of the unit feeding each input: 0 for the network's inputs; a convolution's channel
    strength repeated over its flattened map (the reference's reshape) before a linear layer."""
    if incoming is None:
        return like.new_zeros(in_units)
    if in_units % incoming.numel():
        raise ValueError(f"{in_units} inputs do not follow {incoming.numel()} units")
    return incoming.repeat_interleave(in_units // incoming.numel())


@register_method("ucl")
class UclMethod(ContinualMethod):
    """Node-wise uncertainty sets each weight's regularisation strength; the saved model is the
    last task's (the initial one during the first task)."""

    config_class = UclConfig
    bayesian_trunk = True

    def setup(self, model: Model) -> None:
        layers = bayesian_layers(model)
        if not layers:
            raise ValueError("ucl needs a Bayesian trunk: build the network with bayesian=True")
        ratios = {layer.ratio for _, layer in layers}
        if ratios != {self.config.ratio}:
            raise ValueError(
                f"ucl has ratio {self.config.ratio} but the trunk was built with {ratios}"
            )
        self.saved = trunk_snapshot(model)  # the reference's model_old starts as the initial model
        self.after_first_task = False

    def penalty(self, model: Model, task_id: int, inputs: torch.Tensor) -> torch.Tensor | None:
        return ucl_penalty(
            bayesian_layers(model),
            self.saved,
            alpha=1.0 if self.after_first_task else self.config.alpha,
            beta=self.config.beta,
            after_first_task=self.after_first_task,
            batch_size=inputs.shape[0],
        )

    def param_groups(self, model: Model, *, lr_scale: float) -> list[dict[str, Any]] | None:
        rho = [layer.weight_rho for _, layer in bayesian_layers(model)]
        rho_ids = {id(p) for p in rho}
        rest = [p for p in model.parameters() if p.requires_grad and id(p) not in rho_ids]
        return [{"params": rest}, {"params": rho, "lr": self.config.lr_rho * lr_scale}]

    def after_task(self, model: Model, task_id: int, *, samples: TaskSamples) -> None:
        self.saved = trunk_snapshot(model)
        self.after_first_task = True

    def state_dict(self) -> dict[str, Any]:
        return {"saved": self.saved, "after_first_task": self.after_first_task}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.saved, self.after_first_task = dict(state["saved"]), bool(state["after_first_task"])
