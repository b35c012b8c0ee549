"""Exact sums of squared per-sample gradients for Linear and Conv2d layers (BLIP's Fisher).

The official estimator (``blip_utils.estimate_fisher``) evaluates
``loss = -mean_i log p(y_i | x_i)`` over a minibatch of N inputs, with y_i sampled from the
model's own predictive distribution, and
adds the squares of the per-sample gradients *of that mean loss*. Each per-sample gradient
therefore carries a 1/N factor and the stored value is ``E[g^2] / N^2``; the paper's F_prior values
assume this scale, so it is kept here.

Per-sample gradients are never formed by copying weights: a linear layer's sum over samples of
squared per-sample gradients is ``(dy^2)^T @ (x^2)``, one matrix product; a conv layer's per-sample
gradients come from ``unfold`` plus a batched matmul, in chunks bounded in memory.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

#: ``log_prob_fn(model, batch) -> Tensor[N]``: log-probability of a target sampled from the model.
LogProbFn = Callable[[nn.Module, Any], torch.Tensor]

#: Upper bound on the elements of one chunk of conv per-sample gradients (64 MiB of float32).
CONV_CHUNK_ELEMENTS = 16 * 1024 * 1024


def sampled_label_log_prob(logits: torch.Tensor) -> torch.Tensor:
    """``log p(y | x)`` for ``y ~ Categorical(logits)``: the true (not empirical) Fisher target."""
    log_probs = F.log_softmax(logits, dim=-1)
    with torch.no_grad():
        targets = torch.multinomial(log_probs.exp(), 1)
    return log_probs.gather(-1, targets).squeeze(-1)


def squared_grad_sums(
    model: nn.Module,
    batches: Iterable[Any],
    log_prob_fn: LogProbFn,
    layers: list[nn.Module],
    *,
    out: dict[nn.Module, dict[str, torch.Tensor]] | None = None,
) -> tuple[dict[nn.Module, dict[str, torch.Tensor]], int]:
    """Sum over samples of squared per-sample gradients of each minibatch's mean loss.

    Returns ``({layer: {"weight": ..., "bias": ...}}, total_samples)``; dividing by
    ``total_samples`` gives BLIP's Fisher. ``layers`` must be ``nn.Linear`` / ``nn.Conv2d`` modules
    of ``model``, each called once per forward pass. ``out`` (zeroed tensors shaped like the
    parameters) receives the sums in place, saving a copy of the trunk. The model is put in eval
    mode (dropout off) and restored afterwards.
    """
    for layer in layers:
        _check_supported(layer)
    sums = out
    if sums is None:
        sums = {layer: {n: torch.zeros_like(p) for n, p in _params(layer)} for layer in layers}
    captured: dict[nn.Module, tuple[torch.Tensor, torch.Tensor, int]] = {}

    def hook(layer: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        if layer in captured:
            raise RuntimeError(
                "a BLIP layer ran twice in one forward pass; weight sharing is not supported"
            )
        captured[layer] = (inputs[0].detach(), output, output._version)

    handles = [layer.register_forward_hook(hook) for layer in layers]
    was_training = model.training
    model.eval()
    total = 0
    try:
        for batch in batches:
            captured.clear()
            with torch.enable_grad():
                log_probs = log_prob_fn(model, batch)
                present = [layer for layer in layers if layer in captured]
                outputs = [captured[layer][1] for layer in present]
                if any(captured[la][1]._version != captured[la][2] for la in present):
                    raise RuntimeError(
                        "an in-place operation (e.g. ReLU(inplace=True)) overwrote a BLIP "
                        "layer's output, so its per-sample gradients would be wrong; "
                        "use inplace=False after quantized layers"
                    )
                grads = torch.autograd.grad(-log_probs.mean(), outputs, allow_unused=True)
            for layer, grad_out in zip(present, grads, strict=True):
                if grad_out is not None:
                    _accumulate(layer, captured[layer][0], grad_out, sums[layer])
            total += log_probs.shape[0]
    finally:
        for handle in handles:
            handle.remove()
        captured.clear()
        model.train(was_training)
    return sums, total


def _params(layer: nn.Module) -> list[tuple[str, torch.Tensor]]:
    return [(n, getattr(layer, n)) for n in ("weight", "bias") if getattr(layer, n) is not None]


def _check_supported(layer: nn.Module) -> None:
    if isinstance(layer, nn.Conv2d):
        if layer.groups != 1 or layer.padding_mode != "zeros" or isinstance(layer.padding, str):
            raise ValueError(
                "per-sample Fisher supports Conv2d with groups=1 and numeric zero padding"
            )
    elif not isinstance(layer, nn.Linear):
        raise TypeError(
            f"per-sample Fisher supports nn.Linear and nn.Conv2d, not {type(layer).__name__}"
        )


@torch.no_grad()
def _accumulate(
    layer: nn.Module, inputs: torch.Tensor, grad_out: torch.Tensor, sums: dict[str, torch.Tensor]
) -> None:
    if isinstance(layer, nn.Conv2d):
        _accumulate_conv(layer, inputs, grad_out, sums)
        return
    if inputs.dim() == 2:
        # sum_i (dy_i x_i^T)^2 = (dy^2)^T (x^2): exact, and one matmul for the whole batch.
        sums["weight"].addmm_(grad_out.square().t(), inputs.square())
        if "bias" in sums:
            sums["bias"].add_(grad_out.square().sum(0))
        return
    # Extra (sequence) dims: a per-sample gradient sums over them before squaring.
    per_sample = torch.einsum("n...o,n...i->noi", grad_out, inputs)
    sums["weight"].add_(per_sample.square().sum(0))
    if "bias" in sums:
        sums["bias"].add_(grad_out.flatten(1, -2).sum(1).square().sum(0))


def _accumulate_conv(
    layer: nn.Conv2d, inputs: torch.Tensor, grad_out: torch.Tensor, sums: dict[str, torch.Tensor]
) -> None:
    n, c_out = grad_out.shape[:2]
    dy = grad_out.reshape(n, c_out, -1)  # (N, C_out, L)
    if "bias" in sums:
        sums["bias"].add_(dy.sum(2).square().sum(0))
    weight_sum = sums["weight"].view(c_out, -1)
    per_sample_elems = weight_sum.numel() + dy.shape[2] * weight_sum.shape[1]
    chunk = max(1, CONV_CHUNK_ELEMENTS // per_sample_elems)
    for start in range(0, n, chunk):
        cols = F.unfold(
            inputs[start : start + chunk],
            layer.kernel_size,
            dilation=layer.dilation,
            padding=layer.padding,
            stride=layer.stride,
        )  # (chunk, C_in*k_h*k_w, L)
        per_sample = torch.bmm(dy[start : start + chunk], cols.transpose(1, 2))
        weight_sum.add_(per_sample.square_().sum(0))
