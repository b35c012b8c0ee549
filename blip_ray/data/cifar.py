"""``cifar``: the paper's "alternating" CIFAR-10/100 sequence (the UCB/BLIP ``cifar`` loader).

Tasks 0-4 are CIFAR-10 split by ``label // 2`` (2 classes each); tasks 5-9 are CIFAR-100 split by
``fine_label // 20`` (20 consecutive fine labels each, not superclasses). The order is
``sklearn.utils.shuffle(arange(10), random_state=seed)`` -- seed 0 gives [2,8,4,9,1,6,7,3,0,5], so
"alternating" is loose. 10 % of each task's training images are validation (shuffled with the
seed, as the official code); test = the official test images of the task's classes.

Data: torchvision's layouts ``<data_dir>/cifar-10-batches-py/`` and
``<data_dir>/cifar-100-python/``. Images stay uint8 (3, 32, 32); the official normalization
(mean (125.3, 123.0, 113.9)/255, std (63.0, 62.1, 66.7)/255, for both datasets) is applied per
batch.
"""

from __future__ import annotations

from pathlib import Path

from blip_ray.data.base import DataUnavailableError, Task, TaskSequence, register_sequence
from blip_ray.data.common import require_data_dir, seeded_order, task_with_holdout, uint8_normalize
from blip_ray.data.sources import RawImages, read_cifar

CIFAR_MEAN = tuple(v / 255 for v in (125.3, 123.0, 113.9))
CIFAR_STD = tuple(v / 255 for v in (63.0, 62.1, 66.7))
VALID_FRACTION = 0.1


def read_both_cifars(root: Path, *, download: bool, sequence: str) -> tuple[RawImages, RawImages]:
    """Read CIFAR-10 and CIFAR-100; if either is missing, one error names everything missing."""
    found, problems = [], []
    for cifar100 in (False, True):
        try:
            found.append(read_cifar(root, cifar100=cifar100, download=download, sequence=sequence))
        except DataUnavailableError as exc:
            problems.append(str(exc))
    if problems:
        raise DataUnavailableError(" | ".join(problems))
    return found[0], found[1]


def _cifar_task(raw: RawImages, *, name: str, group: int, classes: int, seed: int) -> Task:
    """The task of labels ``group*classes .. (group+1)*classes - 1``, relabelled from 0."""
    first = group * classes
    in_train = raw.y_train // classes == group
    in_test = raw.y_test // classes == group
    return task_with_holdout(
        name,
        classes,
        train=(raw.x_train[in_train], raw.y_train[in_train] - first),
        test=(raw.x_test[in_test], raw.y_test[in_test] - first),
        valid_fraction=VALID_FRACTION,
        seed=seed,
        transform=uint8_normalize(CIFAR_MEAN, CIFAR_STD),
    )


@register_sequence("cifar", num_tasks=10, input_shape=(3, 32, 32), network="alexnet32")
def load_cifar(*, data_dir: Path | None, seed: int, download: bool) -> TaskSequence:
    """Ten tasks: task id ``k < 5`` is CIFAR-10 classes {2k, 2k+1}; ``k >= 5`` CIFAR-100 fine labels
    20(k-5) .. 20(k-5)+19. Names are ``cifar10-k`` / ``cifar100-(k-5)``, in the seeded order."""
    root = require_data_dir(data_dir, sequence="cifar", datasets="CIFAR-10 and CIFAR-100")
    cifar10, cifar100 = read_both_cifars(root, download=download, sequence="cifar")
    tasks = []
    for task_id in seeded_order(10, seed):
        if task_id < 5:
            tasks.append(
                _cifar_task(cifar10, name=f"cifar10-{task_id}", group=task_id, classes=2, seed=seed)
            )
        else:
            tasks.append(
                _cifar_task(
                    cifar100,
                    name=f"cifar100-{task_id - 5}",
                    group=task_id - 5,
                    classes=20,
                    seed=seed,
                )
            )
    notes = {
        "order": "sklearn.utils.shuffle(arange(10), random_state=seed); ids 0-4 CIFAR-10 "
        "(label//2), 5-9 CIFAR-100 (fine_label//20)",
        "validation": "10% of each task's training images, shuffled with random_state=seed",
        "normalization": "mean (125.3,123.0,113.9)/255, std (63.0,62.1,66.7)/255 per batch",
    }
    return TaskSequence(name="cifar", tasks=tasks, input_shape=(3, 32, 32), notes=notes)
