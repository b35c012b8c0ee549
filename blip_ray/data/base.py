"""Task sequences: what every loader returns and the one registry the YAML, CLI and tests read."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch


class DataUnavailableError(RuntimeError):
    """A sequence's files are missing and cannot be downloaded; the message says what goes where."""


@dataclass(frozen=True)
class Normalize:
    """Per-channel ``(x - mean) / std`` applied to a batch at load time (keeps raw data compact)."""

    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        shape = (1, -1) + (1,) * (x.dim() - 2)
        mean = torch.tensor(self.mean, dtype=x.dtype).view(shape)
        std = torch.tensor(self.std, dtype=x.dtype).view(shape)
        return (x - mean) / std


@dataclass
class Split:
    """Inputs and integer labels of one split of one task (labels are 0..num_classes-1)."""

    x: torch.Tensor
    y: torch.Tensor

    def __post_init__(self) -> None:
        if len(self.x) != len(self.y):
            raise ValueError(f"split has {len(self.x)} inputs but {len(self.y)} labels")

    def __len__(self) -> int:
        return len(self.y)


@dataclass
class Task:
    """One task: its splits, a name, its number of classes, and an optional batch transform.

    ``transform`` (e.g. :class:`Normalize` of uint8 images) is applied to every batch of inputs;
    when it is None the stored inputs are already model-ready float tensors.
    """

    name: str
    num_classes: int
    train: Split
    valid: Split
    test: Split
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None

    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        return self.transform(x) if self.transform is not None else x.float()


@dataclass
class TaskSequence:
    """An ordered list of tasks sharing one input shape (C, H, W) or (D,)."""

    name: str
    tasks: list[Task]
    input_shape: tuple[int, ...]
    notes: dict[str, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.tasks)

    @property
    def head_sizes(self) -> list[int]:
        return [t.num_classes for t in self.tasks]


#: ``loader(data_dir=..., seed=..., download=...) -> TaskSequence``
SequenceLoader = Callable[..., TaskSequence]


@dataclass(frozen=True)
class SequenceEntry:
    """A registered sequence: its loader, and what a spec is checked against without any data."""

    loader: SequenceLoader
    num_tasks: int
    """Tasks of the sequence, the same for every seed (a seed only orders them)."""
    input_shape: tuple[int, ...]
    """One sample's shape, channels first: the loaded ``TaskSequence.input_shape``."""
    network: str
    """The paper's network for the sequence (DESIGN.md "Benchmarks of the paper")."""
    description: str = ""
    """One line for listings, where the name alone could mislead (e.g. a subset of paper data)."""


SEQUENCES: dict[str, SequenceEntry] = {}


def register_sequence(
    name: str,
    *,
    num_tasks: int,
    input_shape: tuple[int, ...],
    network: str,
    description: str = "",
) -> Callable[[SequenceLoader], SequenceLoader]:
    """Function decorator filling :data:`SEQUENCES` with the loader and its static facts."""

    def wrap(loader: SequenceLoader) -> SequenceLoader:
        if name in SEQUENCES:
            raise ValueError(f"sequence {name!r} registered twice")
        SEQUENCES[name] = SequenceEntry(loader, num_tasks, input_shape, network, description)
        return loader

    return wrap


def load_sequence(
    name: str, *, data_dir: str | Path | None = None, seed: int = 0, download: bool = True
) -> TaskSequence:
    """Load a registered sequence by name; unknown names fail with the list of known ones."""
    if name not in SEQUENCES:
        raise KeyError(f"unknown benchmark {name!r}; known: {', '.join(sorted(SEQUENCES))}")
    return SEQUENCES[name].loader(
        data_dir=Path(data_dir) if data_dir else None, seed=seed, download=download
    )
