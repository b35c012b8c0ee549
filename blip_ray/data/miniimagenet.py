"""``miniimagenet``: 20 tasks of 5 classes at (3, 84, 84), from the official BLIP pickles.

Format (written by the official
``miniImageNetClassification/src/data/generate_train_test_split.py``):
``<data_dir>/miniImageNet/train.pkl`` and ``test.pkl``, each a pickled dict with ``'images'``: a
list (or array) of uint8 ``(H, W, 3)`` images as returned by ``cv2.imread`` (BGR, 84x84 in
``MI_raw.zip``) and ``'labels'``: a list of int class ids 0-99; 500 train / 100 test per class.
:func:`build_pickles` writes the same files from the extracted ``MI_raw`` folders, and
``download=True`` fetches ``MI_raw.zip`` from the BLIP release and runs it.

What the loader reproduces from ``dataloaders/miniimagenet.py``: classes are assigned to tasks by
``np.random.seed(seed); np.split(np.random.permutation(100), 20)``, labels are the position in the
task's class list, images keep their pickle order; validation is 2 % (floor) of each task's
training images through ``random_split`` with torch's generator seeded by ``seed`` and drawn task by
task; images not 84x84 are resized (bilinear, as ``transforms.Resize``); ImageNet normalization is
applied per batch to stored uint8 pixels (~1 GB instead of ~4 GB of float32). Channels stay in the
stored (BGR) order, as the official code feeds them.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from blip_ray.data.base import Task, TaskSequence, register_sequence
from blip_ray.data.common import ensure_files, require_data_dir, to_split, uint8_normalize

FOLDER = "miniImageNet"
FILES = ("train.pkl", "test.pkl")
MI_RAW_URL = "https://github.com/Yujun-Shi/BLIP/releases/download/initial/MI_raw.zip"
NUM_CLASSES = 100
NUM_TASKS = 20
SIZE = 84
VALID_FRACTION = 0.02
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: np.random.seed of the official split script ("as ACL")
SPLIT_SEED = 1234


def _to_chw84(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image, dtype=np.uint8)
    if image.shape != (SIZE, SIZE, 3):
        image = np.asarray(Image.fromarray(image).resize((SIZE, SIZE), Image.BILINEAR))
    return image.transpose(2, 0, 1)


def read_pickle(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Images uint8 ``(N, 3, 84, 84)`` (stored channel order) and int64 labels of one pickle.

    Pickles run code when loaded: only use files you trust.
    """
    with open(path, "rb") as handle:
        entry = pickle.load(handle)
    labels = np.asarray(entry["labels"], dtype=np.int64).reshape(-1)
    images = (
        np.stack([_to_chw84(image) for image in entry["images"]])
        if len(labels)
        else (np.zeros((0, 3, SIZE, SIZE), dtype=np.uint8))
    )
    return images, labels


def build_pickles(raw_dir: Path, out_dir: Path, *, train_per_class: int = 500) -> None:
    """Write ``train.pkl``/``test.pkl`` from ``raw_dir/<class>/<image>`` like the official script.

    Differences, both for determinism: class folders and files are read in sorted order (the
    script uses ``os.listdir``'s arbitrary order, so its class ids depend on the file system), and
    images are decoded by PIL and flipped to BGR to match ``cv2.imread``.
    """
    rng = np.random.RandomState(SPLIT_SEED)
    split: dict[str, dict[str, list]] = {s: {"images": [], "labels": []} for s in ("train", "test")}
    class_dirs = sorted(p for p in Path(raw_dir).iterdir() if p.is_dir())
    for class_id, class_dir in enumerate(class_dirs):
        images = [
            np.asarray(Image.open(f).convert("RGB"))[:, :, ::-1].copy()
            for f in sorted(class_dir.iterdir())
            if f.is_file()
        ]
        # the script shuffles every class list in turn with the one global RNG
        order = rng.permutation(len(images))
        for position, index in enumerate(order):
            part = split["train" if position < train_per_class else "test"]
            part["images"].append(images[index])
            part["labels"].append(class_id)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, content in split.items():
        with open(out_dir / f"{name}.pkl", "wb") as handle:
            pickle.dump(content, handle)


def _download_and_build(folder: Path) -> None:
    from torchvision.datasets.utils import download_and_extract_archive

    download_and_extract_archive(MI_RAW_URL, str(folder), filename="MI_raw.zip")
    build_pickles(folder / "MI_raw", folder)


def _select(images: np.ndarray, labels: np.ndarray, classes: list[int]) -> tuple[np.ndarray, ...]:
    """As ``iMiniImageNet``: the task's images in pickle order, label = index in ``classes``."""
    mapping = np.full(NUM_CLASSES, -1, dtype=np.int64)
    mapping[classes] = np.arange(len(classes))
    keep = mapping[labels] >= 0
    return images[keep], mapping[labels[keep]]


@register_sequence(
    "miniimagenet", num_tasks=NUM_TASKS, input_shape=(3, SIZE, SIZE), network="alexnet84"
)
def load_miniimagenet(*, data_dir: Path | None, seed: int, download: bool) -> TaskSequence:
    """Twenty 5-class tasks; task ``t`` holds classes ``permutation(100)[5t:5t+5]`` (by seed)."""
    root = require_data_dir(data_dir, sequence="miniimagenet", datasets="the miniImageNet pickles")
    folder = root / FOLDER
    ensure_files(
        [folder / name for name in FILES],
        download=download,
        fetch=lambda: _download_and_build(folder),
        needs=(
            f"miniimagenet needs the official BLIP pickles in {folder} (train.pkl, test.pkl: "
            "dicts with 'images' uint8 HxWx3 BGR and 'labels' 0-99); get MI_raw.zip from "
            f"{MI_RAW_URL}, extract it there and run blip_ray.data.miniimagenet.build_pickles "
            "(or the official generate_train_test_split.py), or pass download=True where the "
            "network allows"
        ),
    )
    x_train, y_train = read_pickle(folder / "train.pkl")
    x_test, y_test = read_pickle(folder / "test.pkl")
    if set(np.unique(y_train).tolist()) != set(range(NUM_CLASSES)):
        raise ValueError(f"{folder / 'train.pkl'} must hold labels 0..{NUM_CLASSES - 1}")

    task_classes = np.split(np.random.RandomState(seed).permutation(NUM_CLASSES), NUM_TASKS)
    generator = torch.Generator().manual_seed(seed)
    tasks = []
    for t, classes in enumerate(task_classes):
        xs, ys = _select(x_train, y_train, classes.tolist())
        n_valid = int(np.floor(VALID_FRACTION * len(ys)))
        # random_split(train, [n - n_valid, n_valid]) draws one randperm per task, in task order
        perm = torch.randperm(len(ys), generator=generator).numpy()
        train_idx, valid_idx = perm[: len(ys) - n_valid], perm[len(ys) - n_valid :]
        tasks.append(
            Task(
                name=f"miniimagenet-{t}",
                num_classes=len(classes),
                train=to_split(xs[train_idx], ys[train_idx]),
                valid=to_split(xs[valid_idx], ys[valid_idx]),
                test=to_split(*_select(x_test, y_test, classes.tolist())),
                transform=uint8_normalize(IMAGENET_MEAN, IMAGENET_STD),
            )
        )
    notes = {
        "classes": "np.random.seed(seed); np.split(np.random.permutation(100), 20)",
        "validation": "floor(2%) of each task's training images via torch random_split, seed",
        "normalization": "ImageNet mean/std per batch on uint8 pixels, stored (BGR) channel order",
    }
    return TaskSequence(name="miniimagenet", tasks=tasks, input_shape=(3, SIZE, SIZE), notes=notes)
