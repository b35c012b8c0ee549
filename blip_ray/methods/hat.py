"""HAT, Hard Attention to the Task (Serra, Suris, Miron & Karatzoglou 2018).

Reference: the official code, github.com/joansj/hat: ``src/approaches/hat.py`` (``lamb = 0.75``
and ``smax = 400``, chosen by the authors' grid search; ``thres_cosh = 50``, ``thres_emb = 6``)
and ``src/networks/mlp_hat.py`` / ``alexnet_hat.py`` (a task embedding per layer, gate
``sigmoid(s * e_t)`` on each layer's units, ``get_view_for``: a weight's mask is the min of its
output unit's and input unit's accumulated gates).

Per training minibatch at position ``i`` of ``n`` samples, ``s = 1/smax + (smax - 1/smax) i / n``;
the loss adds ``lamb * sum(gate * (1 - mask_pre)) / sum(1 - mask_pre)`` (all units on the first
task); after the backward pass each weight's gradient is multiplied by ``1 - mask_pre`` of its
units, and each embedding's by ``smax / s * (cosh(clamp(s e, +-thres_cosh)) + 1) / (cosh(e) + 1)``
(the reference's compensation, ``cosh(e)`` without ``s`` in the denominator as written there);
after the step the embeddings are clamped to ``+-thres_emb``. At a task end the task's gates at
``s = smax`` join ``mask_pre`` by an element-wise max. Evaluation of task t uses its gates at
``s = smax`` (binary but where an embedding is within about 0.02 of 0). The optimizer is new for
every task (the task loop's rule). Runs on chain trunks of plain layers (mlp, alexnet32/84 and
the RL trunks). RL: ``s`` anneals over each PPO epoch's minibatches; env runners act at ``smax``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch

from blip_ray.methods.base import (
    ContinualMethod,
    MethodConfig,
    Model,
    TaskSamples,
    register_method,
    require,
    tensor_bytes,
)
from blip_ray.models.task_state import TaskConv2d, TaskLinear, task_layers


@dataclasses.dataclass(frozen=True)
class HatConfig(MethodConfig):
    """HAT's settings (the reference's ``Appr`` defaults)."""

    lamb: float = 0.75
    """Weight of the attention-sparsity regulariser."""
    smax: float = 400.0
    """Largest gate temperature ``s`` (reached at the end of each epoch and used to evaluate)."""
    thres_cosh: float = 50.0
    """Clamp of ``s e`` inside the compensation's ``cosh``."""
    thres_emb: float = 6.0
    """Embeddings are clamped to ``[-thres_emb, thres_emb]`` after every step."""

    def __post_init__(self) -> None:
        require(self, "lamb", math.isfinite(self.lamb) and self.lamb >= 0, "a finite number >= 0")
        require(self, "smax", math.isfinite(self.smax) and self.smax >= 1, "a finite number >= 1")
        require(self, "thres_cosh", self.thres_cosh > 0, "> 0")
        require(self, "thres_emb", self.thres_emb > 0, "> 0")


def units(layer: TaskLinear | TaskConv2d) -> int:
    """Output units of a layer (features, or channels)."""
    return layer.out_features if isinstance(layer, TaskLinear) else layer.out_channels


def weight_view(
    layer: TaskLinear | TaskConv2d, post: torch.Tensor, pre: torch.Tensor | None
) -> torch.Tensor:
    """The reference's ``get_view_for``: each weight's mask, the min of its output unit's (``post``)
    and input unit's (``pre``, the previous layer's; a flattened conv output repeats each channel
    over its positions) values; the first layer has no ``pre``."""
    shape = (-1,) + (1,) * (layer.weight.dim() - 1)
    view = post.view(shape).expand_as(layer.weight)
    if pre is None:
        return view
    inputs = layer.weight.shape[1]
    if inputs != len(pre):
        pre = pre.repeat_interleave(inputs // len(pre))
    pre_shape = (1, -1) + (1,) * (layer.weight.dim() - 2)
    return torch.minimum(view, pre.view(pre_shape).expand_as(layer.weight))


@register_method("hat")
class HatMethod(ContinualMethod):
    """A learned, nearly binary attention mask per task and layer; gradients of units earlier
    tasks attend to are blocked."""

    config_class = HatConfig
    tracks = ("supervised", "rl")
    capacity_label = "units used"
    trunk_task_state = "gates"

    def setup(self, model: Model) -> None:
        self.layers = task_layers(model.trunk)
        if not self.layers or any(layer.task_state != "gates" for layer in self.layers):
            raise ValueError("hat needs a plain trunk built with task_state='gates'")
        _check_chain(self.layers)
        for layer in self.layers:  # the layers evaluate (and act) at smax
            layer.gate_smax.fill_(self.config.smax)
        self.s = 1.0 / self.config.smax
        self.mask_pre: list[torch.Tensor] | None = None

    def task_gates(self, model: Model, task: int, s: float) -> list[torch.Tensor]:
        """``sigmoid(s * e_task)`` of every layer."""
        return [layer.task_gate(task, s) for layer in self.layers]

    def embeddings(self) -> list[torch.nn.Parameter]:
        return [layer.gate_embedding for layer in self.layers]

    def before_batch(self, model: Model, task_id: int, *, epoch_fraction: float) -> None:
        smax = self.config.smax
        self.s = (smax - 1.0 / smax) * epoch_fraction + 1.0 / smax
        for layer in self.layers:
            layer.gate_s = self.s

    def penalty(self, model: Model, task_id: int, inputs: torch.Tensor) -> torch.Tensor | None:
        gates = [layer.last_gate for layer in self.layers]  # of the minibatch's forward
        if self.mask_pre is None:
            reg = sum(gate.sum() for gate in gates)
            count = sum(gate.numel() for gate in gates)
        else:
            free = [1 - mask for mask in self.mask_pre]
            reg = sum((gate * f).sum() for gate, f in zip(gates, free, strict=True))
            count = float(sum(f.sum() for f in free))
        if count == 0:  # every unit is taken: nothing left to keep sparse
            return None
        return self.config.lamb * reg / count

    def before_step(self, model: Model, task_id: int) -> None:
        if self.mask_pre is not None:
            previous = None
            for layer, mask in zip(self.layers, self.mask_pre, strict=True):
                if layer.weight.grad is not None:
                    layer.weight.grad.mul_(1 - weight_view(layer, mask, previous))
                if layer.bias is not None and layer.bias.grad is not None:
                    layer.bias.grad.mul_(1 - mask)
                previous = mask
        smax, s = self.config.smax, self.s
        bound = self.config.thres_cosh
        for emb in self.embeddings():
            if emb.grad is not None:
                e = emb.detach()
                num = torch.cosh(torch.clamp(s * e, -bound, bound))
                emb.grad.mul_(smax / s * (num + 1) / (torch.cosh(e) + 1))

    def after_step(self, model: Model, task_id: int) -> None:
        with torch.no_grad():
            for emb in self.embeddings():
                emb.clamp_(-self.config.thres_emb, self.config.thres_emb)

    def after_task(self, model: Model, task_id: int, *, samples: TaskSamples) -> None:
        with torch.no_grad():
            mask = self.task_gates(model, task_id, self.config.smax)
        if self.mask_pre is None:
            self.mask_pre = mask
        else:
            self.mask_pre = [torch.maximum(a, b) for a, b in zip(self.mask_pre, mask, strict=True)]

    def capacity(self, model: Model) -> float | None:
        """Fraction of the trunk's units some finished task attends to (gate > 0.5)."""
        if self.mask_pre is None:
            return 0.0
        used = sum(int((mask > 0.5).sum()) for mask in self.mask_pre)
        return used / sum(mask.numel() for mask in self.mask_pre)

    def state_bytes(self, model: Model) -> int:
        """The accumulated mask and the task embeddings (one row per task of the sequence, kept
        in the model): constant in the number of tasks."""
        return tensor_bytes(self.state_dict()) + tensor_bytes(self.embeddings())

    def state_dict(self) -> dict[str, Any]:
        return {"mask_pre": self.mask_pre}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.mask_pre = None if state["mask_pre"] is None else list(state["mask_pre"])


def _check_chain(layers: list[TaskLinear | TaskConv2d]) -> None:
    """HAT's weight masks pair each layer with the one before it: refuse a trunk with branches."""
    for before, layer in zip(layers, layers[1:], strict=False):
        inputs = layer.in_features if isinstance(layer, TaskLinear) else layer.in_channels
        if inputs % units(before):
            raise ValueError(
                "hat needs a chain trunk (mlp, alexnet32, alexnet84, atari_cnn, the RL mlp); "
                f"a layer of {inputs} inputs follows one of {units(before)} units"
            )
