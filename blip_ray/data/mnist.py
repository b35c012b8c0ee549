"""``mnist5`` and ``pmnist``: the paper's MNIST sequences for the 784-1200 MLP.

Data: torchvision's MNIST layout,
``<data_dir>/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte`` (gzipped or not).
Images are flattened to 784 uint8 values and normalized per batch with the official mean 0.1307 /
std 0.3081 (:func:`uint8_normalize`), which keeps 10 permuted copies at 0.55 GB instead of 2.2 GB
of float32.

Deviation from the official loaders, on purpose: they validate on a copy of the training set, so
their "best model" is chosen on training loss. Here 10 % of each task's training images are held
out as a real validation split (``sklearn.utils.shuffle(arange(n), random_state=seed)``, first 10 %
valid) and training uses the rest. Test = the official MNIST test images of the task's classes.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np

from blip_ray.data.base import Task, TaskSequence, register_sequence
from blip_ray.data.common import (
    official_permutation,
    require_data_dir,
    seeded_order,
    task_with_holdout,
    uint8_normalize,
)
from blip_ray.data.sources import RawImages, read_mnist

MNIST_MEAN = (0.1307,)
MNIST_STD = (0.3081,)
VALID_FRACTION = 0.1
NUM_PERMUTATIONS = 10

_VALID_NOTE = (
    "real validation split: 10% of each task's training images held out with "
    "sklearn.utils.shuffle(random_state=seed) (the official code validates on a copy of train)"
)


def _flat_mnist(data_dir: Path | None, *, sequence: str, download: bool) -> RawImages:
    root = require_data_dir(data_dir, sequence=sequence, datasets="MNIST")
    raw = read_mnist(root, fashion=False, download=download, sequence=sequence)
    return RawImages(
        x_train=raw.x_train.reshape(len(raw.x_train), -1),
        y_train=raw.y_train,
        x_test=raw.x_test.reshape(len(raw.x_test), -1),
        y_test=raw.y_test,
    )


#: ``{"train", "test"} (or with "valid") -> (x uint8 (N, 784), y int64)``
Arrays = dict[str, tuple[np.ndarray, np.ndarray]]

PAIR_NOTES = {
    "order": "fixed: {0,1},{2,3},{4,5},{6,7},{8,9}",
    "normalization": "mean 0.1307, std 0.3081 applied per batch to uint8 pixels",
}
PERMUTED_NOTES = {
    "order": "sklearn.utils.shuffle(arange(10), random_state=seed)",
    "permutations": "task r: sklearn.utils.shuffle(arange(784), random_state=r*100+i), i = "
    "position of r in the seed-0 order (the official rule), fixed across seeds",
    "normalization": PAIR_NOTES["normalization"],
}


class TaskParts(NamedTuple):
    """One task's name, class count and per-split arrays, before the splits become a Task."""

    name: str
    num_classes: int
    splits: Arrays


def pair_tasks(splits: Arrays, *, prefix: str) -> Iterator[TaskParts]:
    """MNIST-5's tasks {0,1}, {2,3}, ..., {8,9} in fixed order, labels remapped to 0/1.

    Shared by every sequence built the official mnist5 way, so they cannot drift apart.
    """
    for first in range(0, 10, 2):
        parts = {}
        for split, (x, y) in splits.items():
            keep = (y == first) | (y == first + 1)
            parts[split] = (x[keep], y[keep] - first)
        yield TaskParts(f"{prefix}-{first}-{first + 1}", 2, parts)


def permuted_tasks(splits: Arrays, *, seed: int, prefix: str) -> Iterator[TaskParts]:
    """PMNIST's ten 10-class tasks; every task, the first included, is permuted.

    Task order: ``sklearn.utils.shuffle(arange(10), random_state=seed)`` (seed 0 included, as the
    official loader). Permutation of task ``r``: :func:`official_permutation` ``(r, 784)``, fixed
    across seeds (what the official cache holds after a seed-0 run). A generator, so that a
    loader keeps one permuted copy of the images alive at a time.
    """
    for r in seeded_order(NUM_PERMUTATIONS, seed):
        perm = official_permutation(r, 784, num_tasks=NUM_PERMUTATIONS)
        parts = {split: (np.ascontiguousarray(x[:, perm]), y) for split, (x, y) in splits.items()}
        yield TaskParts(f"{prefix}-{r}", 10, parts)


@register_sequence("mnist5", num_tasks=5, input_shape=(784,), network="mlp")
def load_mnist5(*, data_dir: Path | None, seed: int, download: bool) -> TaskSequence:
    """Five 2-class tasks {0,1}, {2,3}, ..., {8,9} in fixed order, labels remapped to 0/1."""
    raw = _flat_mnist(data_dir, sequence="mnist5", download=download)
    tasks = [_mnist_task(parts, seed=seed) for parts in pair_tasks(_arrays(raw), prefix="mnist")]
    notes = {"validation": _VALID_NOTE, **PAIR_NOTES}
    return TaskSequence(name="mnist5", tasks=tasks, input_shape=(784,), notes=notes)


@register_sequence("pmnist", num_tasks=NUM_PERMUTATIONS, input_shape=(784,), network="mlp")
def load_pmnist(*, data_dir: Path | None, seed: int, download: bool) -> TaskSequence:
    """Ten permuted-MNIST tasks with 10 classes (:func:`permuted_tasks`).

    The official code normalizes before permuting; the normalization is one scalar, so
    normalizing per batch afterwards is the same. Every task holds out the same validation images
    (same seed, same size).
    """
    raw = _flat_mnist(data_dir, sequence="pmnist", download=download)
    tasks = [
        _mnist_task(parts, seed=seed)
        for parts in permuted_tasks(_arrays(raw), seed=seed, prefix="pmnist")
    ]
    notes = {"validation": _VALID_NOTE, **PERMUTED_NOTES}
    return TaskSequence(name="pmnist", tasks=tasks, input_shape=(784,), notes=notes)


def _arrays(raw: RawImages) -> Arrays:
    return {"train": (raw.x_train, raw.y_train), "test": (raw.x_test, raw.y_test)}


def _mnist_task(parts: TaskParts, *, seed: int) -> Task:
    """A task of flat uint8 MNIST images: the official validation holdout, per-batch normalize."""
    return task_with_holdout(
        parts.name,
        parts.num_classes,
        train=parts.splits["train"],
        test=parts.splits["test"],
        valid_fraction=VALID_FRACTION,
        seed=seed,
        transform=uint8_normalize(MNIST_MEAN, MNIST_STD),
    )
