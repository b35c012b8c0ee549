"""The episodic memory of the rehearsal methods (A-GEM, ER), and the loss of a multi-task batch.

The memory follows the official A-GEM/ER code (github.com/facebookresearch/agem,
``conv_split_cifar.py``): a fixed quota of ``per_class`` samples of each class of each finished
task (its ring buffer holds the last ``mem_size`` training samples of every class; here a uniform
draw of ``per_class`` samples per class from one shuffled pass over the task's training split, the
same distribution). Every sample keeps its task id, so rehearsal scores it with its own head.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch.nn import functional as F

from blip_ray.methods.base import (
    ContinualMethod,
    MethodConfig,
    Model,
    TaggedBatch,
    TaskSamples,
    require,
)


def multi_head_loss(
    model: Model, inputs: torch.Tensor, labels: torch.Tensor, tasks: torch.Tensor
) -> torch.Tensor:
    """Mean cross-entropy over a batch whose samples each go through their own task's head.

    The trunk runs once on the whole batch (as the official code's masked single output layer);
    each run of consecutive samples of one task goes through its head at once (the loop and the
    memory hand batches grouped by task, so that is one call per task).
    """
    features = model.features(inputs)
    ids, counts = tasks.unique_consecutive(return_counts=True)
    sizes = counts.tolist()
    total = features.new_zeros(())
    groups = zip(ids.tolist(), features.split(sizes), labels.split(sizes), strict=True)
    for task, part, target in groups:
        total = total + F.cross_entropy(model.heads[task](part), target, reduction="sum")
    return total / len(labels)


def join(first: TaggedBatch, second: TaggedBatch) -> TaggedBatch:
    """Two tagged batches as one (inputs, labels and task ids concatenated)."""
    return (
        torch.cat([first[0], second[0]]),
        torch.cat([first[1], second[1]]),
        torch.cat([first[2], second[2]]),
    )


class EpisodicMemory:
    """``per_class`` samples of every class of every finished task, each with its task id."""

    def __init__(self, per_class: int) -> None:
        self.per_class = per_class
        self.inputs: list[torch.Tensor] = []
        self.labels: list[torch.Tensor] = []
        self.tasks: list[int] = []
        self._flat: TaggedBatch | None = None

    def __len__(self) -> int:
        return sum(len(y) for y in self.labels)

    def add(self, task_id: int, samples: TaskSamples, *, batch_size: int = 256) -> None:
        """Keep the first ``per_class`` samples of each class met in a shuffled pass."""
        kept_x, kept_y, count = [], [], {}
        for inputs, labels in samples.batches(batch_size, shuffle=True):
            keep = torch.zeros(len(labels), dtype=torch.bool)
            for i, label in enumerate(labels.tolist()):
                if count.get(label, 0) < self.per_class:
                    count[label] = count.get(label, 0) + 1
                    keep[i] = True
            if keep.any():
                keep = keep.to(labels.device)
                kept_x.append(inputs[keep].detach().clone())
                kept_y.append(labels[keep].clone())
        self.inputs.append(torch.cat(kept_x))
        self.labels.append(torch.cat(kept_y))
        self.tasks.append(task_id)
        self._flat = None

    def per_task(self) -> dict[int, int]:
        """Samples held for each task."""
        return {task: len(y) for task, y in zip(self.tasks, self.labels, strict=True)}

    def sample(self, size: int, device: torch.device) -> TaggedBatch:
        """``size`` samples drawn without replacement over the whole memory (all of it if it holds
        no more), from torch's global generator (the task loop seeds it per task)."""
        if self._flat is None:
            tasks = [
                torch.full((len(y),), t, dtype=torch.long)
                for t, y in zip(self.tasks, self.labels, strict=True)
            ]
            self._flat = (torch.cat(self.inputs), torch.cat(self.labels), torch.cat(tasks))
        inputs, labels, tasks = self._flat
        if size < len(labels):  # sorted: grouped by task, as the memory is
            pick = torch.randperm(len(labels))[:size].sort().values
            inputs, labels, tasks = inputs[pick], labels[pick], tasks[pick]
        return inputs.to(device), labels.to(device), tasks.to(device)

    def state_dict(self) -> dict[str, Any]:
        return {"inputs": list(self.inputs), "labels": list(self.labels), "tasks": list(self.tasks)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.inputs, self.labels = list(state["inputs"]), list(state["labels"])
        self.tasks = [int(t) for t in state["tasks"]]
        self._flat = None


@dataclasses.dataclass(frozen=True)
class MemoryConfig(MethodConfig):
    """The episodic memory's quota (``conv_split_cifar.py``'s ``SAMPLES_PER_CLASS``)."""

    per_class: int = 13
    """Memory samples kept per class of each finished task (``--mem-size``)."""

    def __post_init__(self) -> None:
        require(self, "per_class", self.per_class >= 1, ">= 1")


class RehearsalMethod(ContinualMethod):
    """A method with an :class:`EpisodicMemory` filled at every task end (A-GEM, ER); its state
    is the memory, which grows by the same quota with every task."""

    config_class = MemoryConfig

    def setup(self, model: Model) -> None:
        self.memory = EpisodicMemory(self.config.per_class)

    def after_task(self, model: Model, task_id: int, *, samples: TaskSamples) -> None:
        self.memory.add(task_id, samples)

    def state_dict(self) -> dict[str, Any]:
        return {"memory": self.memory.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.memory.load_state_dict(state["memory"])
