"""Trunk layers from :class:`ModelOptions`: the one place that decides plain versus quantized.

Every network builds its trunk's Linear/Conv2d layers here, so "quantized trunk, plain heads" and
the init of each variant hold for all of them by construction. A plain trunk layer is task-aware
(:class:`TaskLinear`, :class:`TaskConv2d`): a method that gives each task its own part of the
network sets, per forward, an element-wise ``weight_mask`` (PackNet's weights owned by tasks up to
the one evaluated) and a per-output-unit ``unit_gate`` (HAT's attention). Unset, both cost nothing
and the layer is the plain ``nn.Linear``/``nn.Conv2d`` (same parameters, same state dict).
"""

from __future__ import annotations

from typing import TypeVar

import torch
from torch import nn
from torch.nn import functional as F

from blip_ray.models.base import ModelOptions
from blip_ray.quant.layers import QuantConv2d, QuantLinear

LayerT = TypeVar("LayerT", nn.Linear, nn.Conv2d)


class TaskLinear(nn.Linear):
    """A plain trunk ``Linear`` that a task-aware method can modulate per forward.

    ``weight_mask`` multiplies the weight element-wise; ``unit_gate`` (one value per output unit)
    multiplies the output. The gate acts before the activation that follows, which equals gating
    after it for ReLU, max-pooling and dropout (a gate >= 0 per unit commutes with each) and for
    any activation once the gate is binary.
    """

    weight_mask: torch.Tensor | None = None
    unit_gate: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight if self.weight_mask is None else self.weight * self.weight_mask
        out = F.linear(x, weight, self.bias)
        return out if self.unit_gate is None else out * self.unit_gate


class TaskConv2d(nn.Conv2d):
    """A plain trunk ``Conv2d`` with :class:`TaskLinear`'s ``weight_mask`` and ``unit_gate`` (one
    value per output channel)."""

    weight_mask: torch.Tensor | None = None
    unit_gate: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight if self.weight_mask is None else self.weight * self.weight_mask
        out = self._conv_forward(x, weight, self.bias)
        return out if self.unit_gate is None else out * self.unit_gate.view(1, -1, 1, 1)


def task_layers(trunk: nn.Module) -> list[TaskLinear | TaskConv2d]:
    """The trunk's task-aware layers in registration order (forward order for chain trunks)."""
    return [m for m in trunk.modules() if isinstance(m, TaskLinear | TaskConv2d)]


def trunk_linear(
    options: ModelOptions, in_features: int, out_features: int, *, bias: bool = True
) -> nn.Linear:
    """A trunk ``Linear``: BLIP's :class:`QuantLinear` when ``options.quantized``, else plain."""
    if options.quantized:
        return QuantLinear(
            in_features,
            out_features,
            bias=bias,
            variant=options.variant,  # type: ignore[arg-type]
            max_bit=options.max_bit,
        )
    return _plain_init(TaskLinear(in_features, out_features, bias=bias), options.variant)


def trunk_conv(
    options: ModelOptions,
    in_channels: int,
    out_channels: int,
    *,
    kernel_size: int,
    stride: int = 1,
    padding: int = 0,
    bias: bool = True,
) -> nn.Conv2d:
    """A trunk ``Conv2d``: BLIP's :class:`QuantConv2d` when ``options.quantized``, else plain."""
    if options.quantized:
        return QuantConv2d(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=padding,
            bias=bias,
            variant=options.variant,  # type: ignore[arg-type]
            max_bit=options.max_bit,
        )
    conv = TaskConv2d(
        in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=bias
    )
    return _plain_init(conv, options.variant)


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
