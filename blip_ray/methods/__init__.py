"""Continual-learning methods, one class each behind :class:`ContinualMethod` and one registry."""

from blip_ray.methods import blip, ewc, finetune, imm, lwf  # noqa: F401  (fill the registry)
from blip_ray.methods.base import (
    METHODS,
    BatchFactory,
    ContinualMethod,
    MethodConfig,
    make_method,
    register_method,
    tensor_bytes,
)
from blip_ray.methods.blip import BlipConfig, BlipMethod
from blip_ray.methods.ewc import EwcConfig, EwcMethod, OnlineEwcConfig, OnlineEwcMethod
from blip_ray.methods.finetune import FinetuneConfig, FinetuneMethod, FrozenConfig, FrozenMethod
from blip_ray.methods.imm import ImmConfig, ImmModeMethod
from blip_ray.methods.lwf import LwfConfig, LwfMethod

__all__ = [
    "METHODS",
    "BatchFactory",
    "BlipConfig",
    "BlipMethod",
    "ContinualMethod",
    "EwcConfig",
    "EwcMethod",
    "FinetuneConfig",
    "FinetuneMethod",
    "FrozenConfig",
    "FrozenMethod",
    "ImmConfig",
    "ImmModeMethod",
    "LwfConfig",
    "LwfMethod",
    "MethodConfig",
    "OnlineEwcConfig",
    "OnlineEwcMethod",
    "make_method",
    "register_method",
    "tensor_bytes",
]
