"""Networks: a plain or quantized trunk plus per-task heads, built by name from ``ModelOptions``.

Importing this package registers every family in :data:`MODELS` (``mlp``, ``alexnet32``,
``alexnet84``, ``resnet18``, ``atari_cnn``).
"""

from blip_ray.models import alexnet, atari, mlp, resnet
from blip_ray.models.alexnet import alexnet32_fc_width, alexnet_trunk
from blip_ray.models.atari import atari_trunk
from blip_ray.models.base import (
    MODELS,
    ModelBuilder,
    ModelOptions,
    MultiHeadNet,
    build_model,
    check_build,
    register_model,
)
from blip_ray.models.layers import trunk_conv, trunk_linear
from blip_ray.models.minatar import minatar_trunk
from blip_ray.models.mlp import mlp_hidden_width
from blip_ray.models.resnet import ResNet18Net, ResNet18Trunk

__all__ = [
    "MODELS",
    "ModelBuilder",
    "ModelOptions",
    "MultiHeadNet",
    "ResNet18Net",
    "ResNet18Trunk",
    "alexnet",
    "alexnet32_fc_width",
    "alexnet_trunk",
    "atari",
    "atari_trunk",
    "build_model",
    "check_build",
    "mlp",
    "mlp_hidden_width",
    "minatar_trunk",
    "register_model",
    "resnet",
    "trunk_conv",
    "trunk_linear",
]
