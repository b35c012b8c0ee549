"""Tiny datasets written in the real on-disk formats, for tests of the loaders and of the harness.

``write_tiny_dataset(name, root)`` writes everything sequence ``name`` reads under ``root`` (so
``load_sequence(name, data_dir=root, download=False)`` works) and returns the raw arrays it wrote,
keyed by dataset, so tests can compare loaded tasks with what is on disk. Images carry a bright
class-dependent stripe over noise, so a model can learn them in a smoke run.
"""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import torch
from scipy.io import savemat

from blip_ray.data import TaskSequence

#: (x uint8 (N, C, H, W) or (N, H, W, C) for miniImageNet, y int64) per split
Written = dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]


def tiny_images(
    num_classes: int, per_class: int, shape: tuple[int, int, int], *, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Shuffled uint8 images ``(N, *shape)`` in CHW order and their labels (``per_class`` each)."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.repeat(np.arange(num_classes), per_class))
    images = rng.integers(0, 128, size=(len(labels), *shape), dtype=np.uint8)
    height = shape[1]
    for index, label in enumerate(labels):
        row = (label * height) // num_classes
        images[index, label % shape[0], row : row + max(1, height // 10)] = 255
    return images, labels.astype(np.int64)


def _idx_bytes(array: np.ndarray) -> bytes:
    """An array in the MNIST idx format: magic 0x0000 08 <ndim>, big-endian dims, raw uint8."""
    header = struct.pack(">I", 0x0800 + array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def write_mnist(
    root: Path, *, fashion: bool = False, per_class: tuple[int, int] = (12, 3), gz: bool = False
) -> Written:
    """idx files in ``root/{MNIST,FashionMNIST}/raw`` (gzipped names too when ``gz``)."""
    raw = root / ("FashionMNIST" if fashion else "MNIST") / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    written = {}
    for split, prefix, count, seed in (
        ("train", "train", per_class[0], 1),
        ("test", "t10k", per_class[1], 2),
    ):
        x, y = tiny_images(10, count, (1, 28, 28), seed=seed + 10 * fashion)
        for kind, array in (("images-idx3", x[:, 0]), ("labels-idx1", y.astype(np.uint8))):
            data = _idx_bytes(array)
            path = raw / f"{prefix}-{kind}-ubyte"
            if gz:
                path = path.with_name(path.name + ".gz")
                data = gzip.compress(data)
            path.write_bytes(data)
        written[split] = (x, y)
    return {"fashion-mnist" if fashion else "mnist": written}


def _dump(path: Path, content: object) -> None:
    with open(path, "wb") as handle:
        pickle.dump(content, handle, protocol=2)  # the published CIFAR pickles are protocol 2


def write_cifar10(root: Path, *, per_class: tuple[int, int] = (10, 3)) -> Written:
    """``cifar-10-batches-py``: five train batches, ``test_batch``, ``batches.meta``."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    x, y = tiny_images(10, per_class[0], (3, 32, 32), seed=3)
    for batch, chunk in enumerate(np.array_split(np.arange(len(y)), 5), start=1):
        _dump(
            folder / f"data_batch_{batch}",
            {
                "batch_label": f"training batch {batch} of 5",
                "labels": y[chunk].tolist(),
                "data": x[chunk].reshape(len(chunk), -1),
                "filenames": [f"{i}.png" for i in chunk],
            },
        )
    x_test, y_test = tiny_images(10, per_class[1], (3, 32, 32), seed=4)
    _dump(
        folder / "test_batch",
        {
            "batch_label": "testing batch 1 of 1",
            "labels": y_test.tolist(),
            "data": x_test.reshape(len(y_test), -1),
            "filenames": [f"{i}.png" for i in range(len(y_test))],
        },
    )
    _dump(
        folder / "batches.meta",
        {
            "label_names": [f"class{i}" for i in range(10)],
            "num_cases_per_batch": len(y) // 5,
            "num_vis": 3072,
        },
    )
    return {"cifar10": {"train": (x, y), "test": (x_test, y_test)}}


def write_cifar100(root: Path, *, per_class: tuple[int, int] = (10, 2)) -> Written:
    """``cifar-100-python``: ``train``, ``test`` (fine and coarse labels) and ``meta``."""
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for split, count, seed in (("train", per_class[0], 5), ("test", per_class[1], 6)):
        x, y = tiny_images(100, count, (3, 32, 32), seed=seed)
        _dump(
            folder / split,
            {
                "filenames": [f"{i}.png" for i in range(len(y))],
                "batch_label": f"{split} batch",
                "fine_labels": y.tolist(),
                "coarse_labels": (y // 5).tolist(),
                "data": x.reshape(len(y), -1),
            },
        )
        written[split] = (x, y)
    _dump(
        folder / "meta",
        {
            "fine_label_names": [f"fine{i}" for i in range(100)],
            "coarse_label_names": [f"coarse{i}" for i in range(20)],
        },
    )
    return {"cifar100": written}


def write_svhn(root: Path, *, per_class: tuple[int, int] = (10, 3)) -> Written:
    """``SVHN/{train,test}_32x32.mat``: ``X`` (32, 32, 3, N) uint8, ``y`` (N, 1), 10 for digit 0."""
    folder = root / "SVHN"
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for split, count, seed in (("train", per_class[0], 7), ("test", per_class[1], 8)):
        x, y = tiny_images(10, count, (3, 32, 32), seed=seed)
        mat_labels = np.where(y == 0, 10, y).astype(np.uint8).reshape(-1, 1)
        savemat(folder / f"{split}_32x32.mat", {"X": x.transpose(2, 3, 1, 0), "y": mat_labels})
        written[split] = (x, y)
    return {"svhn": written}


def write_notmnist(root: Path, *, per_class: tuple[int, int] = (10, 3)) -> Written:
    """``notmnist/notmnist_{train,test}.pkl`` as nkundiushuti/notmnist_convert pickles them."""
    folder = root / "notmnist"
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for split, count, seed in (("train", per_class[0], 9), ("test", per_class[1], 10)):
        x, y = tiny_images(10, count, (1, 32, 32), seed=seed)
        with open(folder / f"notmnist_{split}.pkl", "wb") as handle:
            content = {"features": x, "labels": y.astype(np.uint8)}
            pickle.dump(content, handle, pickle.HIGHEST_PROTOCOL)
        written[split] = (x, y)
    return {"notmnist": written}


def write_miniimagenet(
    root: Path, *, per_class: tuple[int, int] = (10, 1), image_size: int = 84
) -> Written:
    """``miniImageNet/{train,test}.pkl`` as the official split script writes them.

    Lists of HxWx3 uint8 images grouped by class (``get_total``), labels 0-99. The returned
    arrays are in the loader's CHW order (only meaningful when ``image_size`` is 84).
    """
    folder = root / "miniImageNet"
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for split, count, seed in (("train", per_class[0], 11), ("test", per_class[1], 12)):
        x, y = tiny_images(100, count, (3, image_size, image_size), seed=seed)
        grouped = np.argsort(y, kind="stable")
        x, y = x[grouped], y[grouped]
        content = {"images": list(x.transpose(0, 2, 3, 1)), "labels": y.tolist()}
        with open(folder / f"{split}.pkl", "wb") as handle:
            pickle.dump(content, handle)
        written[split] = (x, y)
    return {"miniimagenet": written}


def write_tiny_dataset(name: str, root: Path) -> Written:
    """Write every file sequence ``name`` reads under ``root``; digits5/pdigits need none."""
    root = Path(root)
    writers = {
        "digits5": [],
        "pdigits": [],
        "mnist5": [write_mnist],
        "pmnist": [write_mnist],
        "cifar": [write_cifar10, write_cifar100],
        "mixture5": [
            write_cifar10,
            write_notmnist,
            write_mnist,
            write_svhn,
            lambda r: write_mnist(r, fashion=True),
        ],
        "miniimagenet": [write_miniimagenet],
    }
    if name not in writers:
        raise KeyError(f"no tiny dataset for {name!r}; known: {', '.join(sorted(writers))}")
    written: Written = {}
    for write in writers[name]:
        written.update(write(root))
    return written


def assert_same_sequence(a: TaskSequence, b: TaskSequence) -> None:
    """The two sequences hold the same tasks, names and every split's tensors to the bit."""
    assert [t.name for t in a.tasks] == [t.name for t in b.tasks]
    for ta, tb in zip(a.tasks, b.tasks, strict=True):
        for split in ("train", "valid", "test"):
            assert torch.equal(getattr(ta, split).x, getattr(tb, split).x)
            assert torch.equal(getattr(ta, split).y, getattr(tb, split).y)
