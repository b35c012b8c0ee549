"""``atari_cnn``: the paper's RL trunk (official ``QCNNBase``) for 4 stacked 84x84 frames.

conv(4 -> 32, k8, s4) -> conv(32 -> 64, k4, s2) -> conv(64 -> 128, k3, s1) -> flatten
(128 * 7 * 7 = 6272) -> Linear(6272 -> 1024), ReLU after each: 6,538,464 trunk parameters. The RL
track builds its RLModule on :func:`atari_trunk`; ``atari_cnn`` wraps it with plain per-task heads.
"""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

from blip_ray.models.base import ModelOptions, MultiHeadNet, register_model
from blip_ray.models.layers import conv_output_size, image_shape, scaled, trunk_conv, trunk_linear

#: ``(out_channels, kernel, stride)`` of the three convolutions.
CONVS = ((32, 8, 4), (64, 4, 2), (128, 3, 1))
#: The official ``hidden_size``.
HIDDEN = 1024


def atari_trunk(options: ModelOptions) -> tuple[nn.Sequential, int]:
    """The trunk and its feature width, for channels-first ``(frames, H, W)`` observations.

    Inputs must already be scaled: the official ``CNNBase`` divides raw pixels by 255 inside its
    forward, while RLlib's Atari wrappers hand over normalised frames, so scaling is left to the
    caller's preprocessing. ``width`` multiplies every width (the paper uses 1); ``fc_width``
    overrides the 1024 hidden units. Use ``variant="rl"`` for the paper's RL parameterisation.
    """
    channels, height, width = image_shape(options, "atari_cnn")
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    in_channels, sizes = channels, (height, width)
    for i, (base, kernel, stride) in enumerate(CONVS, start=1):
        sizes = tuple(conv_output_size(s, kernel, stride=stride) for s in sizes)
        if min(sizes) < 1:
            raise ValueError(f"atari_cnn: {height}x{width} observations are too small (conv{i})")
        out_channels = scaled(base, options.width)
        layers[f"conv{i}"] = trunk_conv(
            options, in_channels, out_channels, kernel_size=kernel, stride=stride
        )
        layers[f"relu{i}"] = nn.ReLU()
        in_channels = out_channels
    hidden = options.fc_width if options.fc_width is not None else scaled(HIDDEN, options.width)
    layers["flatten"] = nn.Flatten()
    layers["fc"] = trunk_linear(options, in_channels * sizes[0] * sizes[1], hidden)
    layers["fc_relu"] = nn.ReLU()
    return nn.Sequential(layers), hidden


@register_model("atari_cnn")
def build_atari_cnn(options: ModelOptions) -> MultiHeadNet:
    """:func:`atari_trunk` plus one plain linear head per game (e.g. 14, 18, 18, 18, 18, 6 actions).

    The heads are ``MultiHeadNet``'s default-initialised ``nn.Linear``; the official policy's
    orthogonal-init actor and critic heads belong to the RL track's module.
    """
    trunk, dim = atari_trunk(options)
    return MultiHeadNet(trunk, dim, list(options.head_sizes))
