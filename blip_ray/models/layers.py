"""Trunk layers from :class:`ModelOptions`: the one place that decides plain, quantized (BLIP) or
Bayesian (UCL).

Every network builds its trunk's Linear/Conv2d layers here, so "quantized or Bayesian trunk, plain
heads" and the init of each variant hold for all of them by construction. A plain trunk layer is a
:class:`~blip_ray.models.task_state.TaskLinear`/``TaskConv2d``, which may carry per-task state
(``ModelOptions.task_state``: HAT's gates, PackNet's weight owners); without it, it is exactly the
plain ``nn.Linear``/``nn.Conv2d``.
"""

from __future__ import annotations

from typing import Any, TypeVar

from torch import nn

from blip_ray.models.base import ModelOptions
from blip_ray.models.bayesian import BayesianConv2d, BayesianLinear
from blip_ray.models.task_state import TaskConv2d, TaskLinear
from blip_ray.quant.layers import QuantConv2d, QuantLinear

LayerT = TypeVar("LayerT", nn.Linear, nn.Conv2d)


def trunk_linear(
    options: ModelOptions, in_features: int, out_features: int, *, bias: bool = True
) -> nn.Linear | BayesianLinear:
    """A trunk ``Linear``: BLIP's :class:`QuantLinear` when ``options.quantized``, UCL's
    :class:`BayesianLinear` when ``options.bayesian``, else plain."""
    if options.bayesian:
        return BayesianLinear(in_features, out_features, bias=bias, ratio=options.ratio)
    if options.quantized:
        return QuantLinear(in_features, out_features, bias=bias, **_quantized(options))
    layer = TaskLinear(in_features, out_features, bias=bias, **_task_state(options))
    return _plain_init(layer, options.variant)


def trunk_conv(
    options: ModelOptions,
    in_channels: int,
    out_channels: int,
    *,
    kernel_size: int,
    stride: int = 1,
    padding: int = 0,
    bias: bool = True,
) -> nn.Conv2d | BayesianConv2d:
    """A trunk ``Conv2d``: BLIP's :class:`QuantConv2d` when ``options.quantized``, UCL's
    :class:`BayesianConv2d` when ``options.bayesian``, else plain."""
    shape = {"stride": stride, "padding": padding, "bias": bias}
    if options.bayesian:
        return BayesianConv2d(in_channels, out_channels, kernel_size, ratio=options.ratio, **shape)
    if options.quantized:
        return QuantConv2d(in_channels, out_channels, kernel_size, **shape, **_quantized(options))
    conv = TaskConv2d(in_channels, out_channels, kernel_size, **shape, **_task_state(options))
    return _plain_init(conv, options.variant)


def _quantized(options: ModelOptions) -> dict[str, Any]:
    return {"variant": options.variant, "max_bit": options.max_bit}


def _task_state(options: ModelOptions) -> dict[str, Any]:
    return {"num_tasks": len(options.head_sizes), "task_state": options.task_state}


def _plain_init(layer: LayerT, variant: str) -> LayerT:
    """PyTorch's default init, as the official image baselines; ``rl``: the official RL baselines'
    ``CNNBase`` init (orthogonal with ReLU gain, zero bias), so fine-tuning and EWC start alike."""
    if variant == "rl":
        nn.init.orthogonal_(layer.weight, gain=nn.init.calculate_gain("relu"))
        if layer.bias is not None:
            nn.init.zeros_(layer.bias)
    return layer


def scaled(base: int, width: float) -> int:
    """``round(base * width)``, the official width rule (e.g. 64 x 0.8 -> 51), at least 1."""
    return max(1, round(base * width))


def conv_output_size(size: int, kernel_size: int, *, stride: int = 1, padding: int = 0) -> int:
    """Spatial size after a convolution (PyTorch's floor rule)."""
    return (size + 2 * padding - kernel_size) // stride + 1


def image_shape(options: ModelOptions, network: str) -> tuple[int, int, int]:
    """``(channels, height, width)`` from ``options.input_shape``; a clear error otherwise."""
    if len(options.input_shape) != 3:
        raise ValueError(
            f"{network} needs a channels-first image shape (C, H, W), got {options.input_shape}"
        )
    channels, height, width = options.input_shape
    return channels, height, width


def reject_fc_width(options: ModelOptions, network: str) -> None:
    """Networks without one fully connected width refuse ``fc_width`` rather than ignore it."""
    if options.fc_width is not None:
        raise ValueError(f"{network} has no fc_width rule; leave fc_width unset")
