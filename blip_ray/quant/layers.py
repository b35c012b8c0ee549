"""Quantized Linear and Conv2d layers that carry BLIP's per-parameter state as buffers.

The forward pass uses the continuous weights (as the official code does); quantization happens only
at task ends. Every piece of state lives in the module's ``state_dict``: for each of ``weight`` and
``bias`` the buffers ``<name>_bits``, ``<name>_prev``, ``<name>_fisher``, ``<name>_fisher_old``,
``<name>_lower`` and ``<name>_upper`` (the precomputed clipping interval).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn

from blip_ray.quant.formulas import (
    DEFAULT_ZERO_BIT_WEIGHTS,
    ZeroBitWeights,
    allocate_bits,
    clip_bounds,
    quantize,
    quantize_task_end,
    update_fisher_old,
)

Variant = Literal["classification", "rl"]
VARIANTS: tuple[str, ...] = ("classification", "rl")
DEFAULT_MAX_BIT = 20
#: Most bits a parameter can freeze (``2^-bits`` steps stay far above float32's resolution).
MAX_BIT_LIMIT = 30
#: Bias range in both variants of the official code.
BIAS_BOUND = 1.0
PARAM_NAMES = ("weight", "bias")


class QuantMixin:
    """BLIP state and per-task operations shared by :class:`QuantLinear` and :class:`QuantConv2d`.

    ``variant`` picks the paper's two parameterisations: ``classification`` uses
    ``bound = 6/sqrt(fan_in)``, prior scale ``fan_in`` and N(0, 1/fan_in) init; ``rl`` uses
    ``m = max(fan_in, fan_out)`` for both, with orthogonal init (ReLU gain).
    """

    variant: str
    max_bit: int
    prior_scale: float
    bounds: dict[str, float]

    def _init_blip(self, *, variant: str, f_prior: float, max_bit: int) -> None:
        if variant not in VARIANTS:
            raise ValueError(f"unknown BLIP variant {variant!r}; use one of {', '.join(VARIANTS)}")
        if not 1 <= max_bit <= MAX_BIT_LIMIT:
            raise ValueError(f"max_bit must be in [1, {MAX_BIT_LIMIT}], got {max_bit}")
        if f_prior < 0 or not math.isfinite(f_prior):
            raise ValueError(f"F_prior must be a finite number >= 0, got {f_prior}")
        fan_in, fan_out = _fans(self.weight)
        scale = fan_in if variant == "classification" else max(fan_in, fan_out)
        self.variant, self.max_bit, self.prior_scale = variant, max_bit, float(scale)
        self.bounds = {"weight": 6.0 / math.sqrt(scale), "bias": BIAS_BOUND}
        self._reset_values(variant, fan_in)
        for name, param in self.blip_params():
            self.register_buffer(f"{name}_bits", torch.zeros_like(param, dtype=torch.int8))
            self.register_buffer(f"{name}_prev", torch.zeros_like(param))
            self.register_buffer(f"{name}_fisher", torch.zeros_like(param))
            self.register_buffer(f"{name}_fisher_old", torch.zeros_like(param))
            # clip_bounds at prev = 0, bits = 0, without temporaries on a large trunk
            outer = self.bounds[name] * (1.0 - 2.0**-max_bit)
            self.register_buffer(f"{name}_lower", torch.full_like(param, -outer))
            self.register_buffer(f"{name}_upper", torch.full_like(param, outer))
        self.set_f_prior(f_prior)

    @torch.no_grad()
    def _reset_values(self, variant: str, fan_in: int) -> None:
        bound = self.bounds["weight"]
        if variant == "classification":
            nn.init.normal_(self.weight, 0.0, 1.0 / math.sqrt(fan_in))
        else:
            nn.init.orthogonal_(self.weight, gain=nn.init.calculate_gain("relu"))
        self.weight.clamp_(-bound, bound)
        if self.bias is not None:
            self.bias.zero_()

    def blip_params(self) -> list[tuple[str, nn.Parameter]]:
        """``(name, parameter)`` for the weight and, when present, the bias."""
        return [(n, getattr(self, n)) for n in PARAM_NAMES if getattr(self, n) is not None]

    def state(self, name: str, key: str) -> torch.Tensor:
        """The buffer ``<name>_<key>``, e.g. ``state("weight", "bits")``."""
        return getattr(self, f"{name}_{key}")

    @torch.no_grad()
    def set_f_prior(self, f_prior: float) -> None:
        """Set ``fisher_old = F_prior * s`` (s: the variant's prior scale) before the first task."""
        for name, _ in self.blip_params():
            self.state(name, "fisher_old").fill_(f_prior * self.prior_scale)

    @torch.no_grad()
    def clip_(self) -> None:
        """BLIP's per-optimizer-step clipping: one clamp per tensor between precomputed bounds.

        On the hot path of every step, so the buffers are addressed directly.
        """
        self.weight.clamp_(self.weight_lower, self.weight_upper)
        if self.bias is not None:
            self.bias.clamp_(self.bias_lower, self.bias_upper)

    @torch.no_grad()
    def end_task(
        self,
        task: int,
        *,
        zero_bit_weights: ZeroBitWeights = DEFAULT_ZERO_BIT_WEIGHTS,
        generator: torch.Generator | None = None,
    ) -> None:
        """Bits from the stored Fisher, then ``w = prev = quantize(w)``, ``fisher_old`` update.

        Expects the ``*_fisher`` buffers to hold the task's Fisher (see ``estimate_fisher``).
        ``zero_bit_weights`` and ``generator``: what the parameters left with 0 bits hold (see
        ``quantize_task_end``); their clip interval is then ``bound`` around that value.
        """
        for name, param in self.blip_params():
            bits, fisher = self.state(name, "bits"), self.state(name, "fisher")
            fisher_old = self.state(name, "fisher_old")
            if not (fisher_old > 0).all():
                raise ValueError(
                    "F_prior must be > 0 before a BLIP task end; set it with set_f_prior"
                )
            bits.copy_(allocate_bits(bits, fisher, fisher_old, task=task, max_bit=self.max_bit))
            param.copy_(
                quantize_task_end(
                    param,
                    bits,
                    self.bounds[name],
                    zero_bit_weights=zero_bit_weights,
                    generator=generator,
                )
            )
            self.state(name, "prev").copy_(param)
            fisher_old.copy_(update_fisher_old(fisher, fisher_old, task=task))
            fisher.zero_()
            lower, upper = clip_bounds(param, bits, self.bounds[name], max_bit=self.max_bit)
            self.state(name, "lower").copy_(lower)
            self.state(name, "upper").copy_(upper)

    def quantized(self, name: str) -> torch.Tensor:
        """The parameter ``name`` quantized with its current bits (for inspection and tests)."""
        return quantize(getattr(self, name), self.state(name, "bits"), self.bounds[name])


class QuantLinear(QuantMixin, nn.Linear):
    """``nn.Linear`` with BLIP state; drop-in for a trunk's linear layers."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        *,
        variant: Variant = "classification",
        f_prior: float = 0.0,
        max_bit: int = DEFAULT_MAX_BIT,
    ) -> None:
        super().__init__(in_features, out_features, bias=bias)
        self._init_blip(variant=variant, f_prior=f_prior, max_bit=max_bit)


class QuantConv2d(QuantMixin, nn.Conv2d):
    """``nn.Conv2d`` (groups=1, zero padding) with BLIP state."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] = 0,
        bias: bool = True,
        *,
        variant: Variant = "classification",
        f_prior: float = 0.0,
        max_bit: int = DEFAULT_MAX_BIT,
    ) -> None:
        super().__init__(
            in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=bias
        )
        self._init_blip(variant=variant, f_prior=f_prior, max_bit=max_bit)


def _fans(weight: torch.Tensor) -> tuple[int, int]:
    """``(fan_in, fan_out)`` as the official code counts them: conv fan_in = C_in*k_h*k_w."""
    return weight.shape[1] * math.prod(weight.shape[2:]), weight.shape[0]
