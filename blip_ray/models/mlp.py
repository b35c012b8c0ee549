"""``mlp``: the official ``q_mlp``, one hidden layer (784-1200) shared by per-task heads."""

from __future__ import annotations

import math

from torch import nn

from blip_ray.models.base import ModelOptions, MultiHeadNet, register_model
from blip_ray.models.layers import scaled, trunk_linear

#: The official hidden width for 784-dimensional MNIST inputs (``--ndim 1200``).
MNIST_HIDDEN = 1200
#: Hidden units per input dimension for inputs too small to warrant 1200 (8x8 digits -> 256).
HIDDEN_PER_INPUT = 4


def mlp_hidden_width(options: ModelOptions) -> int:
    """``fc_width`` if set, else ``round(width * min(1200, 4 * D))`` for D input dimensions.

    Why this rule: it is exactly the paper's 1200 for MNIST (D = 784, since 4 * 784 > 1200) and any
    larger input, while small inputs such as scikit-learn's 8x8 digits (D = 64) get 256 units
    instead of a hidden layer 19x wider than the input, which would dwarf the data (1797 images).
    """
    if options.fc_width is not None:
        return options.fc_width
    dims = math.prod(options.input_shape)
    return scaled(min(MNIST_HIDDEN, HIDDEN_PER_INPUT * dims), options.width)


@register_model("mlp")
def build_mlp(options: ModelOptions) -> MultiHeadNet:
    """Flatten -> Linear(D -> hidden) -> ReLU -> per-task heads; no dropout, as the official one.

    Accepts any input shape (flattened, as the official ``x.view(N, -1)``); the hidden width
    follows :func:`mlp_hidden_width`.
    """
    dims = math.prod(options.input_shape)
    hidden = mlp_hidden_width(options)
    trunk = nn.Sequential(nn.Flatten(), trunk_linear(options, dims, hidden), nn.ReLU())
    return MultiHeadNet(trunk, hidden, list(options.head_sizes))
