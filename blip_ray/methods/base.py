"""One interface for every continual-learning method, and the one registry YAML, CLI and tests read.

A method is a small class overriding a few hooks of :class:`ContinualMethod` (FACIL's pattern). Both
tracks call the same hooks: the supervised task loop (``blip_ray.supervised``) with a classifier,
the RL learner (``blip_ray.rl.learners``) with the PPO module. The end-of-task step reads the task's
samples through :class:`TaskSamples`, which each track builds (Avalanche's ``update(experience,
model)``), so a method is written once. Metrics are computed outside the methods, so every method is
scored the same way.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from typing import Any, ClassVar, TypeVar

import torch
from torch import nn
from torch.nn import functional as F

from blip_ray import quant

#: A model of either track: a ``MultiHeadNet`` or the RL track's PPO module. Both have ``trunk``
#: and ``features(x)``; ``heads`` is the classifier's only; the rest comes from TaskSamples.
Model = nn.Module
#: ``(inputs, targets)``; ``targets`` is None where a task has no labels (RL states).
Batch = tuple[torch.Tensor, torch.Tensor | None]
#: ``(inputs, labels, task ids)``: labelled samples of several tasks, each scored by its own head.
TaggedBatch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]
#: Hooks only the supervised loop calls; a method overriding one cannot declare the ``rl`` track.
SUPERVISED_HOOKS = ("training_tasks", "replay", "param_groups")


@dataclasses.dataclass(frozen=True)
class MethodConfig:
    """Base of every method's typed, frozen hyperparameter config (the only copy of defaults).

    Subclasses check their values in ``__post_init__`` and raise ValueError with one line that
    names the field, so a spec is refused before any trial starts.
    """

    #: Values that shrink the method's own work for ``blip-ray run --smoke`` (seconds, not hours).
    smoke_values: ClassVar[dict[str, Any]] = {}


def require(config: MethodConfig, field: str, ok: bool, rule: str) -> None:
    """Raise ``ValueError("<field>: must be <rule>, got <value>")`` unless ``ok``."""
    if not ok:
        raise ValueError(f"{field}: must be {rule}, got {getattr(config, field)!r}")


@dataclasses.dataclass(frozen=True)
class TaskSamples:
    """A finished task's training samples, as an end-of-task step reads them in either track.

    The supervised loop builds it from the task's training split (``targets`` are the labels), the
    RL learner from the states of the task's last training batch (no targets: a target is an
    action sampled from the task's policy head).
    """

    batches: Callable[..., Iterator[Batch]]
    """``batches(batch_size, *, shuffle=False, limit=None)`` yields minibatches on the model's
    device, at most ``limit`` of them (RL always shuffles, as the official rollout generator)."""
    logits: Callable[[Model, torch.Tensor], torch.Tensor]
    """``logits(model, inputs)``: the task's own head (class scores, or the policy's logits)."""

    def sampled_log_prob(self, model: Model, batch: Batch) -> torch.Tensor:
        """Per-sample ``log p(y | x)`` of a target ``y`` sampled from the task's head."""
        return quant.sampled_label_log_prob(self.logits(model, batch[0]))

    def nll(self, model: Model, batch: Batch) -> torch.Tensor:
        """Per-sample ``-log p(y | x)``: ``y`` the batch's label, or (no labels) sampled."""
        inputs, targets = batch
        if targets is None:
            return -self.sampled_log_prob(model, batch)
        return F.cross_entropy(self.logits(model, inputs), targets, reduction="none")


class ContinualMethod:
    """Hooks called by a task loop; the defaults implement plain fine-tuning.

    Order per task t: ``before_task`` -> (per minibatch: ``before_batch``, loss + ``penalty``,
    backward, ``before_step``, step, ``after_step``) -> best-validation weights restored ->
    ``after_task`` -> every task evaluated. The supervised loop also asks :meth:`training_tasks`
    which tasks' data task t trains on, :meth:`replay` what to join to each minibatch and
    :meth:`param_groups` how its optimizer groups the parameters (:data:`SUPERVISED_HOOKS`).
    """

    name: ClassVar[str] = ""
    config_class: ClassVar[type[MethodConfig]] = MethodConfig
    #: Whether the network's trunk must be built from BLIP's quantized layers.
    quantized_trunk: ClassVar[bool] = False
    #: Per-task state the plain trunk layers must carry (``ModelOptions.task_state``): ``gates``
    #: (HAT), ``masks`` (PackNet) or None.
    trunk_task_state: ClassVar[str | None] = None
    #: Whether the network's trunk must be built from UCL's Bayesian layers.
    bayesian_trunk: ClassVar[bool] = False
    #: The tracks the method runs on: ``supervised`` (classifiers) and/or ``rl`` (the PPO module).
    tracks: ClassVar[tuple[str, ...]] = ("supervised",)
    #: ``continual``, or ``reference`` for a bound the methods are compared with (joint training),
    #: which the report labels and lists after the continual methods.
    role: ClassVar[str] = "continual"
    #: What :meth:`capacity` counts (``bits frozen``, ``units used``, ``weights owned``); None for
    #: a method that does not spend a fixed network.
    capacity_label: ClassVar[str | None] = None

    def __init__(self, config: MethodConfig | None = None) -> None:
        self.config = config if config is not None else self.config_class()
        if not isinstance(self.config, self.config_class):
            raise TypeError(
                f"{self.name} expects {self.config_class.__name__}, got {self.config!r}"
            )

    def setup(self, model: Model) -> None:
        """Once, on the fresh model, before any task (and before a restart loads state)."""

    def before_task(self, model: Model, task_id: int) -> None:
        """Before training task ``task_id`` (also called when a run restarts at that task)."""

    def penalty(self, model: Model, task_id: int, inputs: torch.Tensor) -> torch.Tensor | None:
        """Extra loss term added to the task's loss on a minibatch (None: no term)."""
        return None

    def after_step(self, model: Model, task_id: int) -> None:
        """After every optimizer step."""

    def training_tasks(self, task_id: int) -> tuple[int, ...]:
        """Supervised: the tasks whose training and validation splits task ``task_id`` trains on
        (minibatches drawn from their union, each sample scored by its own head)."""
        return (task_id,)

    def replay(self, model: Model, task_id: int, batch_size: int) -> TaggedBatch | None:
        """Supervised: samples joined to a training minibatch of ``batch_size`` (None: none); the
        loss is the mean over the joined batch."""
        return None

    def before_batch(self, model: Model, task_id: int, *, epoch_fraction: float) -> None:
        """Before each training minibatch; ``epoch_fraction`` is the share of the epoch already
        seen (0 at the first minibatch; RL: of the PPO epoch's minibatches)."""

    def before_step(self, model: Model, task_id: int) -> None:
        """After the backward pass, before gradient clipping and the optimizer step (the
        parameters' ``.grad`` hold the minibatch's gradient and may be rewritten in place)."""

    def param_groups(self, model: Model, *, lr_scale: float) -> list[dict[str, Any]] | None:
        """Supervised: the optimizer's parameter groups (None: one group of every trainable
        parameter). A group without ``lr`` takes the loop's current learning rate; ``lr_scale`` is
        that rate over the task's initial one (1, divided on each plateau), for groups with their
        own rate."""
        return None

    def after_task(self, model: Model, task_id: int, *, samples: TaskSamples) -> None:
        """After task ``task_id`` is trained (supervised: its best-validation weights restored)."""

    def capacity(self, model: Model) -> float | None:
        """The fraction of the network the finished tasks hold (:attr:`capacity_label`), or None."""
        return None

    def state_dict(self) -> dict[str, Any]:
        """Method state carried across tasks (tensors, numbers, lists, dicts of them)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (after ``setup`` on a fresh model)."""

    def state_bytes(self, model: Model) -> int:
        """Bytes of state the method keeps beyond the network's own parameters."""
        return tensor_bytes(self.state_dict())


def tensor_bytes(obj: Any) -> int:
    """Total bytes of every tensor inside nested dicts/lists/tuples."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(tensor_bytes(v) for v in obj.values())
    if isinstance(obj, list | tuple):
        return sum(tensor_bytes(v) for v in obj)
    return 0


def trunk_parameters(model: Model) -> dict[str, nn.Parameter]:
    """The shared trunk's parameters by name (heads excluded: each is trained by its task only)."""
    return dict(model.trunk.named_parameters())


def trunk_snapshot(model: Model) -> dict[str, torch.Tensor]:
    """A detached copy of the trunk's parameters (an anchor, a merged solution)."""
    return {name: p.detach().clone() for name, p in model.trunk.named_parameters()}


M = TypeVar("M", bound=type[ContinualMethod])
METHODS: dict[str, type[ContinualMethod]] = {}


def register_method(name: str) -> Callable[[M], M]:
    """Class decorator filling :data:`METHODS` under ``name``."""

    def wrap(cls: M) -> M:
        if name in METHODS:
            raise ValueError(f"method {name!r} registered twice")
        base = ContinualMethod
        overridden = [h for h in SUPERVISED_HOOKS if getattr(cls, h) is not getattr(base, h)]
        if "rl" in cls.tracks and overridden:
            raise TypeError(f"method {name!r} overrides {overridden[0]}, which RL never calls")
        if cls.role not in ("continual", "reference"):
            raise ValueError(f"method {name!r}: role must be continual or reference: {cls.role!r}")
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
    try:
        config = cls.config_class(**hyperparameters)
    except ValueError as err:
        raise ValueError(f"method {name!r}: {err}") from None
    return cls(config)
