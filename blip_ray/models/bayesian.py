"""UCL's Bayesian trunk layers: a mean per weight and one noise scale per output unit.

Reference: the official UCL code, github.com/csm9493/UCL, ``bayes_layer.py`` (``BayesianLinear``,
``BayesianConv2D``, ``Gaussian``; adapted there from Bayes by Backprop). A layer holds
``weight_mu``, a ``bias`` that is a point estimate (never sampled) and ``weight_rho`` with
``sigma = softplus(rho)`` shared by every weight into one output unit (node-wise: shape
``(out, 1)``, or ``(out, 1, 1, 1)`` for a convolution).

Init (the reference's "new initialization", its paper's appendix): the variance ``2 / fan`` is split
into noise ``ratio * 2 / fan`` and mean ``(1 - ratio) * 2 / fan``, so ``sigma`` starts at
``std_init = sqrt(ratio * 2 / fan)`` and ``weight_mu ~ U(-sqrt(3) m, sqrt(3) m)`` with
``m = sqrt((1 - ratio) * 2 / fan)``; the bias starts at 0. ``fan`` is ``fan_in`` for a linear layer
and ``fan_out = C_out * k_h * k_w`` for a convolution, as in the reference.

In training mode the forward pass samples ``w = mu + sigma * eps``, ``eps ~ N(0, 1)`` per weight
(the reference's ``forward(x, sample=True)``); in eval mode it uses ``mu`` (``sample=False``).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

#: The reference's ``--ratio`` default (its PMNIST setting).
DEFAULT_RATIO = 0.5


class BayesianLayer(nn.Module):
    """State and init shared by :class:`BayesianLinear` and :class:`BayesianConv2d`."""

    ratio: float
    std_init: float
    """``sigma`` at init, ``sqrt(ratio * 2 / fan)``: UCL's regulariser scales by it."""

    def _init_bayesian(self, shape: tuple[int, ...], fan: int, *, ratio: float, bias: bool) -> None:
        if not 0 < ratio <= 1:
            raise ValueError(f"ratio must be in (0, 1], got {ratio}")
        total_var = 2.0 / fan
        self.ratio = ratio
        self.std_init = math.sqrt(total_var * ratio)
        mu_bound = math.sqrt(3.0) * math.sqrt(total_var - total_var * ratio)
        self.weight_mu = nn.Parameter(torch.empty(shape).uniform_(-mu_bound, mu_bound))
        self.register_parameter("bias", nn.Parameter(torch.zeros(shape[0])) if bias else None)
        rho_shape = (shape[0],) + (1,) * (len(shape) - 1)
        rho_init = math.log(math.expm1(self.std_init))  # softplus(rho_init) = std_init
        self.weight_rho = nn.Parameter(torch.full(rho_shape, rho_init))

    @property
    def weight_sigma(self) -> torch.Tensor:
        """``softplus(weight_rho)``, one standard deviation per output unit."""
        return F.softplus(self.weight_rho)

    def sampled_weight(self) -> torch.Tensor:
        """A sampled weight in training mode, the mean in eval mode."""
        if not self.training:
            return self.weight_mu
        return self.weight_mu + self.weight_sigma * torch.randn_like(self.weight_mu)


class BayesianLinear(BayesianLayer):
    """The reference's ``BayesianLinear``: ``fan = in_features``."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        bias: bool = True,
        ratio: float = DEFAULT_RATIO,
    ) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self._init_bayesian((out_features, in_features), in_features, ratio=ratio, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.sampled_weight(), self.bias)


class BayesianConv2d(BayesianLayer):
    """The reference's ``BayesianConv2D`` (square kernels, no dilation or groups):
    ``fan = out_channels * kernel_size^2``."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        *,
        stride: int = 1,
        padding: int = 0,
        bias: bool = True,
        ratio: float = DEFAULT_RATIO,
    ) -> None:
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.stride, self.padding = stride, padding
        shape = (out_channels, in_channels, kernel_size, kernel_size)
        self._init_bayesian(shape, out_channels * kernel_size**2, ratio=ratio, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(
            x, self.sampled_weight(), self.bias, stride=self.stride, padding=self.padding
        )
