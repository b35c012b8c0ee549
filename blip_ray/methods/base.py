"""One interface for every continual-learning method, and the registry YAML, CLI and tests read.

A method is a small class overriding a few hooks of :class:`ContinualMethod` (FACIL's pattern); the
task loop in ``blip_ray.supervised`` (and the RL learners) call the hooks, and metrics are computed
outside the methods so every method is scored the same way.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from typing import Any, ClassVar, TypeVar

import torch
from torch import nn

from blip_ray.data.base import Split, Task
from blip_ray.models.base import MultiHeadNet


@dataclasses.dataclass(frozen=True)
class MethodConfig:
    """Base of every method's typed, frozen hyperparameter config (the only copy of defaults)."""


class ContinualMethod:
    """Hooks called by a task loop; the defaults implement plain fine-tuning.

    Order per task t: ``before_task`` -> (per minibatch: loss + ``penalty``, step, ``after_step``)
    -> best-validation weights restored -> ``after_task`` -> every task evaluated.
    """

    name: ClassVar[str] = ""
    config_class: ClassVar[type[MethodConfig]] = MethodConfig
    #: Whether the network's trunk must be built from BLIP's quantized layers.
    quantized_trunk: ClassVar[bool] = False

    def __init__(self, config: MethodConfig | None = None) -> None:
        self.config = config if config is not None else self.config_class()
        if not isinstance(self.config, self.config_class):
            raise TypeError(
                f"{self.name} expects {self.config_class.__name__}, got {self.config!r}"
            )

    def setup(self, model: MultiHeadNet) -> None:
        """Once, on the fresh model, before any task (and before a restart loads state)."""

    def before_task(self, model: MultiHeadNet, task_id: int, task: Task) -> None:
        """Before training task ``task_id`` (also called when a run restarts at that task)."""

    def penalty(
        self, model: MultiHeadNet, task_id: int, inputs: torch.Tensor
    ) -> torch.Tensor | None:
        """Extra loss term added to the task's cross-entropy on a minibatch (None: no term)."""
        return None

    def after_step(self, model: MultiHeadNet, task_id: int) -> None:
        """After every optimizer step."""

    def after_task(
        self, model: MultiHeadNet, task_id: int, task: Task, *, batches: BatchFactory
    ) -> None:
        """After task ``task_id`` is trained and its best-validation weights restored."""

    def state_dict(self) -> dict[str, Any]:
        """Method state carried across tasks (tensors, numbers, lists, dicts of them)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (after ``setup`` on a fresh model)."""

    def state_bytes(self, model: MultiHeadNet) -> int:
        """Bytes of state the method keeps beyond the network's own parameters."""
        return tensor_bytes(self.state_dict())

    def describe(self) -> dict[str, Any]:
        """The method's hyperparameters, for tables and ``blip-ray list``."""
        return dataclasses.asdict(self.config)


#: ``batches(split, batch_size, shuffle=..., limit=...)`` yields ``(inputs, labels)`` minibatches of
#: a task's split, transformed and on the run's device.
BatchFactory = Callable[..., Iterator[tuple[torch.Tensor, torch.Tensor]]]


def tensor_bytes(obj: Any) -> int:
    """Total bytes of every tensor inside nested dicts/lists/tuples."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(tensor_bytes(v) for v in obj.values())
    if isinstance(obj, list | tuple):
        return sum(tensor_bytes(v) for v in obj)
    return 0


def trunk_parameters(model: MultiHeadNet) -> dict[str, nn.Parameter]:
    """The shared trunk's parameters by name (heads excluded: each is trained by its task only)."""
    return dict(model.trunk.named_parameters())


def split_batches(split: Split, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    for start in range(0, len(split), batch_size):
        yield split.x[start : start + batch_size], split.y[start : start + batch_size]


M = TypeVar("M", bound=type[ContinualMethod])
METHODS: dict[str, type[ContinualMethod]] = {}


def register_method(name: str) -> Callable[[M], M]:
    """Class decorator filling :data:`METHODS` under ``name``."""

    def wrap(cls: M) -> M:
        if name in METHODS:
            raise ValueError(f"method {name!r} registered twice")
        cls.name = name
        METHODS[name] = cls
        return cls

    return wrap


def make_method(name: str, **hyperparameters: Any) -> ContinualMethod:
    """Build a registered method from keyword hyperparameters, rejecting unknown ones."""
    if name not in METHODS:
        raise KeyError(f"unknown method {name!r}; known: {', '.join(sorted(METHODS))}")
    cls = METHODS[name]
    fields = {f.name for f in dataclasses.fields(cls.config_class)}
    unknown = sorted(set(hyperparameters) - fields)
    if unknown:
        known = ", ".join(sorted(fields)) or "none"
        raise ValueError(f"method {name!r} has no hyperparameter {unknown[0]!r}; it takes: {known}")
    return cls(cls.config_class(**hyperparameters))
