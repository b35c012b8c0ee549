"""BLIP's elementwise formulas, exactly as the official code computes them.

Everything here is a pure function of tensors: the layers in ``layers.py`` hold the state and call
these, and the tests compare them against a direct evaluation of the formulas in DESIGN.md.
"""

from __future__ import annotations

import math
import typing
from typing import Literal

import torch

#: C = 0.5 / ln 2 turns the natural-log ratio of averaged Fisher into bits (paper Sec. 4.4).
INFO_GAIN_SCALE = 0.5 / math.log(2.0)

#: What a parameter with 0 bits (none frozen: nothing to preserve) holds after a task end:
#: ``zero`` (the official code's), ``keep`` (its trained value) or ``reinit`` (uniform in its
#: range). The official quantizer has the first and leaves the other two commented out beside it.
ZeroBitWeights = Literal["zero", "keep", "reinit"]
ZERO_BIT_WEIGHTS: tuple[str, ...] = typing.get_args(ZeroBitWeights)
DEFAULT_ZERO_BIT_WEIGHTS: ZeroBitWeights = "zero"


def quantize(weights: torch.Tensor, bits: torch.Tensor, bound: float) -> torch.Tensor:
    """``round(w / bound * 2^bits) / 2^bits * bound``; parameters with 0 bits quantize to 0."""
    scale = torch.exp2(bits.to(weights.dtype))
    quantized = torch.round(weights / bound * scale) / scale * bound
    return torch.where(bits > 0, quantized, torch.zeros_like(quantized))


def quantize_task_end(
    weights: torch.Tensor,
    bits: torch.Tensor,
    bound: float,
    *,
    zero_bit_weights: ZeroBitWeights,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """:func:`quantize`, with the 0-bit parameters set by the rule ``zero_bit_weights``.

    ``zero``: 0 (``out[bit_alloc==0] = 0.0``); ``keep``: the trained value, unrounded (the
    official ``out[bit_alloc==0] = input[bit_alloc==0]`` divides by ``bound`` and multiplies back,
    which may move it by an ulp); ``reinit``: ``uniform(-1, 1) * bound``, drawn for the whole
    tensor as the official ``torch.empty_like(input).uniform_(-1.0,1.0)`` on the normalized
    scale, from ``generator`` (None: torch's default one, which the run seeds). Parameters with
    bits keep their quantized value under every rule.
    """
    quantized = quantize(weights, bits, bound)
    if zero_bit_weights == "zero":
        return quantized
    if zero_bit_weights == "keep":
        unfrozen = weights
    elif zero_bit_weights == "reinit":
        unfrozen = torch.empty_like(weights).uniform_(-1.0, 1.0, generator=generator) * bound
    else:
        raise ValueError(
            f"zero_bit_weights: must be one of {', '.join(ZERO_BIT_WEIGHTS)}, "
            f"got {zero_bit_weights!r}"
        )
    return torch.where(bits > 0, quantized, unfrozen)


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
    because ``|prev| <= bound``: on a grid of ``bound 2^-bits`` with ``bits <= max_bit``, or
    anywhere in the range for 0 bits (whose step is the whole ``bound``).
    """
    step = bound * torch.exp2(-bits.to(prev.dtype))
    outer = bound * (1.0 - 2.0**-max_bit)
    lower = torch.clamp(prev - step, min=-outer)
    upper = torch.clamp(prev + step, max=outer)
    return lower, upper
