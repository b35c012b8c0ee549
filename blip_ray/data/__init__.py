"""Supervised task sequences; importing this package registers every loader in ``SEQUENCES``.

``digits5``/``pdigits`` ship offline (scikit-learn); ``mnist5``, ``pmnist``, ``cifar``, ``mixture5``
and ``miniimagenet`` read the published formats from ``data_dir`` and raise
:class:`DataUnavailableError` with one line saying which files to put where.
"""

from blip_ray.data import cifar, digits, miniimagenet, mixture, mnist
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
    "register_sequence",
]
