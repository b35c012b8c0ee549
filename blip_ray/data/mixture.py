"""``mixture5``: the "sequence of 5 datasets" (UCB/ACL/BLIP ``mixture5`` loader).

Dataset ids: 0 CIFAR-10, 1 notMNIST (letters A-J), 2 MNIST, 3 SVHN, 4 FashionMNIST; 10 classes
each, all at (3, 32, 32): MNIST and FashionMNIST are zero-padded by 2 px, grey-scale images are
replicated to 3 channels. Order: ``sklearn.utils.shuffle(arange(5), random_state=seed)`` (seed 0
gives MNIST, CIFAR-10, notMNIST, SVHN, FashionMNIST). 15 % of each training set is validation,
shuffled with the seed. Normalization is the official per-dataset table (statistics of the padded
images for MNIST/FashionMNIST), applied per batch to stored uint8 pixels.

Files under ``data_dir`` (see :mod:`blip_ray.data.sources`): ``cifar-10-batches-py/``,
``notmnist/notmnist_{train,test}.pkl``, ``MNIST/raw/``, ``SVHN/{train,test}_32x32.mat``,
``FashionMNIST/raw/``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from blip_ray.data.base import DataUnavailableError, TaskSequence, register_sequence
from blip_ray.data.cifar import CIFAR_MEAN, CIFAR_STD
from blip_ray.data.common import require_data_dir, seeded_order, task_with_holdout, uint8_normalize
from blip_ray.data.sources import RawImages, read_cifar, read_mnist, read_notmnist, read_svhn

VALID_FRACTION = 0.15


@dataclass(frozen=True)
class MixtureSource:
    """One dataset of the mixture: its reader, padding and official normalization."""

    name: str
    read: Callable[..., RawImages]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    pad: int = 0


#: Indexed by the official dataset id (the order is a seeded shuffle of these ids).
SOURCES: tuple[MixtureSource, ...] = (
    MixtureSource("cifar10", partial(read_cifar, cifar100=False), CIFAR_MEAN, CIFAR_STD),
    MixtureSource("notmnist", read_notmnist, (0.4254,), (0.4501,)),
    MixtureSource("mnist", partial(read_mnist, fashion=False), (0.1,), (0.2752,), pad=2),
    MixtureSource("svhn", read_svhn, (0.4377, 0.4438, 0.4728), (0.198, 0.201, 0.197)),
    MixtureSource("fashion-mnist", partial(read_mnist, fashion=True), (0.2190,), (0.3318,), pad=2),
)


def to_rgb32(images: np.ndarray, pad: int) -> np.ndarray:
    """Zero-pad (as ``transforms.Pad(pad, fill=0)``), replicate grey to 3 channels: (N,3,32,32)."""
    if pad:
        images = np.pad(images, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    if images.shape[1] == 1:
        images = np.repeat(images, 3, axis=1)
    if images.shape[1:] != (3, 32, 32):
        raise ValueError(f"expected images of (3, 32, 32) after padding, got {images.shape[1:]}")
    return images


@register_sequence("mixture5", num_tasks=5, input_shape=(3, 32, 32), network="alexnet32")
def load_mixture5(*, data_dir: Path | None, seed: int, download: bool) -> TaskSequence:
    """Five 10-class tasks, one per dataset, in the seeded order; task names are dataset names."""
    names = ", ".join(source.name for source in SOURCES)
    root = require_data_dir(data_dir, sequence="mixture5", datasets=names)
    raws, problems = {}, []
    for index, source in enumerate(SOURCES):
        try:
            raws[index] = source.read(root, download=download, sequence="mixture5")
        except DataUnavailableError as exc:
            problems.append(str(exc))
    if problems:  # report every missing dataset at once, still on one line
        raise DataUnavailableError(" | ".join(problems))

    tasks = []
    for index in seeded_order(len(SOURCES), seed):
        source, raw = SOURCES[index], raws[index]
        channels = 3 // len(source.mean)
        tasks.append(
            task_with_holdout(
                source.name,
                10,
                train=(to_rgb32(raw.x_train, source.pad), raw.y_train),
                test=(to_rgb32(raw.x_test, source.pad), raw.y_test),
                valid_fraction=VALID_FRACTION,
                seed=seed,
                transform=uint8_normalize(source.mean * channels, source.std * channels),
            )
        )
    notes = {
        "order": "sklearn.utils.shuffle(arange(5), random_state=seed) over ids 0 cifar10, "
        "1 notmnist, 2 mnist, 3 svhn, 4 fashion-mnist",
        "validation": "15% of each task's training images, shuffled with random_state=seed",
        "preprocessing": "MNIST/FashionMNIST zero-padded by 2 px; grey replicated to 3 channels",
        "normalization": "official per-dataset mean/std, per batch on uint8 pixels",
    }
    return TaskSequence(name="mixture5", tasks=tasks, input_shape=(3, 32, 32), notes=notes)
