"""``resnet18``: the official miniImageNet ``q_resnet`` with BatchNorm frozen after task 0.

BasicBlocks [2, 2, 2, 2] with ``int(64m)`` ... ``int(512m)`` channels (m = ``options.width``; the
paper's m = 1.5 gives 96/192/384/768), a 3x3 stride-2 stem without maxpool, bias-free convs and
``BatchNorm2d(affine=False)``: BN has no parameters to quantize, and freezing its statistics after
task 0 keeps later tasks from shifting the normalisation that old tasks were trained under.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn
from torch.nn import functional as F

from blip_ray.models.base import ModelOptions, MultiHeadNet, register_model
from blip_ray.models.layers import conv_output_size, image_shape, reject_fc_width, trunk_conv

STAGE_CHANNELS = (64, 128, 256, 512)
BLOCKS = (2, 2, 2, 2)
#: Stride of each stage's first block (the stem adds a stride-2 conv).
STAGE_STRIDES = (1, 2, 2, 2)
#: The official ``F.avg_pool2d(out, 4)`` kernel (and stride).
OFFICIAL_POOL = 4


class BasicBlock(nn.Module):
    """Two 3x3 convs with affine-free BN and a (1x1 conv + BN) shortcut when the shape changes."""

    def __init__(self, options: ModelOptions, in_planes: int, planes: int, *, stride: int) -> None:
        super().__init__()
        self.conv1 = trunk_conv(
            options, in_planes, planes, kernel_size=3, stride=stride, padding=1, bias=False
        )
        self.bn1 = nn.BatchNorm2d(planes, affine=False)
        self.conv2 = trunk_conv(options, planes, planes, kernel_size=3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes, affine=False)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                trunk_conv(options, in_planes, planes, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(planes, affine=False),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet18Trunk(nn.Module):
    """Stem, four stages, pooling, flatten; BN statistics can be frozen for good.

    The frozen flag is the buffer ``bn_frozen`` so checkpoints carry it; :meth:`train` keeps every
    BatchNorm in eval mode while it is set, whatever ``model.train()`` a training loop calls, and a
    ``load_state_dict`` re-applies it at once.
    """

    def __init__(self, options: ModelOptions) -> None:
        super().__init__()
        channels, height, width = image_shape(options, "resnet18")
        stem = floor_scaled(STAGE_CHANNELS[0], options.width)
        self.conv1 = trunk_conv(
            options, channels, stem, kernel_size=3, stride=2, padding=1, bias=False
        )
        self.bn1 = nn.BatchNorm2d(stem, affine=False)
        stages, in_planes = [], stem
        for base, blocks, stride in zip(STAGE_CHANNELS, BLOCKS, STAGE_STRIDES, strict=True):
            planes = floor_scaled(base, options.width)
            stages.append(_stage(options, in_planes, planes, blocks=blocks, stride=stride))
            in_planes = planes
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.pool = final_pool((final_map_size(height), final_map_size(width)))
        self.feature_dim = in_planes
        self.register_buffer("bn_frozen", torch.tensor(False))
        self.register_load_state_dict_post_hook(_reapply_mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return self.pool(out).flatten(1)

    @property
    def batchnorm_frozen(self) -> bool:
        return bool(self.bn_frozen)

    def freeze_batchnorm(self) -> None:
        """Freeze BN statistics (eval mode) from now on, including after a restore."""
        self.bn_frozen.fill_(True)
        self.train(self.training)

    def batchnorms(self) -> Iterator[nn.BatchNorm2d]:
        return (m for m in self.modules() if isinstance(m, nn.BatchNorm2d))

    def train(self, mode: bool = True) -> ResNet18Trunk:
        super().train(mode)
        if self.batchnorm_frozen:
            for bn in self.batchnorms():
                bn.eval()
        return self


def _stage(
    options: ModelOptions, in_planes: int, planes: int, *, blocks: int, stride: int
) -> nn.Sequential:
    """One ResNet stage: the first block changes shape (stride, width), the rest keep it."""
    first = BasicBlock(options, in_planes, planes, stride=stride)
    rest = (BasicBlock(options, planes, planes, stride=1) for _ in range(blocks - 1))
    return nn.Sequential(first, *rest)


def floor_scaled(base: int, width: float) -> int:
    """``int(base * width)``, the official ResNet width rule, at least 1."""
    return max(1, int(base * width))


def _reapply_mode(module: nn.Module, incompatible_keys: object) -> None:
    """After ``load_state_dict``, a restored ``bn_frozen`` applies without a ``train()`` call."""
    module.train(module.training)


def final_map_size(size: int) -> int:
    """Side of the last stage's map for an input side ``size`` (3x3 convs, padding 1)."""
    for stride in (2, *STAGE_STRIDES):
        size = conv_output_size(size, 3, stride=stride, padding=1)
    return size


def final_pool(sizes: tuple[int, int]) -> nn.Module:
    """The official ``avg_pool2d(out, 4)`` where it yields 1x1, else global average pooling.

    On the paper's 84x84 inputs the final map is 6x6 (84 -> 42 -> 42 -> 21 -> 11 -> 6), and the
    official pooling averages only its top-left 4x4 window; that quirk is kept, bit for bit, for
    every final map of 4 to 7 pixels a side. Elsewhere the official code would crash (smaller maps)
    or emit more than ``last_dim`` features (larger ones), so global average pooling is used.
    """
    if all(OFFICIAL_POOL <= s < 2 * OFFICIAL_POOL for s in sizes):
        return nn.AvgPool2d(OFFICIAL_POOL)
    return nn.AdaptiveAvgPool2d(1)


class ResNet18Net(MultiHeadNet):
    """A ResNet-18 :class:`MultiHeadNet` whose BatchNorm statistics freeze when task 1 starts."""

    trunk: ResNet18Trunk

    def on_task_start(self, task: int) -> None:
        if task >= 1 and not self.trunk.batchnorm_frozen:
            self.trunk.freeze_batchnorm()


@register_model("resnet18")
def build_resnet18(options: ModelOptions) -> MultiHeadNet:
    """ResNet-18 of the paper (``width`` 1.5 on miniImageNet); features: ``int(512 * width)``.

    Widths use ``int()`` (floor), as the official code, rather than the AlexNets' ``round()``.
    """
    reject_fc_width(options, "resnet18")
    if options.bayesian:
        raise ValueError(
            "resnet18 has no Bayesian (UCL) version: the UCL reference has none; use mlp, "
            "alexnet32 or alexnet84"
        )
    if options.task_state == "gates":
        raise ValueError(
            "resnet18 has skip connections, and HAT's gates pair each layer with the one before "
            "it; use mlp, alexnet32 or alexnet84"
        )
    trunk = ResNet18Trunk(options)
    return ResNet18Net(trunk, trunk.feature_dim, list(options.head_sizes))
