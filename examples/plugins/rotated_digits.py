"""A benchmark of one's own: scikit-learn's digits rotated by 0, 90, 180 and 270 degrees.

Four 10-class tasks on the same 8x8 images (offline, no download), each a fixed rotation: a
domain-incremental sequence in the manner of Rotated MNIST. The splits are digits5/pdigits' own
(``blip_ray.data.digits.digits_splits``). Registering it is the ``@register_sequence`` decorator;
``blip-ray run`` imports this file before it checks a spec that lists it under ``plugins:``, so
``benchmark: rotated_digits`` is known there and in every Ray worker.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from blip_ray.data.base import Task, TaskSequence, register_sequence
from blip_ray.data.common import to_split
from blip_ray.data.digits import digits_splits

ROTATIONS = (0, 1, 2, 3)
"""Quarter turns of each task, in order."""


@register_sequence("rotated_digits", num_tasks=len(ROTATIONS), input_shape=(64,), network="mlp")
def load_rotated_digits(*, data_dir: Path | None, seed: int, download: bool) -> TaskSequence:
    """Task ``k``: every digit turned ``k`` quarter turns counter-clockwise, all ten classes."""
    del data_dir, download
    tasks = []
    for turns in ROTATIONS:
        parts = {}
        for name, (x, y) in digits_splits(seed).items():
            turned = np.rot90(x.reshape(-1, 8, 8), k=turns, axes=(1, 2)).reshape(-1, 64)
            parts[name] = to_split(np.ascontiguousarray(turned), y)
        tasks.append(Task(name=f"rotated-{90 * turns}", num_classes=10, **parts))
    notes = {"source": "sklearn.datasets.load_digits", "rotations": "0, 90, 180, 270 degrees"}
    return TaskSequence(name="rotated_digits", tasks=tasks, input_shape=(64,), notes=notes)
