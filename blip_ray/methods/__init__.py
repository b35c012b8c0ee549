"""Continual-learning methods, one class each behind :class:`ContinualMethod` and one registry.

Importing this package imports every module in it, so a method is one new file here (plus its
test): its ``@register_method`` fills :data:`METHODS`, which specs, the CLI and both tracks read.
"""

import importlib
import pkgutil

from blip_ray.methods.base import (
    METHODS,
    ContinualMethod,
    MethodConfig,
    TaskSamples,
    make_method,
    register_method,
    tensor_bytes,
)

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = [
    "METHODS",
    "ContinualMethod",
    "MethodConfig",
    "TaskSamples",
    "make_method",
    "register_method",
    "tensor_bytes",
]
