"""Readers of the raw datasets in their published on-disk formats, as compact uint8 arrays.

Every reader returns :class:`RawImages` (uint8 ``(N, C, H, W)`` images, int64 labels) and raises
:class:`DataUnavailableError` with one line naming the files and the folder when they are missing.
Downloads go through torchvision (or its download helper for notMNIST) and only run when files are
missing and ``download=True``.

CIFAR and SVHN files are read here rather than through ``torchvision.datasets``: torchvision pins
the md5 of each complete official file, so it rejects any other file in the same layout (subsets,
the tiny test fixtures). The layout and the parsing are torchvision's; downloads still verify md5.
torchvision is imported lazily so that ``import blip_ray.data`` stays cheap for digits-only runs.
"""

from __future__ import annotations

import gzip
import pickle
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from blip_ray.data.common import ensure_files

MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
CIFAR10_FILES = (
    "data_batch_1",
    "data_batch_2",
    "data_batch_3",
    "data_batch_4",
    "data_batch_5",
    "test_batch",
)
CIFAR100_FILES = ("train", "test")
SVHN_FILES = ("train_32x32.mat", "test_32x32.mat")
NOTMNIST_FILES = ("notmnist_train.pkl", "notmnist_test.pkl")
NOTMNIST_URL = "https://github.com/nkundiushuti/notmnist_convert/blob/master/notmnist.zip?raw=true"


@dataclass(frozen=True)
class RawImages:
    """Train and test images of one dataset: uint8 ``(N, C, H, W)`` and int64 labels."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def _needs(sequence: str, dataset: str, folder: Path, files: tuple[str, ...], how: str) -> str:
    return (
        f"{sequence} needs {dataset} in {folder} ({', '.join(files)}); {how}, "
        "or pass download=True where the network allows"
    )


def read_mnist(data_dir: Path, *, fashion: bool, download: bool, sequence: str) -> RawImages:
    """MNIST or FashionMNIST from torchvision's layout ``<data_dir>/{MNIST,FashionMNIST}/raw``.

    The four idx files may be gzipped (as published); missing plain files are unzipped first,
    because torchvision only looks for the plain names.
    """
    from torchvision import datasets

    cls = datasets.FashionMNIST if fashion else datasets.MNIST
    raw = data_dir / cls.__name__ / "raw"
    for name in MNIST_FILES:
        packed = raw / f"{name}.gz"
        if not (raw / name).is_file() and packed.is_file():
            with gzip.open(packed, "rb") as src, open(raw / name, "wb") as dst:
                shutil.copyfileobj(src, dst)
    files = tuple(f"{name}[.gz]" for name in MNIST_FILES)
    ensure_files(
        [raw / name for name in MNIST_FILES],
        download=download,
        fetch=lambda: cls(str(data_dir), train=True, download=True),
        needs=_needs(sequence, cls.__name__, raw, files, f"download them from {cls.mirrors[0]}"),
    )
    train = cls(str(data_dir), train=True, download=False)
    test = cls(str(data_dir), train=False, download=False)
    return RawImages(
        x_train=train.data.numpy()[:, None],
        y_train=train.targets.numpy().astype(np.int64),
        x_test=test.data.numpy()[:, None],
        y_test=test.targets.numpy().astype(np.int64),
    )


def _read_cifar_pickles(folder: Path, names: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    images, labels = [], []
    for name in names:
        with open(folder / name, "rb") as handle:
            entry = pickle.load(handle, encoding="latin1")
        images.append(np.asarray(entry["data"], dtype=np.uint8))
        labels.extend(entry["labels"] if "labels" in entry else entry["fine_labels"])
    return np.vstack(images).reshape(-1, 3, 32, 32), np.asarray(labels, dtype=np.int64)


def read_cifar(data_dir: Path, *, cifar100: bool, download: bool, sequence: str) -> RawImages:
    """CIFAR-10 (``cifar-10-batches-py``) or CIFAR-100 (``cifar-100-python``, fine labels 0-99)."""
    from torchvision import datasets

    cls = datasets.CIFAR100 if cifar100 else datasets.CIFAR10
    names = CIFAR100_FILES if cifar100 else CIFAR10_FILES
    folder = data_dir / cls.base_folder
    ensure_files(
        [folder / name for name in names],
        download=download,
        fetch=lambda: cls(str(data_dir), train=True, download=True),
        needs=_needs(sequence, cls.__name__, folder, names, f"extract {cls.url} into {data_dir}"),
    )
    x_train, y_train = _read_cifar_pickles(folder, names[:-1])
    x_test, y_test = _read_cifar_pickles(folder, names[-1:])
    return RawImages(x_train, y_train, x_test, y_test)


def read_svhn(data_dir: Path, *, download: bool, sequence: str) -> RawImages:
    """SVHN cropped digits from ``<data_dir>/SVHN/{train,test}_32x32.mat`` (label 10 is digit 0)."""
    from scipy.io import loadmat
    from torchvision import datasets

    folder = data_dir / "SVHN"

    def fetch() -> None:
        for split in ("train", "test"):
            datasets.SVHN(str(folder), split=split, download=True)

    ensure_files(
        [folder / name for name in SVHN_FILES],
        download=download,
        fetch=fetch,
        needs=_needs(
            sequence,
            "SVHN",
            folder,
            SVHN_FILES,
            "download them from http://ufldl.stanford.edu/housenumbers/",
        ),
    )
    arrays = []
    for name in SVHN_FILES:
        mat = loadmat(str(folder / name))
        labels = mat["y"].astype(np.int64).reshape(-1)
        labels[labels == 10] = 0
        # X is (H, W, C, N); torchvision's transpose gives (N, C, H, W)
        arrays += [
            np.ascontiguousarray(np.transpose(mat["X"], (3, 2, 0, 1)), dtype=np.uint8),
            labels,
        ]
    return RawImages(*arrays)


def read_notmnist(data_dir: Path, *, download: bool, sequence: str) -> RawImages:
    """notMNIST letters A-J as pickled by nkundiushuti/notmnist_convert (read by the official code).

    Format: ``<data_dir>/notmnist/notmnist_{train,test}.pkl``, each a pickled dict with
    ``'features'``: uint8 ``(N, 1, 32, 32)`` and ``'labels'``: ``(N,)`` ints 0-9 (A-J). The
    published ``notmnist.zip`` holds both files. Pickles run code when loaded: use trusted files.
    """
    from torchvision.datasets.utils import download_and_extract_archive

    folder = data_dir / "notmnist"
    ensure_files(
        [folder / name for name in NOTMNIST_FILES],
        download=download,
        fetch=lambda: download_and_extract_archive(
            NOTMNIST_URL, str(folder), filename="notmnist.zip"
        ),
        needs=_needs(
            sequence,
            "notMNIST",
            folder,
            NOTMNIST_FILES,
            f"extract them from {NOTMNIST_URL} (dicts with 'features' uint8 "
            "(N,1,32,32) and 'labels' 0-9)",
        ),
    )
    arrays = []
    for name in NOTMNIST_FILES:
        with open(folder / name, "rb") as handle:
            entry = pickle.load(handle)
        features = np.asarray(entry["features"], dtype=np.uint8)
        arrays += [
            features.reshape(len(features), 1, 32, 32),
            np.asarray(entry["labels"], dtype=np.int64).reshape(-1),
        ]
    return RawImages(*arrays)
