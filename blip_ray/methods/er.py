"""ER, experience replay with a tiny episodic memory (Chaudhry et al. 2019, "On Tiny Episodic
Memories in Continual Learning").

Reference: the official code, github.com/facebookresearch/agem (the ER branch of
``conv_split_cifar.py``: each training minibatch is concatenated with a memory minibatch and the
loss is the mean over the joined batch, each sample under its own task's mask; the paper joins
equal-sized batches, 10 + 10). The memory is A-GEM's (:class:`~blip_ray.methods.memory.
EpisodicMemory`, ``--mem-size`` 13 per class of each finished task). Supervised only.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from blip_ray.methods.base import (
    ContinualMethod,
    MethodConfig,
    Model,
    TaggedBatch,
    TaskSamples,
    register_method,
    require,
)
from blip_ray.methods.memory import EpisodicMemory


@dataclasses.dataclass(frozen=True)
class ErConfig(MethodConfig):
    """The episodic memory's quota (``conv_split_cifar.py``'s ``SAMPLES_PER_CLASS``)."""

    per_class: int = 13
    """Memory samples kept per class of each finished task (``--mem-size``)."""

    def __post_init__(self) -> None:
        require(self, "per_class", self.per_class >= 1, ">= 1")


@register_method("er")
class ErMethod(ContinualMethod):
    """Every training minibatch is joined by as many memory samples (all of them while fewer)."""

    config_class = ErConfig

    def setup(self, model: Model) -> None:
        self.memory = EpisodicMemory(self.config.per_class)

    def replay(self, model: Model, task_id: int, batch_size: int) -> TaggedBatch | None:
        if not len(self.memory):
            return None
        return self.memory.sample(batch_size, next(model.parameters()).device)

    def after_task(self, model: Model, task_id: int, *, samples: TaskSamples) -> None:
        self.memory.add(task_id, samples)

    def state_dict(self) -> dict[str, Any]:
        return {"memory": self.memory.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.memory.load_state_dict(state["memory"])
