"""Trunk layers with per-task state: the one task-aware forward HAT and PackNet share.

:func:`blip_ray.models.layers.trunk_linear` and ``trunk_conv`` build every plain trunk layer as a
:class:`TaskLinear`/:class:`TaskConv2d`; with ``ModelOptions.task_state`` unset they are exactly
``nn.Linear``/``nn.Conv2d`` (same parameters, same state dict). ``MultiHeadNet`` and the RL module
tell the layers which task a forward serves (:func:`set_task`).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

#: Owner of a weight no task holds yet (``weight_owner``): the next task trains it.
FREE_WEIGHT = -1


class TaskAware:
    """Per-task state of a plain trunk layer, held in the layer so every copy built from the same
    options (an RL env runner's module, a restarted run) carries it through the state dict.

    ``gates`` (HAT): a ``gate_embedding`` row per task; the layer's output is multiplied per unit
    by ``sigmoid(s * gate_embedding[task])``, with ``s = gate_s`` while training when a method
    sets it, else ``gate_smax`` (evaluation, acting). The gate acts before the activation that
    follows, which equals gating after it for ReLU, max-pooling and dropout (a gate >= 0 per unit
    commutes with each) and for any activation once the gate is binary.

    ``masks`` (PackNet): ``weight_owner``, the task owning each weight (:data:`FREE_WEIGHT`: none
    yet); task t's forward uses only the weights of tasks up to t (and free ones).

    ``task`` is the task the next forward serves; :func:`set_task` sets it on a whole trunk.
    """

    task: int = 0
    gate_s: float | None = None
    last_gate: torch.Tensor | None = None
    gate_embedding: nn.Parameter | None
    weight_owner: torch.Tensor | None
    weight: nn.Parameter

    def init_task_state(self, num_tasks: int, units: int, kind: str | None) -> None:
        if kind not in (None, "gates", "masks"):
            raise ValueError(f"task state must be gates or masks, got {kind!r}")
        embedding = torch.randn(num_tasks, units) if kind == "gates" else None  # nn.Embedding's
        self.gate_embedding = None if embedding is None else nn.Parameter(embedding)
        smax = torch.tensor(400.0) if kind == "gates" else None
        self.register_buffer("gate_smax", smax)  # type: ignore[attr-defined]
        owner = torch.full(self.weight.shape, FREE_WEIGHT, dtype=torch.int16)
        self.register_buffer("weight_owner", owner if kind == "masks" else None)  # type: ignore[attr-defined]
        self.plain = kind is None  # the plain layer's forward, with nothing looked up

    @property
    def task_state(self) -> str | None:
        if self.gate_embedding is not None:
            return "gates"
        return "masks" if self.weight_owner is not None else None

    def task_weight(self) -> torch.Tensor:
        if self.weight_owner is None:
            return self.weight
        return self.weight * (self.weight_owner <= self.task).to(self.weight.dtype)

    def task_gate(self, task: int, s: float | None = None) -> torch.Tensor | None:
        """The gate of ``task`` at temperature ``s`` (default: the forward's rule)."""
        if self.gate_embedding is None:
            return None
        if s is None:
            training = self.training  # type: ignore[attr-defined]
            s = self.gate_s if training and self.gate_s is not None else float(self.gate_smax)
        return torch.sigmoid(s * self.gate_embedding[task])


class TaskLinear(TaskAware, nn.Linear):
    """A plain trunk ``Linear`` with optional per-task state (:class:`TaskAware`)."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        *,
        num_tasks: int = 1,
        task_state: str | None = None,
    ) -> None:
        super().__init__(in_features, out_features, bias=bias)
        self.init_task_state(num_tasks, out_features, task_state)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.plain:
            return F.linear(x, self.weight, self.bias)
        out = F.linear(x, self.task_weight(), self.bias)
        gate = self.last_gate = self.task_gate(self.task)
        return out if gate is None else out * gate


class TaskConv2d(TaskAware, nn.Conv2d):
    """A plain trunk ``Conv2d`` with optional per-task state (one gate per output channel)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
        bias: bool = True,
        *,
        num_tasks: int = 1,
        task_state: str | None = None,
    ) -> None:
        super().__init__(
            in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=bias
        )
        self.init_task_state(num_tasks, out_channels, task_state)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.plain:
            return self._conv_forward(x, self.weight, self.bias)
        out = self._conv_forward(x, self.task_weight(), self.bias)
        gate = self.last_gate = self.task_gate(self.task)
        return out if gate is None else out * gate.view(1, -1, 1, 1)


def task_layers(trunk: nn.Module) -> list[TaskLinear | TaskConv2d]:
    """The trunk's layers that carry per-task state, in registration order (forward order for
    chain trunks)."""
    return [m for m in trunk.modules() if isinstance(m, TaskAware) and m.task_state is not None]


def set_task(layers: list[TaskLinear | TaskConv2d], task: int) -> None:
    """Make ``layers`` serve ``task`` in the next forward."""
    for layer in layers:
        layer.task = task
