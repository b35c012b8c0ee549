"""PackNet (Mallya & Lazebnik 2018): prune, retrain, freeze; one slice of the trunk per task.

Reference: the official code, github.com/arunmallya/packnet: ``src/prune.py`` (``SparsePruner``:
per layer, rank the current task's weights by magnitude, zero and release those at or under the
``prune_perc``-th smallest; ``make_grads_zero``: only the current task's weights train, biases and
batch-norm fixed; ``apply_mask(t)``: task t's inference zeroes the weights of later tasks),
``src/main.py`` (``--prune_perc_per_layer 0.5``) and ``src/scripts/run_sequence.sh`` (prune, then
``--post_prune_epochs 10`` at a tenth of the training learning rate).

Here task 0 also trains the biases (the reference starts from a pretrained network; a network
trained from scratch needs them) and they are fixed from task 1 on, as every non-weight
parameter of the trunk. Released weights stay 0 until a later task trains them. Share schedule:
by default every task keeps an equal share of the trunk's weights (task t of T prunes
``1 - 1/(T - t)`` of the weights it trained; the last keeps all), or ``prune_ratio`` of them.
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
)
from blip_ray.models.layers import task_layers

#: Owner of a weight no task holds (trained by the next task).
FREE = -1


@dataclasses.dataclass(frozen=True)
class PacknetConfig(MethodConfig):
    """The share schedule and the retraining after each pruning."""

    prune_ratio: float | None = None
    """Fraction of a task's weights released at its end (the reference: 0.5); None: equal shares
    of the trunk for every task of the sequence."""
    retrain_epochs: int = 10
    """Epochs of retraining the kept weights after pruning (``--post_prune_epochs``)."""
    retrain_lr: float = 0.01
    """SGD learning rate of the retraining (the reference: a tenth of the training rate)."""
    retrain_batch_size: int = 32
    """Minibatch size of the retraining (the reference's ``--batch_size``)."""

    smoke_values = {"retrain_epochs": 1}

    def __post_init__(self) -> None:
        ratio = self.prune_ratio
        require(self, "prune_ratio", ratio is None or 0 <= ratio < 1, "None or in [0, 1)")
        require(self, "retrain_epochs", self.retrain_epochs >= 0, ">= 0")
        lr = self.retrain_lr
        require(self, "retrain_lr", math.isfinite(lr) and lr > 0, "a finite number > 0")
        require(self, "retrain_batch_size", self.retrain_batch_size >= 1, ">= 1")


@register_method("packnet")
class PacknetMethod(ContinualMethod):
    """Each trunk weight belongs to one task; task t sees the weights of tasks 0..t only."""

    config_class = PacknetConfig
    capacity_label = "weights owned"

    def setup(self, model: Model) -> None:
        self.layers = task_layers(model.trunk)
        if not self.layers:
            raise ValueError("packnet needs a plain trunk (task-aware Linear/Conv2d layers)")
        self.num_tasks = len(model.heads)
        self.owner = [
            torch.full_like(layer.weight, FREE, dtype=torch.int16) for layer in self.layers
        ]
        weights = {id(layer.weight) for layer in self.layers}
        self.fixed = [p for p in model.trunk.parameters() if id(p) not in weights]
        self.task = 0
        self._masks: dict[int, list[torch.Tensor]] = {}
        model.task_conditioner = self._condition

    def _condition(self, task: int) -> None:
        if task not in self._masks:  # weights of later tasks are cut; released ones are 0
            self._masks[task] = [(own <= task).to(lay.weight.dtype) for own, lay in self._owned()]
        for layer, mask in zip(self.layers, self._masks[task], strict=True):
            layer.weight_mask = mask

    def _owned(self) -> list[tuple[torch.Tensor, Any]]:
        return list(zip(self.owner, self.layers, strict=True))

    def before_task(self, model: Model, task_id: int) -> None:
        self.task = task_id
        for own in self.owner:
            own[own == FREE] = task_id
        self._masks.clear()

    def before_step(self, model: Model, task_id: int) -> None:
        for own, layer in self._owned():
            if layer.weight.grad is not None:
                layer.weight.grad.mul_(own == task_id)
        if task_id > 0:
            for param in self.fixed:
                param.grad = None

    def share(self, task_id: int) -> float:
        """Fraction of the task's weights released at its end."""
        if self.config.prune_ratio is not None:
            return self.config.prune_ratio
        return 1.0 - 1.0 / max(self.num_tasks - task_id, 1)

    def after_task(self, model: Model, task_id: int, *, samples: TaskSamples) -> None:
        self.prune(task_id, self.share(task_id))
        self.retrain(model, task_id, samples)

    @torch.no_grad()
    def prune(self, task_id: int, fraction: float) -> None:
        """Release the ``fraction`` smallest-magnitude weights of the task in every layer."""
        for own, layer in self._owned():
            mine = own == task_id
            magnitudes = layer.weight.abs()[mine]
            rank = round(fraction * magnitudes.numel())
            if rank == 0:
                continue
            cutoff = magnitudes.kthvalue(rank).values
            release = mine & (layer.weight.abs() <= cutoff)
            own[release] = FREE
            layer.weight[release] = 0.0
        self._masks.clear()

    def retrain(self, model: Model, task_id: int, samples: TaskSamples) -> None:
        """Train the task's kept weights (and head) again on its samples."""
        if self.config.retrain_epochs == 0:
            return
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.SGD(params, lr=self.config.retrain_lr)
        was_training = model.training
        model.train()
        for _ in range(self.config.retrain_epochs):
            for batch in samples.batches(self.config.retrain_batch_size, shuffle=True):
                loss = samples.nll(model, batch).mean()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.before_step(model, task_id)
                optimizer.step()
        model.train(was_training)

    def capacity(self, model: Model) -> float | None:
        """Fraction of the trunk's weights finished tasks own."""
        owned = sum(int(((own >= 0) & (own <= self.task)).sum()) for own in self.owner)
        return owned / sum(own.numel() for own in self.owner)

    def state_dict(self) -> dict[str, Any]:
        return {"owner": self.owner, "task": self.task}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.owner = [
            own.to(layer.weight.device, copy=True)
            for own, layer in zip(state["owner"], self.layers, strict=True)
        ]
        self.task = int(state["task"])
        self._masks.clear()
