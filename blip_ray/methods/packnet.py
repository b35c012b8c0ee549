"""PackNet (Mallya & Lazebnik 2018): prune, retrain, freeze; one slice of the trunk per task.

Reference: the official code, github.com/arunmallya/packnet: ``src/prune.py`` (``SparsePruner``:
per layer, rank the current task's weights by magnitude, zero and release those at or under the
``prune_perc``-th smallest; ``make_grads_zero``: only the current task's weights train, biases and
batch-norm fixed; ``apply_mask(t)``: task t's inference zeroes the weights of later tasks),
``src/main.py`` (``--prune_perc_per_layer 0.5``) and ``src/scripts/run_sequence.sh`` (prune, then
``--post_prune_epochs 10`` at a tenth of the training learning rate).

RL: the task's last training batch is the retraining set, and with no labels the kept weights are
retrained to the unpruned policy's action probabilities on those states (no env steps: the task's
budget is its PPO steps). Here task 0 also trains the biases (the reference starts from a
pretrained network; a network trained from scratch needs them) and they are fixed from task 1 on,
as every non-weight parameter of the trunk. Released weights stay 0 until a later task trains them.
Share schedule: by default every task keeps an equal share of the trunk's weights (task t of T
prunes ``1 - 1/(T - t)`` of the weights it trained; the last keeps all), or ``prune_ratio`` of
them.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch
from torch.nn import functional as F

from blip_ray.methods.base import (
    ContinualMethod,
    MethodConfig,
    Model,
    TaskSamples,
    register_method,
    require,
    tensor_bytes,
)
from blip_ray.models.task_state import FREE_WEIGHT as FREE
from blip_ray.models.task_state import task_layers


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
    tracks = ("supervised", "rl")
    capacity_label = "weights owned"
    trunk_task_state = "masks"

    def setup(self, model: Model) -> None:
        self.layers = task_layers(model.trunk)
        if not self.layers or any(layer.task_state != "masks" for layer in self.layers):
            raise ValueError("packnet needs a plain trunk built with task_state='masks'")
        self.num_tasks = model.num_tasks
        weights = {id(layer.weight) for layer in self.layers}
        self.fixed = [p for p in model.trunk.parameters() if id(p) not in weights]
        self.task = 0

    @property
    def owner(self) -> list[torch.Tensor]:
        """Each layer's ``weight_owner`` (in the model: copies and checkpoints carry it)."""
        return [layer.weight_owner for layer in self.layers]

    def _owned(self) -> list[tuple[torch.Tensor, Any]]:
        return list(zip(self.owner, self.layers, strict=True))

    def before_task(self, model: Model, task_id: int) -> None:
        self.task = task_id
        for own in self.owner:
            own[own == FREE] = task_id

    def before_step(self, model: Model, task_id: int) -> None:
        for own, layer in self._owned():
            if layer.weight.grad is not None:
                layer.weight.grad.mul_(own == task_id)
        if task_id > 0:
            for param in self.fixed:
                if param.grad is not None:
                    param.grad.zero_()

    def share(self, task_id: int) -> float:
        """Fraction of the task's weights released at its end."""
        if self.config.prune_ratio is not None:
            return self.config.prune_ratio
        return 1.0 - 1.0 / max(self.num_tasks - task_id, 1)

    def after_task(self, model: Model, task_id: int, *, samples: TaskSamples) -> None:
        size = self.config.retrain_batch_size
        first = next(iter(samples.batches(size)), None)
        teacher = None
        if first is not None and first[1] is None:  # RL states: distil the unpruned policy
            with torch.no_grad():
                teacher = [
                    (x, F.softmax(samples.logits(model, x), dim=1))
                    for x, _ in samples.batches(size, shuffle=True)
                ]
        self.prune(task_id, self.share(task_id))
        self.retrain(model, task_id, samples, teacher)

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

    def retrain(
        self,
        model: Model,
        task_id: int,
        samples: TaskSamples,
        teacher: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
    ) -> None:
        """Train the task's kept weights (and head) again: on the labels (supervised), or towards
        the unpruned policy's action probabilities on the task's states (``teacher``, RL)."""
        if self.config.retrain_epochs == 0:
            return
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.SGD(params, lr=self.config.retrain_lr)
        was_training = model.training
        model.train()
        for _ in range(self.config.retrain_epochs):
            if teacher is None:
                batches = samples.batches(self.config.retrain_batch_size, shuffle=True)
                losses = (samples.nll(model, batch).mean() for batch in batches)
            else:
                order = torch.randperm(len(teacher)).tolist()
                losses = (_soft_nll(samples, model, *teacher[i]) for i in order)
            for loss in losses:
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.before_step(model, task_id)
                optimizer.step()
        model.train(was_training)

    def capacity(self, model: Model) -> float | None:
        """Fraction of the trunk's weights finished tasks own."""
        owned = sum(int(((own >= 0) & (own <= self.task)).sum()) for own in self.owner)
        return owned / sum(own.numel() for own in self.owner)

    def state_bytes(self, model: Model) -> int:
        """The owner of every trunk weight (kept in the model): constant in the tasks."""
        return tensor_bytes(self.owner)

    def state_dict(self) -> dict[str, Any]:
        return {"task": self.task}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.task = int(state["task"])


def _soft_nll(
    samples: TaskSamples, model: Model, inputs: torch.Tensor, target: torch.Tensor
) -> torch.Tensor:
    """Cross-entropy of the task head's policy against ``target`` probabilities."""
    return -(target * F.log_softmax(samples.logits(model, inputs), dim=1)).sum(1).mean()
