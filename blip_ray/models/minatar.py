"""``minatar_cnn``: the MinAtar paper's network (Young & Tian 2019, arXiv 1903.03176) as a trunk.

conv(C -> 16, k3, s1) -> ReLU -> flatten (16 * 8 * 8 = 1024) -> Linear(1024 -> 128) -> ReLU, the
hidden layers of MinAtar's reference agents (``examples/dqn.py``'s ``QNetwork``, whose output
layer becomes the module's per-task heads here): 132,656 trunk parameters for 10 input channels.
Built from :func:`trunk_conv`/:func:`trunk_linear`, so BLIP's quantized layers and the per-task
state of HAT and PackNet apply as in every other trunk.
"""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

from blip_ray.models.base import ModelOptions
from blip_ray.models.layers import conv_output_size, image_shape, scaled, trunk_conv, trunk_linear

#: Filters, kernel and stride of the one convolution.
CONV_CHANNELS, CONV_KERNEL, CONV_STRIDE = 16, 3, 1
#: Hidden units of the fully connected layer.
HIDDEN = 128


def minatar_trunk(options: ModelOptions) -> tuple[nn.Sequential, int]:
    """The trunk and its feature width, for channels-first ``(channels, 10, 10)`` observations.

    Observations are 0/1 object maps and go in unscaled. ``width`` multiplies both widths (1: the
    paper); ``fc_width`` overrides the 128 hidden units.
    """
    channels, height, width = image_shape(options, "minatar_cnn")
    sizes = [conv_output_size(s, CONV_KERNEL, stride=CONV_STRIDE) for s in (height, width)]
    if min(sizes) < 1:
        raise ValueError(f"minatar_cnn: {height}x{width} observations are too small")
    filters = scaled(CONV_CHANNELS, options.width)
    hidden = options.fc_width if options.fc_width is not None else scaled(HIDDEN, options.width)
    layers: OrderedDict[str, nn.Module] = OrderedDict(
        conv=trunk_conv(options, channels, filters, kernel_size=CONV_KERNEL, stride=CONV_STRIDE),
        relu=nn.ReLU(),
        flatten=nn.Flatten(),
        fc=trunk_linear(options, filters * sizes[0] * sizes[1], hidden),
        fc_relu=nn.ReLU(),
    )
    return nn.Sequential(layers), hidden
