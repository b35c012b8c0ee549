"""Fine-tuning (``sgd``): train each task's head and the shared trunk with nothing else."""

from __future__ import annotations

import dataclasses

from blip_ray.methods.base import ContinualMethod, MethodConfig, Model, register_method, require


@dataclasses.dataclass(frozen=True)
class FinetuneConfig(MethodConfig):
    """Fine-tuning has no hyperparameters of its own (learning rate etc. are training settings)."""


@register_method("finetune")
class FinetuneMethod(ContinualMethod):
    """The lower bound every method is compared with: the trunk drifts freely between tasks."""

    config_class = FinetuneConfig
    tracks = ("supervised", "rl")


@dataclasses.dataclass(frozen=True)
class FrozenConfig(MethodConfig):
    """``sgd-frozen`` has no hyperparameters: the trunk is frozen after ``freeze_after`` tasks."""

    freeze_after: int = 1
    """Number of tasks trained with the trunk free (the paper's baseline: 1, i.e. after task 0)."""

    def __post_init__(self) -> None:
        require(self, "freeze_after", self.freeze_after >= 1, ">= 1")


@register_method("frozen")
class FrozenMethod(ContinualMethod):
    """``sgd-frozen`` (the paper's RL ``ft-fix``): learn the trunk on the first task, then train
    only each new task's head.

    Never forgets (old heads and the trunk are untouched) but cannot adapt features to later tasks.
    """

    config_class = FrozenConfig
    tracks = ("supervised", "rl")

    def before_task(self, model: Model, task_id: int) -> None:
        frozen = task_id >= self.config.freeze_after
        for param in model.trunk.parameters():
            param.requires_grad_(not frozen)
