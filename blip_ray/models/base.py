"""A shared trunk plus one plain head per task: the one network shape every method trains."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from blip_ray.models.bayesian import DEFAULT_RATIO
from blip_ray.models.task_state import set_task, task_layers
from blip_ray.quant.layers import DEFAULT_MAX_BIT, VARIANTS


class MultiHeadNet(nn.Module):
    """``trunk`` (quantized for BLIP, Bayesian for UCL, plain otherwise) -> ``heads[task]``.

    The split is explicit: methods that act on the shared representation (BLIP, frozen trunk, EWC
    penalties) touch ``trunk`` only; heads are never quantized or clipped.
    """

    def __init__(self, trunk: nn.Module, feature_dim: int, head_sizes: list[int]) -> None:
        super().__init__()
        self.trunk = trunk
        self.feature_dim = feature_dim
        self.heads = nn.ModuleList(nn.Linear(feature_dim, n) for n in head_sizes)
        # Trunk layers with per-task state (HAT's gates, PackNet's owners): not submodules again.
        self.task_layers = task_layers(trunk)

    @property
    def num_tasks(self) -> int:
        """Tasks of the network (one head each), as the RL module's ``num_tasks``."""
        return len(self.heads)

    def features(self, x: torch.Tensor, task: int | None = None) -> torch.Tensor:
        """The trunk's output; with ``task``, a trunk with per-task state serves that task."""
        if task is not None and self.task_layers:
            set_task(self.task_layers, task)
        return self.trunk(x)

    def forward(self, x: torch.Tensor, task: int) -> torch.Tensor:
        return self.heads[task](self.features(x, task))

    def on_task_start(self, task: int) -> None:
        """Hook for architecture rules tied to the task index (ResNet freezes BatchNorm after 0)."""


@dataclass(frozen=True)
class ModelOptions:
    """How to build a network for a sequence.

    ``quantized`` swaps every trunk Linear/Conv2d for BLIP's quantized layer (``variant`` picks the
    classification or RL parameterisation), ``bayesian`` for UCL's Bayesian layer; ``width`` is the
    paper's ``mul`` multiplier.
    """

    input_shape: tuple[int, ...]
    """One sample's shape, channels first: ``(784,)`` or ``(1, 28, 28)``, ``(3, 32, 32)``, ..."""
    head_sizes: tuple[int, ...]
    """Outputs of each task's head (classes or actions), in task order."""
    quantized: bool = False
    """Build the trunk from BLIP's quantized layers (heads stay plain ``nn.Linear``)."""
    variant: str = "classification"
    """BLIP parameterisation of the quantized layers (``classification`` or ``rl``); for a plain
    trunk, ``rl`` selects the official RL baselines' orthogonal init."""
    width: float = 1.0
    """The official ``--mul`` channel multiplier (each network documents what it scales)."""
    fc_width: int | None = None
    """Override the fully connected hidden width where a network documents a rule for it (mlp,
    alexnet32, atari_cnn); ``None`` keeps the paper's rule."""
    max_bit: int = DEFAULT_MAX_BIT
    """BLIP's bit budget per parameter (quantized layers only; the paper uses 20)."""
    task_state: str | None = None
    """Per-task state of the plain trunk layers: ``gates`` (HAT) or ``masks`` (PackNet)."""
    bayesian: bool = False
    """Build the trunk from UCL's Bayesian layers (a mean per weight, one sigma per output unit;
    heads stay plain ``nn.Linear``)."""
    ratio: float = DEFAULT_RATIO
    """UCL's share of the init variance ``2/fan`` given to the noise (Bayesian layers only)."""

    def __post_init__(self) -> None:
        if not self.width > 0:
            raise ValueError(f"width must be > 0, got {self.width}")
        if self.variant not in VARIANTS:
            raise ValueError(f"unknown variant {self.variant!r}; use one of {', '.join(VARIANTS)}")
        if not self.head_sizes or min(self.head_sizes) < 1:
            raise ValueError(f"head_sizes must be non-empty and positive, got {self.head_sizes}")
        if self.fc_width is not None and self.fc_width < 1:
            raise ValueError(f"fc_width must be >= 1 when set, got {self.fc_width}")
        if self.task_state not in (None, "gates", "masks"):
            raise ValueError(f"task_state must be gates, masks or None, got {self.task_state!r}")
        if self.task_state is not None and (self.quantized or self.bayesian):
            raise ValueError("per-task state (task_state) needs a plain trunk")
        if self.quantized and self.bayesian:
            raise ValueError("a trunk is quantized or Bayesian, not both")
        if not 0 < self.ratio <= 1:
            raise ValueError(f"ratio must be in (0, 1], got {self.ratio}")


ModelBuilder = Callable[[ModelOptions], MultiHeadNet]
MODELS: dict[str, ModelBuilder] = {}


def register_model(name: str) -> Callable[[ModelBuilder], ModelBuilder]:
    """Add a builder to :data:`MODELS`, the one registry the specs, the CLI and the tests read."""

    def wrap(builder: ModelBuilder) -> ModelBuilder:
        if name in MODELS:
            raise ValueError(f"model {name!r} registered twice")
        MODELS[name] = builder
        return builder

    return wrap


def build_model(name: str, options: ModelOptions) -> MultiHeadNet:
    """The registered network ``name``; a KeyError names the known ones."""
    if name not in MODELS:
        raise KeyError(f"unknown network {name!r}; known: {', '.join(sorted(MODELS))}")
    return MODELS[name](options)


def check_build(name: str, options: ModelOptions) -> None:
    """Raise the ValueError that building network ``name`` for ``options`` raises, if any.

    Every builder derives its layer sizes from ``options.input_shape`` and refuses what it cannot
    take (no image shape, images too small for its kernels, an ``fc_width`` without a rule), so
    building is the check; on the meta device it allocates and initializes nothing.
    """
    with torch.device("meta"):
        build_model(name, options)
