"""BLIP core in pure PyTorch: quantized layers, Fisher, bit allocation, clipping, capacity."""

from blip_ray.quant.blip import (
    Capacity,
    blip_layers,
    capacity,
    clip_,
    end_task,
    estimate_fisher,
    set_f_prior,
)
from blip_ray.quant.fisher import LogProbFn, sampled_label_log_prob, squared_grad_sums
from blip_ray.quant.formulas import (
    DEFAULT_ZERO_BIT_WEIGHTS,
    ZERO_BIT_WEIGHTS,
    ZeroBitWeights,
    allocate_bits,
    clip_bounds,
    quantize,
    quantize_task_end,
    update_fisher_old,
)
from blip_ray.quant.layers import DEFAULT_MAX_BIT, QuantConv2d, QuantLinear, QuantMixin

__all__ = [
    "DEFAULT_MAX_BIT",
    "DEFAULT_ZERO_BIT_WEIGHTS",
    "ZERO_BIT_WEIGHTS",
    "Capacity",
    "LogProbFn",
    "QuantConv2d",
    "QuantLinear",
    "QuantMixin",
    "ZeroBitWeights",
    "allocate_bits",
    "blip_layers",
    "capacity",
    "clip_",
    "clip_bounds",
    "end_task",
    "estimate_fisher",
    "quantize",
    "quantize_task_end",
    "sampled_label_log_prob",
    "set_f_prior",
    "squared_grad_sums",
    "update_fisher_old",
]
