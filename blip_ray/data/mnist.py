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

from pathlib import Path
from typing import Any

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


@register_sequence("mnist5", num_tasks=5, input_shape=(784,), network="mlp")
def load_mnist5(*, data_dir: Path | None, seed: int, download: bool) -> TaskSequence:
    """Five 2-class tasks {0,1}, {2,3}, ..., {8,9} in fixed order, labels remapped to 0/1."""
    raw = _flat_mnist(data_dir, sequence="mnist5", download=download)
    tasks = []
    for first in range(0, 10, 2):
        in_train = (raw.y_train == first) | (raw.y_train == first + 1)
        in_test = (raw.y_test == first) | (raw.y_test == first + 1)
        tasks.append(
            _mnist_task(
                f"mnist-{first}-{first + 1}",
                2,
                train=(raw.x_train[in_train], raw.y_train[in_train] - first),
                test=(raw.x_test[in_test], raw.y_test[in_test] - first),
                seed=seed,
            )
        )
    notes = {
        "validation": _VALID_NOTE,
        "order": "fixed: {0,1},{2,3},{4,5},{6,7},{8,9}",
        "normalization": "mean 0.1307, std 0.3081 applied per batch to uint8 pixels",
    }
    return TaskSequence(name="mnist5", tasks=tasks, input_shape=(784,), notes=notes)


@register_sequence("pmnist", num_tasks=NUM_PERMUTATIONS, input_shape=(784,), network="mlp")
def load_pmnist(*, data_dir: Path | None, seed: int, download: bool) -> TaskSequence:
    """Ten permuted-MNIST tasks with 10 classes; every task, the first included, is permuted.

    Task order: ``sklearn.utils.shuffle(arange(10), random_state=seed)`` (seed 0 included, as the
    official loader). Permutation of task ``r``: :func:`official_permutation` ``(r, 784)``, fixed
    across seeds (what the official cache holds after a seed-0 run). The official code normalizes
    before permuting; the normalization is one scalar, so normalizing per batch afterwards is
    the same. Every task holds out the same validation images (same seed, same size).
    """
    raw = _flat_mnist(data_dir, sequence="pmnist", download=download)
    tasks = []
    for r in seeded_order(NUM_PERMUTATIONS, seed):
        perm = official_permutation(r, 784, num_tasks=NUM_PERMUTATIONS)
        tasks.append(
            _mnist_task(
                f"pmnist-{r}",
                10,
                train=(np.ascontiguousarray(raw.x_train[:, perm]), raw.y_train),
                test=(np.ascontiguousarray(raw.x_test[:, perm]), raw.y_test),
                seed=seed,
            )
        )
    notes = {
        "validation": _VALID_NOTE,
        "order": "sklearn.utils.shuffle(arange(10), random_state=seed)",
        "permutations": "task r: sklearn.utils.shuffle(arange(784), random_state=r*100+i), i = "
        "position of r in the seed-0 order (the official rule), fixed across seeds",
        "normalization": "mean 0.1307, std 0.3081 applied per batch to uint8 pixels",
    }
    return TaskSequence(name="pmnist", tasks=tasks, input_shape=(784,), notes=notes)


def _mnist_task(
    name: str, classes: int, *, train: tuple[Any, Any], test: tuple[Any, Any], seed: int
) -> Task:
    """A task of flat uint8 MNIST images: the official validation holdout, per-batch normalize."""
    return task_with_holdout(
        name,
        classes,
        train=train,
        test=test,
        valid_fraction=VALID_FRACTION,
        seed=seed,
        transform=uint8_normalize(MNIST_MEAN, MNIST_STD),
    )
