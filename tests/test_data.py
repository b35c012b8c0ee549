"""Task sequences: offline digits sequences; the paper's loaders on tiny real-format files."""

from __future__ import annotations

from pathlib import Path
from urllib.error import URLError

import numpy as np
import pytest
import torch
from data_fixtures import assert_same_sequence, write_mnist, write_tiny_dataset
from sklearn.utils import shuffle as sklearn_shuffle

from blip_ray.data import SEQUENCES, DataUnavailableError, load_sequence
from blip_ray.data.common import official_permutation, official_shuffle, seeded_order
from blip_ray.data.digits import digits_splits

PAPER_SEQUENCES = ["mnist5", "pmnist", "cifar", "mixture5", "miniimagenet"]
SEED0_CIFAR = [2, 8, 4, 9, 1, 6, 7, 3, 0, 5]


def _rows(x: torch.Tensor) -> set[bytes]:
    return {row.tobytes() for row in x.reshape(len(x), -1).numpy()}


def test_registry_holds_every_sequence() -> None:
    assert set(SEQUENCES) == {"digits5", "pdigits", "mnist5k", "pmnist5k", *PAPER_SEQUENCES}


def test_official_shuffle_matches_sklearn_and_the_notes() -> None:
    for n, seed in [(5, 0), (10, 0), (10, 3), (64, 7), (784, 205)]:
        assert (
            official_shuffle(n, seed).tolist()
            == sklearn_shuffle(np.arange(n), random_state=seed).tolist()
        )
    assert seeded_order(10, 0) == SEED0_CIFAR
    assert seeded_order(5, 0) == [2, 0, 1, 3, 4]


def test_digits5_shapes_labels_and_documented_split_sizes() -> None:
    seq = load_sequence("digits5", seed=0)
    assert seq.input_shape == (64,) and seq.head_sizes == [2] * 5
    assert [t.name for t in seq.tasks] == [f"digits-{a}-{a + 1}" for a in range(0, 10, 2)]
    for split, size in (("train", 1221), ("valid", 216), ("test", 360)):
        assert sum(len(getattr(t, split)) for t in seq.tasks) == size
    for task in seq.tasks:
        assert task.transform is None and task.train.x.dtype == torch.float32
        for split in (task.train, task.valid, task.test):
            assert split.x.shape[1:] == (64,) and set(split.y.tolist()) == {0, 1}
        train, valid, test = _rows(task.train.x), _rows(task.valid.x), _rows(task.test.x)
        assert not (train & valid or train & test or valid & test)
    all_train = torch.cat([t.train.x for t in seq.tasks])
    assert abs(all_train.mean().item()) < 1e-4 and abs(all_train.std().item() - 1) < 1e-3


def test_digits_test_split_is_fixed_and_validation_follows_the_seed() -> None:
    a, b = digits_splits(0), digits_splits(1)
    assert np.array_equal(a["test"][1], b["test"][1])
    # the same test images; only the training statistics used to normalize them differ
    x_a, x_b = a["test"][0], b["test"][0]
    assert np.allclose((x_a - x_a.mean()) / x_a.std(), (x_b - x_b.mean()) / x_b.std(), atol=1e-5)
    assert not np.array_equal(a["valid"][1], b["valid"][1])
    assert_same_sequence(load_sequence("digits5", seed=4), load_sequence("digits5", seed=4))


def test_pdigits_permutations_are_fixed_distinct_and_never_the_identity() -> None:
    seq = load_sequence("pdigits", seed=0)
    base_x, base_y = digits_splits(0)["train"]
    assert seq.head_sizes == [10] * 10 and seq.input_shape == (64,)
    assert [t.name for t in seq.tasks] == [f"pdigits-{r}" for r in SEED0_CIFAR]
    perms = []
    for task in seq.tasks:
        r = int(task.name.split("-")[1])
        perm = official_permutation(r, 64)
        assert np.array_equal(task.train.x.numpy(), base_x[:, perm])
        assert np.array_equal(task.train.y.numpy(), base_y)
        assert not np.array_equal(perm, np.arange(64))
        assert not np.array_equal(task.train.x.numpy(), base_x)
        perms.append(tuple(perm))
    assert len(set(perms)) == 10
    assert all(len(t.test) == 360 and len(t.valid) == 216 for t in seq.tasks)


def test_pdigits_order_changes_with_the_seed_but_permutations_do_not() -> None:
    seq0, seq1 = load_sequence("pdigits", seed=0), load_sequence("pdigits", seed=1)
    names0, names1 = [t.name for t in seq0.tasks], [t.name for t in seq1.tasks]
    assert names0 != names1 and sorted(names0) == sorted(names1)
    test_x1 = digits_splits(1)["test"][0]
    for task in seq1.tasks:  # a name always means the same permutation
        perm = official_permutation(int(task.name.split("-")[1]), 64)
        assert np.array_equal(task.test.x.numpy(), test_x1[:, perm])
    assert_same_sequence(load_sequence("pdigits", seed=1), seq1)


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("tiny_data")
    written = {}
    for name in PAPER_SEQUENCES:
        written.update(write_tiny_dataset(name, root))
    return root, written


@pytest.mark.parametrize("name", sorted(SEQUENCES))
def test_registered_facts_are_what_the_loader_returns(name: str, tiny_root) -> None:
    """Specs are checked against the registry without loading data, so it must not disagree."""
    entry, root = SEQUENCES[name], tiny_root[0]
    sequence = load_sequence(name, data_dir=root, seed=1, download=False)
    assert (len(sequence), sequence.input_shape) == (entry.num_tasks, entry.input_shape)


def _check_uint8_task(
    task, shape: tuple[int, ...], num_classes: int, valid_fraction: float
) -> None:
    assert task.num_classes == num_classes
    n = len(task.train) + len(task.valid)
    assert len(task.valid) == int(valid_fraction * n)
    for split in (task.train, task.valid, task.test):
        assert split.x.dtype == torch.uint8 and split.x.shape[1:] == shape
        assert split.y.min() >= 0 and split.y.max() < num_classes
    assert not _rows(task.train.x) & _rows(task.valid.x)


def test_mnist5_on_real_idx_files(tiny_root: tuple[Path, dict]) -> None:
    root, written = tiny_root
    seq = load_sequence("mnist5", data_dir=root, seed=0, download=False)
    assert seq.input_shape == (784,) and seq.head_sizes == [2] * 5
    x_test, y_test = written["mnist"]["test"]
    for first, task in zip(range(0, 10, 2), seq.tasks, strict=True):
        _check_uint8_task(task, (784,), 2, 0.1)
        keep = (y_test == first) | (y_test == first + 1)
        assert np.array_equal(task.test.x.numpy(), x_test[keep].reshape(-1, 784))
        assert np.array_equal(task.test.y.numpy(), y_test[keep] - first)
    batch = seq.tasks[0].test.x[:4]
    expected = (batch.float() / 255 - 0.1307) / 0.3081
    assert torch.allclose(seq.tasks[0].inputs(batch), expected, atol=1e-5)
    assert "validation" in seq.notes and "copy" in seq.notes["validation"]


def test_mnist_reads_gzipped_idx_files(tmp_path: Path) -> None:
    write_mnist(tmp_path, gz=True)
    seq = load_sequence("mnist5", data_dir=tmp_path, seed=0, download=False)
    assert sum(len(t.test) for t in seq.tasks) == 30


def test_pmnist_permutes_every_task_in_seeded_order(tiny_root: tuple[Path, dict]) -> None:
    root, written = tiny_root
    x_test = written["mnist"]["test"][0].reshape(-1, 784)
    seq = load_sequence("pmnist", data_dir=root, seed=0, download=False)
    assert [t.name for t in seq.tasks] == [f"pmnist-{r}" for r in SEED0_CIFAR]
    for task in seq.tasks:
        _check_uint8_task(task, (784,), 10, 0.1)
        perm = official_permutation(int(task.name.split("-")[1]), 784)
        assert np.array_equal(task.test.x.numpy(), x_test[:, perm])
        assert not np.array_equal(perm, np.arange(784))
    seq1 = load_sequence("pmnist", data_dir=root, seed=1, download=False)
    assert [t.name for t in seq1.tasks] != [t.name for t in seq.tasks]


def test_cifar_alternates_by_seed_with_official_normalization(tiny_root: tuple[Path, dict]) -> None:
    root, written = tiny_root
    seq = load_sequence("cifar", data_dir=root, seed=0, download=False)
    expected_names = [f"cifar10-{k}" if k < 5 else f"cifar100-{k - 5}" for k in SEED0_CIFAR]
    assert [t.name for t in seq.tasks] == expected_names
    assert seq.head_sizes == [2 if k < 5 else 20 for k in SEED0_CIFAR]
    for task in seq.tasks:
        _check_uint8_task(task, (3, 32, 32), task.num_classes, 0.1)
    x_test, y_test = written["cifar100"]["test"]  # cifar100-3: fine labels 60..79
    keep = y_test // 20 == 3
    assert np.array_equal(seq.tasks[1].test.x.numpy(), x_test[keep])
    assert np.array_equal(seq.tasks[1].test.y.numpy(), y_test[keep] - 60)
    mean = torch.tensor([125.3, 123.0, 113.9]).view(1, 3, 1, 1) / 255
    std = torch.tensor([63.0, 62.1, 66.7]).view(1, 3, 1, 1) / 255
    batch = seq.tasks[0].train.x[:3]
    assert torch.allclose(seq.tasks[0].inputs(batch), (batch / 255 - mean) / std, atol=1e-5)
    seq1 = load_sequence("cifar", data_dir=root, seed=1, download=False)
    assert [t.name for t in seq1.tasks] != expected_names


MIXTURE_STATS = {
    "cifar10": (125.3 / 255, 63.0 / 255),
    "notmnist": (0.4254, 0.4501),
    "mnist": (0.1, 0.2752),
    "svhn": (0.4377, 0.198),
    "fashion-mnist": (0.2190, 0.3318),
}


def test_mixture5_pads_replicates_and_normalizes_per_dataset(tiny_root: tuple[Path, dict]) -> None:
    root, written = tiny_root
    seq = load_sequence("mixture5", data_dir=root, seed=0, download=False)
    assert [t.name for t in seq.tasks] == ["mnist", "cifar10", "notmnist", "svhn", "fashion-mnist"]
    assert seq.input_shape == (3, 32, 32) and seq.head_sizes == [10] * 5
    for task in seq.tasks:
        _check_uint8_task(task, (3, 32, 32), 10, 0.15)
        mean, std = MIXTURE_STATS[task.name]  # channel 0 of the official table
        zero = task.inputs(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))
        assert zero[0, 0, 0, 0].item() == pytest.approx(-mean / std, rel=1e-5)
    by_name = {t.name: t for t in seq.tasks}
    for name in ("mnist", "fashion-mnist"):
        x = by_name[name].test.x
        assert x[:, :, :2].eq(0).all() and x[:, :, :, -2:].eq(0).all()
        assert torch.equal(x[:, 0], x[:, 2])
        raw_x, raw_y = written[name]["test"]
        assert np.array_equal(x[:, 0, 2:-2, 2:-2].numpy(), raw_x[:, 0])
        assert np.array_equal(by_name[name].test.y.numpy(), raw_y)
    assert torch.equal(by_name["notmnist"].test.x[:, 1], by_name["notmnist"].test.x[:, 0])
    svhn_x, svhn_y = written["svhn"]["test"]
    assert np.array_equal(by_name["svhn"].test.x.numpy(), svhn_x)
    assert np.array_equal(by_name["svhn"].test.y.numpy(), svhn_y)  # .mat label 10 is digit 0
    order1 = [
        t.name for t in load_sequence("mixture5", data_dir=root, seed=1, download=False).tasks
    ]
    assert order1 != [t.name for t in seq.tasks]


def test_miniimagenet_assigns_classes_by_seeded_permutation(tiny_root: tuple[Path, dict]) -> None:
    root, written = tiny_root
    seq = load_sequence("miniimagenet", data_dir=root, seed=0, download=False)
    assert seq.input_shape == (3, 84, 84) and seq.head_sizes == [5] * 20
    classes = np.split(np.random.RandomState(0).permutation(100), 20)
    x_test, y_test = written["miniimagenet"]["test"]
    for task, task_classes in zip(seq.tasks, classes, strict=True):
        assert len(task.valid) == int(np.floor(0.02 * (len(task.train) + len(task.valid))))
        assert len(task.valid) == 1 and len(task.train) == 49
        for split in (task.train, task.valid, task.test):
            assert split.x.dtype == torch.uint8 and split.x.shape[1:] == (3, 84, 84)
        keep = np.isin(y_test, task_classes)
        assert np.array_equal(task.test.x.numpy(), x_test[keep])
        assert task_classes[task.test.y.numpy()].tolist() == y_test[keep].tolist()
    zero = seq.tasks[0].inputs(torch.zeros(1, 3, 84, 84, dtype=torch.uint8))
    assert zero[0, :, 0, 0].tolist() == pytest.approx(
        [-0.485 / 0.229, -0.456 / 0.224, -0.406 / 0.225]
    )


@pytest.mark.parametrize("name", PAPER_SEQUENCES)
def test_missing_files_name_the_files_and_the_folder(name: str, tmp_path: Path) -> None:
    with pytest.raises(DataUnavailableError) as info:
        load_sequence(name, data_dir=tmp_path, seed=0, download=False)
    message = str(info.value)
    assert "\n" not in message and str(tmp_path) in message and "download=True" in message
    key_file = {
        "mnist5": "train-images-idx3-ubyte",
        "pmnist": "t10k-labels-idx1-ubyte",
        "cifar": "data_batch_1",
        "mixture5": "notmnist_train.pkl",
        "miniimagenet": "train.pkl",
    }[name]
    assert key_file in message


@pytest.mark.parametrize("name", PAPER_SEQUENCES)
def test_missing_data_dir_says_to_set_it(name: str) -> None:
    with pytest.raises(DataUnavailableError, match="data_dir"):
        load_sequence(name, data_dir=None, seed=0, download=True)


def test_failed_download_falls_through_to_the_instructions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torchvision

    def offline(self: object) -> None:
        raise URLError("network unreachable")

    monkeypatch.setattr(torchvision.datasets.MNIST, "download", offline)
    with pytest.raises(DataUnavailableError, match="download=True failed: .*network unreachable"):
        load_sequence("mnist5", data_dir=tmp_path, seed=0, download=True)


def test_miniimagenet_pickles_built_from_raw_folders(tmp_path: Path) -> None:
    from PIL import Image

    from blip_ray.data.miniimagenet import build_pickles, read_pickle

    for class_id, folder in enumerate(["n02", "n01", "n03"]):  # sorted order gives n01 id 0
        (tmp_path / "MI_raw" / folder).mkdir(parents=True)
        for k in range(4):
            rgb = np.zeros((40, 40, 3), dtype=np.uint8)
            rgb[..., 0], rgb[..., 2] = 60 * class_id + k, 200  # red encodes class and image
            Image.fromarray(rgb).save(tmp_path / "MI_raw" / folder / f"{k}.png")
    build_pickles(tmp_path / "MI_raw", tmp_path, train_per_class=3)
    x_train, y_train = read_pickle(tmp_path / "train.pkl")
    x_test, y_test = read_pickle(tmp_path / "test.pkl")
    assert x_train.shape == (9, 3, 84, 84) and x_test.shape == (3, 3, 84, 84)  # resized
    assert y_train.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2] and y_test.tolist() == [0, 1, 2]
    assert (x_train[:, 0] == 200).all()  # BGR like cv2.imread: blue first, red last
    reds = np.concatenate([x_train[:, 2, 0, 0], x_test[:, 2, 0, 0]])
    folder_of = {0: 1, 1: 0, 2: 2}  # class id -> index in the unsorted list above
    labels = np.concatenate([y_train, y_test])
    assert sorted(reds.tolist()) == sorted(
        60 * folder_of[c] + k for c in range(3) for k in range(4)
    )
    assert all(
        60 * folder_of[c] <= r < 60 * folder_of[c] + 4 for c, r in zip(labels, reds, strict=True)
    )
