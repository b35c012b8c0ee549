"""Model-level BLIP operations over every quantized layer of a trunk."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from blip_ray.quant.fisher import LogProbFn, squared_grad_sums
from blip_ray.quant.formulas import DEFAULT_ZERO_BIT_WEIGHTS, ZeroBitWeights
from blip_ray.quant.layers import QuantMixin


def blip_layers(model: nn.Module) -> list[QuantMixin]:
    """Every quantized layer of ``model``, in registration order."""
    return [m for m in model.modules() if isinstance(m, QuantMixin)]


def set_f_prior(model: nn.Module, f_prior: float) -> None:
    """Initialise every layer's ``fisher_old`` to ``F_prior * s`` (call before the first task)."""
    if not f_prior > 0:
        raise ValueError(f"F_prior must be > 0, got {f_prior}")
    for layer in blip_layers(model):
        layer.set_f_prior(f_prior)


def clip_(model: nn.Module | Iterable[QuantMixin]) -> None:
    """BLIP's clipping after an optimizer step: one clamp per quantized parameter tensor.

    Takes the model or, on the hot path, its :func:`blip_layers` listed once: walking every module
    of a small network at every step costs as much as its clamps.
    """
    for layer in blip_layers(model) if isinstance(model, nn.Module) else model:
        layer.clip_()


def estimate_fisher(model: nn.Module, batches: Iterable[Any], log_prob_fn: LogProbFn) -> int:
    """Store the current task's Fisher in every layer's ``*_fisher`` buffers; return the samples.

    ``log_prob_fn(model, batch)`` returns the log-probability of a target sampled from the model
    (a label for classification, an action of the task's head for RL); see ``fisher.py`` for the
    scale, which matches the official code.
    """
    layers = blip_layers(model)
    if not layers:
        raise ValueError("the model has no quantized (BLIP) layers")
    buffers = {
        layer: {n: layer.state(n, "fisher").zero_() for n, _ in layer.blip_params()}
        for layer in layers
    }
    _, total = squared_grad_sums(model, batches, log_prob_fn, layers, out=buffers)  # type: ignore[arg-type]
    if total == 0:
        raise ValueError("no samples to estimate the Fisher from: the batch iterable was empty")
    for per_layer in buffers.values():
        for fisher in per_layer.values():
            fisher.div_(total)
    return total


def end_task(
    model: nn.Module,
    *,
    task: int,
    batches: Iterable[Any],
    log_prob_fn: LogProbFn,
    zero_bit_weights: ZeroBitWeights = DEFAULT_ZERO_BIT_WEIGHTS,
    generator: torch.Generator | None = None,
) -> int:
    """BLIP's end of 0-based task ``task``: Fisher -> bits -> quantize -> ``fisher_old`` update.

    ``zero_bit_weights`` sets what the parameters left with 0 bits hold (``quantize_task_end``);
    ``reinit`` draws from ``generator`` (None: torch's default) after the Fisher, layer by layer.
    Returns the number of samples the Fisher was estimated from.
    """
    total = estimate_fisher(model, batches, log_prob_fn)
    for layer in blip_layers(model):
        layer.end_task(task, zero_bit_weights=zero_bit_weights, generator=generator)
    return total


@dataclass(frozen=True)
class Capacity:
    """Fraction of the bit budget in use: ``sum(bits) / (max_bit * n_params)``."""

    total: float
    per_layer: dict[str, float]
    frozen_bits: int
    num_params: int


def capacity(model: nn.Module) -> Capacity:
    """Capacity used, in total and per quantized layer (named as in ``model.named_modules()``)."""
    per_layer: dict[str, float] = {}
    used = budget = params = 0
    for name, module in model.named_modules():
        if not isinstance(module, QuantMixin):
            continue
        layer_bits = sum(int(module.state(n, "bits").sum()) for n, _ in module.blip_params())
        layer_params = sum(p.numel() for _, p in module.blip_params())
        per_layer[name] = layer_bits / (module.max_bit * layer_params)
        used += layer_bits
        budget += module.max_bit * layer_params
        params += layer_params
    return Capacity(
        total=used / budget if budget else 0.0,
        per_layer=per_layer,
        frozen_bits=used,
        num_params=params,
    )
