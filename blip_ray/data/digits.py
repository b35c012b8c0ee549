"""``digits5`` and ``pdigits``: MNIST-5 and PMNIST in miniature, from data that ships offline.

scikit-learn's handwritten digits (1797 images of 8x8, values 0-16) need no download, so these two
sequences let every test and smoke run exercise the real task loop. They mirror mnist5/pmnist:

Splits (the same for both sequences, built once from all 1797 images):
  * test: stratified 20 % (360 images), ``random_state=0`` -- fixed for every seed;
  * valid: stratified 15 % of the remaining 1437 (216 images), ``random_state=seed``;
  * train: the other 1221 images.
Inputs are scaled to [0, 1], then normalized with the scalar mean/std of the training pixels (a
per-pixel std is zero on the always-blank border), flattened to 64 floats.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from blip_ray.data.base import Task, TaskSequence, register_sequence
from blip_ray.data.common import official_permutation, seeded_order, to_split

TEST_FRACTION = 0.2
VALID_FRACTION = 0.15
#: random_state of the test split; independent of the seed so test sets are comparable across runs
TEST_RANDOM_STATE = 0
NUM_PERMUTATIONS = 10

_SPLITS_NOTE = (
    "test = stratified 20% of sklearn digits (random_state 0, fixed); valid = stratified 15% of "
    "the rest (random_state=seed); train = the remaining 1221; scaled to [0,1] then normalized "
    "with the training pixels' scalar mean/std"
)

Arrays = dict[str, tuple[np.ndarray, np.ndarray]]


def digits_splits(seed: int) -> Arrays:
    """Normalized, flattened ``{"train", "valid", "test"} -> (x float32 (N, 64), y int64)``."""
    # imported here: scikit-learn takes seconds to import and only these two loaders need it
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = digits.images.reshape(len(digits.images), -1).astype(np.float32) / 16.0
    y = digits.target.astype(np.int64)
    x_rest, x_test, y_rest, y_test = train_test_split(
        x, y, test_size=TEST_FRACTION, stratify=y, random_state=TEST_RANDOM_STATE
    )
    x_train, x_valid, y_train, y_valid = train_test_split(
        x_rest, y_rest, test_size=VALID_FRACTION, stratify=y_rest, random_state=seed
    )
    mean, std = float(x_train.mean()), float(x_train.std())
    splits = {"train": (x_train, y_train), "valid": (x_valid, y_valid), "test": (x_test, y_test)}
    return {name: ((xs - mean) / std, ys) for name, (xs, ys) in splits.items()}


@register_sequence("digits5", num_tasks=5, input_shape=(64,), network="mlp")
def load_digits5(*, data_dir: Path | None, seed: int, download: bool) -> TaskSequence:
    """Five 2-class tasks {0,1}, {2,3}, ..., {8,9} in fixed order (as mnist5), labels 0/1.

    ``data_dir`` and ``download`` are ignored: the data ships with scikit-learn.
    """
    del data_dir, download
    splits = digits_splits(seed)
    tasks = []
    for first in range(0, 10, 2):
        parts = {}
        for name, (x, y) in splits.items():
            keep = (y == first) | (y == first + 1)
            parts[name] = to_split(x[keep], y[keep] - first)
        tasks.append(Task(name=f"digits-{first}-{first + 1}", num_classes=2, **parts))
    notes = {
        "source": "sklearn.datasets.load_digits",
        "splits": _SPLITS_NOTE,
        "order": "fixed: {0,1},{2,3},{4,5},{6,7},{8,9}",
    }
    return TaskSequence(name="digits5", tasks=tasks, input_shape=(64,), notes=notes)


@register_sequence("pdigits", num_tasks=NUM_PERMUTATIONS, input_shape=(64,), network="mlp")
def load_pdigits(*, data_dir: Path | None, seed: int, download: bool) -> TaskSequence:
    """Ten 10-class tasks, each a fixed pixel permutation of all digits (as pmnist).

    Permutation ``r`` is :func:`official_permutation` ``(r, 64)`` -- pmnist's rule, none the
    identity, the same for every seed; the seed only shuffles the order of the ten tasks
    (``sklearn.utils.shuffle(arange(10), random_state=seed)``, seed 0 included, as pmnist).
    Task names carry ``r``, so a name always means the same permutation.
    """
    del data_dir, download
    splits = digits_splits(seed)
    tasks = []
    for r in seeded_order(NUM_PERMUTATIONS, seed):
        perm = official_permutation(r, 64, num_tasks=NUM_PERMUTATIONS)
        parts = {name: to_split(x[:, perm], y) for name, (x, y) in splits.items()}
        tasks.append(Task(name=f"pdigits-{r}", num_classes=10, **parts))
    notes = {
        "source": "sklearn.datasets.load_digits",
        "splits": _SPLITS_NOTE,
        "order": "sklearn.utils.shuffle(arange(10), random_state=seed)",
        "permutations": "task r: sklearn.utils.shuffle(arange(64), random_state=r*100+i), i = "
        "position of r in the seed-0 order (pmnist's rule), fixed across seeds",
    }
    return TaskSequence(name="pdigits", tasks=tasks, input_shape=(64,), notes=notes)
