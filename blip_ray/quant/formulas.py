"""BLIP's elementwise formulas, exactly as the official code computes them.

Everything here is a pure function of tensors: the layers in ``layers.py`` hold the state and call
these, and the tests compare them against a direct evaluation of the formulas in DESIGN.md.
"""

from __future__ import annotations

import math

import torch

#: C = 0.5 / ln 2 turns the natural-log ratio of averaged Fisher into bits (paper Sec. 4.4).
INFO_GAIN_SCALE = 0.5 / math.log(2.0)


def quantize(weights: torch.Tensor, bits: torch.Tensor, bound: float) -> torch.Tensor:
    """``round(w / bound * 2^bits) / 2^bits * bound``; parameters with 0 bits quantize to 0."""
    scale = torch.exp2(bits.to(weights.dtype))
    quantized = torch.round(weights / bound * scale) / scale * bound
    return torch.where(bits > 0, quantized, torch.zeros_like(quantized))


def allocate_bits(
    bits: torch.Tensor,
    fisher: torch.Tensor,
    fisher_old: torch.Tensor,
    *,
    task: int,
    max_bit: int,
) -> torch.Tensor:
    """New bit allocation after 0-based task ``task``.

    ``ig = C ln((F + (t+1) F_old) / ((t+2) F_old))``;
    ``bits = min(bits + max(ceil(ig), 0), max_bit)``. ``ceil(ig)`` is clamped to ``[0, max_bit]``
    before the integer cast so a huge (even infinite) gain cannot overflow; the result is the same.
    """
    gain = INFO_GAIN_SCALE * torch.log(
        (fisher + (task + 1) * fisher_old) / ((task + 2) * fisher_old)
    )
    if torch.isnan(gain).any():
        raise FloatingPointError(
            "BLIP information gain is NaN: the Fisher has NaN entries or F_prior is 0; "
            "check the loss for NaN and set F_prior > 0"
        )
    extra = torch.ceil(gain).clamp_(0, max_bit).to(bits.dtype)
    return torch.clamp(bits + extra, max=max_bit)


def update_fisher_old(fisher: torch.Tensor, fisher_old: torch.Tensor, *, task: int) -> torch.Tensor:
    """Running mean of the Fisher (the prior is one pseudo-task): ``((t+1) F_old + F) / (t+2)``."""
    return ((task + 1) * fisher_old + fisher) / (task + 2)


def clip_bounds(
    prev: torch.Tensor, bits: torch.Tensor, bound: float, *, max_bit: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-element ``(lower, upper)`` that turn BLIP's two-step clipping into one clamp.

    The official step is ``w = prev + clamp(w - prev, -bound 2^-bits, bound 2^-bits)`` followed by
    ``w = clamp(w, -bound (1 - 2^-max_bit), bound (1 - 2^-max_bit))``. Composing two clamps is one
    clamp between ``max`` of the lower and ``min`` of the upper limits; the interval is never empty
    because ``|prev| <= bound`` on a grid of ``bound 2^-bits`` with ``bits <= max_bit``.
    """
    step = bound * torch.exp2(-bits.to(prev.dtype))
    outer = bound * (1.0 - 2.0**-max_bit)
    lower = torch.clamp(prev - step, min=-outer)
    upper = torch.clamp(prev + step, max=outer)
    return lower, upper
