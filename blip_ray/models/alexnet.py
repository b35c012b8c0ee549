"""The paper's AlexNets: ``alexnet32`` (HAT-style: cifar, mixture5), ``alexnet84`` (miniImageNet).

Both follow the official ``q_alexnet.py``: three conv blocks conv -> ReLU -> dropout -> maxpool 2
with kernels ``size // 8``, ``size // 10`` and 2 (4, 3, 2 at 32x32; 10, 8, 2 at 84x84), channels
``round(64m)``, ``round(128m)``, ``round(256m)`` for ``m = options.width``, then two fully
connected layers (ReLU, dropout) and per-task heads. Dropout lives in the trunk as modules, so
BLIP's Fisher (eval mode) switches it off.
"""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

from blip_ray.models.base import ModelOptions, MultiHeadNet, register_model
from blip_ray.models.layers import (
    conv_output_size,
    image_shape,
    reject_fc_width,
    scaled,
    trunk_conv,
    trunk_linear,
)

CONV_CHANNELS = (64, 128, 256)
#: Dropout after conv1 and conv2 in both networks (the official ``drop1``).
CONV_DROPOUT = 0.2
#: The official ``drop2`` (after conv3 and both fcs): 0.2 for 32x32, 0.5 for miniImageNet.
LATE_DROPOUT_32 = 0.2
LATE_DROPOUT_84 = 0.5
#: ``alexnet32`` fc width before the mixture5 multiplier.
FC_32 = 2048
#: ``alexnet84``'s fixed fc widths (never multiplied, as the official network).
FC_84 = (2048, 512)


def alexnet32_fc_width(options: ModelOptions) -> int:
    """Width of fc1 and fc2: ``fc_width`` if set, else 2048 for ``width >= 1``, else
    ``round(2048 * width)``.

    Why: the official code branches on the experiment, not on ``mul``. Its ``cifar`` branch
    (m = 2) keeps 2048 -> 2048 and its ``mixture5`` branch (m = 0.8) multiplies the fc widths
    (820 -> 1638 -> 1638). The rule reproduces both paper configurations from ``width`` alone; set
    ``fc_width`` explicitly for any other combination (e.g. cifar at m = 0.5 keeps 2048).
    """
    if options.fc_width is not None:
        return options.fc_width
    return FC_32 if options.width >= 1 else scaled(FC_32, options.width)


def alexnet_trunk(
    options: ModelOptions, network: str, *, fc_widths: tuple[int, int], late_dropout: float
) -> tuple[nn.Sequential, int]:
    """The official AlexNet feature extractor for square ``(C, S, S)`` inputs and its output width.

    Spatial sizes follow the official ``compute_conv_output_size``: 32 -> 29 -> 14 -> 12 -> 6 ->
    5 -> 2 (flattened ``256m * 2 * 2``); 84 -> 75 -> 37 -> 30 -> 15 -> 14 -> 7 (``256m * 7 * 7``).
    """
    channels, height, width = image_shape(options, network)
    if height != width:
        raise ValueError(f"{network} derives its kernels from one side; got {height}x{width}")
    kernels = (height // 8, height // 10, 2)
    dropouts = (CONV_DROPOUT, CONV_DROPOUT, late_dropout)
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    in_channels, spatial = channels, height
    for i, (kernel, base, dropout) in enumerate(
        zip(kernels, CONV_CHANNELS, dropouts, strict=True), start=1
    ):
        if kernel < 1 or conv_output_size(spatial, kernel) < 2:
            raise ValueError(f"{network}: {height}x{width} inputs are too small (conv{i})")
        out_channels = scaled(base, options.width)
        layers[f"conv{i}"] = trunk_conv(options, in_channels, out_channels, kernel_size=kernel)
        layers[f"relu{i}"] = nn.ReLU()
        layers[f"drop{i}"] = nn.Dropout(dropout)
        layers[f"pool{i}"] = nn.MaxPool2d(2)
        in_channels, spatial = out_channels, conv_output_size(spatial, kernel) // 2
    layers["flatten"] = nn.Flatten()
    in_features = in_channels * spatial * spatial
    for i, fc in enumerate(fc_widths, start=1):
        layers[f"fc{i}"] = trunk_linear(options, in_features, fc)
        layers[f"fc_relu{i}"] = nn.ReLU()
        layers[f"fc_drop{i}"] = nn.Dropout(late_dropout)
        in_features = fc
    return nn.Sequential(layers), in_features


@register_model("alexnet32")
def build_alexnet32(options: ModelOptions) -> MultiHeadNet:
    """HAT-style AlexNet for 32x32x3 (cifar: ``width`` 2, mixture5: ``width`` 0.8).

    Convs ``round(64m)/round(128m)/round(256m)`` (m = 2: 128/256/512; m = 0.8: 51/102/205), fc
    widths by :func:`alexnet32_fc_width`, dropout 0.2 everywhere.
    """
    fc = alexnet32_fc_width(options)
    trunk, dim = alexnet_trunk(
        options, "alexnet32", fc_widths=(fc, fc), late_dropout=LATE_DROPOUT_32
    )
    return MultiHeadNet(trunk, dim, list(options.head_sizes))


@register_model("alexnet84")
def build_alexnet84(options: ModelOptions) -> MultiHeadNet:
    """miniImageNet AlexNet for 84x84x3: convs 64/128/256 (times ``width``; the paper uses 1),
    flattened 256 * 7 * 7 = 12544 -> fc 2048 -> fc 512 -> heads.

    Dropout 0.2 after conv1/conv2 and 0.5 after conv3 and the fcs, as the official BLIP network
    (the official baselines' plain ``alexnet.py`` uses 0.2 there; one network for all methods here
    keeps the comparison fair). The fc widths are fixed, as in the official code.
    """
    reject_fc_width(options, "alexnet84")
    trunk, dim = alexnet_trunk(options, "alexnet84", fc_widths=FC_84, late_dropout=LATE_DROPOUT_84)
    return MultiHeadNet(trunk, dim, list(options.head_sizes))
