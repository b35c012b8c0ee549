"""Joint training: the upper-bound reference, not a continual method.

Task t trains on the union of the training splits of tasks 0..t (minibatches drawn from the union,
each sample scored by its own task's head; validation on the union of their validation splits), so
nothing is forgotten for want of data. It keeps every training sample it has seen: its state is the
stored data, which grows with every task.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from blip_ray.methods.base import (
    ContinualMethod,
    MethodConfig,
    Model,
    TaskSamples,
    register_method,
    tensor_bytes,
)


@dataclasses.dataclass(frozen=True)
class JointConfig(MethodConfig):
    """Joint training has no hyperparameters of its own."""


@register_method("joint")
class JointMethod(ContinualMethod):
    """Task t trains on tasks 0..t together; reported as a reference."""

    config_class = JointConfig
    role = "reference"

    def setup(self, model: Model) -> None:
        self.kept_bytes = 0

    def training_tasks(self, task_id: int) -> tuple[int, ...]:
        return tuple(range(task_id + 1))

    def after_task(self, model: Model, task_id: int, *, samples: TaskSamples) -> None:
        self.kept_bytes += sum(tensor_bytes(batch) for batch in samples.batches(1024))

    def state_dict(self) -> dict[str, Any]:
        return {"kept_bytes": self.kept_bytes}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.kept_bytes = int(state["kept_bytes"])

    def state_bytes(self, model: Model) -> int:
        """The training data of every finished task, which the next task trains on again."""
        return self.kept_bytes
