"""Helpers shared by the loaders: seeded orders and splits, fixed permutations, missing-data errors.

The orders and splits reproduce the official BLIP/UCB dataloaders' calls (``sklearn.utils.shuffle``
with ``random_state=seed``) so that a seed here picks the same task order and the same validation
images as ``--seed`` there. :func:`official_shuffle` is that call without importing scikit-learn
(two seconds on a small machine): ``RandomState(seed).shuffle(arange(n))``, which is what
``sklearn.utils.shuffle`` does (tests check the two agree).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from blip_ray.data.base import DataUnavailableError, Normalize, Split, Task


def require_data_dir(data_dir: Path | None, *, sequence: str, datasets: str) -> Path:
    """Return ``data_dir`` or fail with a message that says to set it (no default is guessed)."""
    if data_dir is None:
        raise DataUnavailableError(
            f"{sequence} reads {datasets} from a data directory, but data_dir is None; "
            "set data_dir to the folder that holds the files (or that download=True should fill)"
        )
    return Path(data_dir).expanduser()


def one_line(exc: BaseException) -> str:
    """An exception as one short line (torchvision's download errors span several lines)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def ensure_files(
    files: Sequence[Path], *, download: bool, fetch: Callable[[], object], needs: str
) -> None:
    """Make sure every file exists, calling ``fetch`` once if allowed and something is missing.

    ``needs`` is the one-line instruction raised as :class:`DataUnavailableError` when the files
    are still missing; a failed download is appended to it, never raised as a network error.
    """
    if all(path.is_file() for path in files):
        return
    reason = ""
    if download:
        try:
            fetch()
        except Exception as exc:  # any network/archive failure means "not available here"
            reason = f"; download=True failed: {one_line(exc)}"
        if all(path.is_file() for path in files):
            return
    raise DataUnavailableError(needs + reason)


def official_shuffle(n: int, random_state: int) -> np.ndarray:
    """``sklearn.utils.shuffle(np.arange(n), random_state=random_state)`` as int64 indices."""
    indices = np.arange(n, dtype=np.int64)
    np.random.RandomState(random_state).shuffle(indices)
    return indices


def seeded_order(n: int, seed: int) -> list[int]:
    """Official task order: ``sklearn.utils.shuffle(arange(n), random_state=seed)``."""
    return [int(i) for i in official_shuffle(n, seed)]


def official_permutation(task_id: int, size: int, *, num_tasks: int = 10) -> np.ndarray:
    """The fixed pixel permutation of permuted task ``task_id`` (same for every seed).

    The official pmnist shuffles file ``r`` with ``random_state = r*100 + i``, ``i`` being the
    position of ``r`` in the order of the run that first built its cache. We fix ``i`` to the
    position in the seed-0 order (the README's default seed), so every seed reuses the
    permutations a fresh seed-0 run builds and only the order changes -- like the official cache.
    """
    position = seeded_order(num_tasks, 0).index(task_id)
    return official_shuffle(size, task_id * 100 + position)


def holdout(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Official validation split: shuffle ``arange(n)`` by seed; the first ``int(f*n)`` are valid.

    Returns ``(train_indices, valid_indices)``; both keep the shuffled order, as the official code.
    """
    shuffled = official_shuffle(n, seed)
    n_valid = int(fraction * n)
    return shuffled[n_valid:], shuffled[:n_valid]


def to_split(x: np.ndarray | torch.Tensor, y: np.ndarray | torch.Tensor) -> Split:
    """A :class:`Split` with int64 labels; uint8 inputs stay uint8 (compact), others float32."""
    x_t = torch.as_tensor(np.ascontiguousarray(x) if isinstance(x, np.ndarray) else x)
    if x_t.dtype != torch.uint8:
        x_t = x_t.float()
    return Split(x_t, torch.as_tensor(np.asarray(y), dtype=torch.int64))


def task_with_holdout(
    name: str,
    num_classes: int,
    *,
    train: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    valid_fraction: float,
    seed: int,
    transform: Callable[[torch.Tensor], torch.Tensor] | None,
) -> Task:
    """Build a task whose validation split is held out of ``train`` by :func:`holdout`."""
    x_train, y_train = train
    train_idx, valid_idx = holdout(len(y_train), valid_fraction, seed)
    return Task(
        name=name,
        num_classes=num_classes,
        train=to_split(x_train[train_idx], y_train[train_idx]),
        valid=to_split(x_train[valid_idx], y_train[valid_idx]),
        test=to_split(*test),
        transform=transform,
    )


def uint8_normalize(mean: Sequence[float], std: Sequence[float]) -> Normalize:
    """The official ``ToTensor`` + ``Normalize(mean, std)``, applied to raw uint8 batches.

    ``(x/255 - m)/s == (x - 255 m)/(255 s)``, so scaling the statistics keeps storage in uint8.
    """
    return Normalize(tuple(255.0 * m for m in mean), tuple(255.0 * s for s in std))
