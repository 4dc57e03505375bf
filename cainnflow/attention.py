"""CBAM: the Convolutional Block Attention Module (paper §3.2, Woo et al. 2018).

Channel attention ``M_c(F) = σ(MLP(AvgPool(F)) + MLP(MaxPool(F)))`` with one MLP shared by
both pooled descriptors (hidden width ``C / r``, ReLU after ``W_0``), then spatial attention
``M_s(F') = σ(conv7×7([AvgPool_c(F'); MaxPool_c(F')]))``. Each gate multiplies its input:
``F' = M_c(F) ⊗ F``, ``F'' = M_s(F') ⊗ F'``.

The MLP's activation. The paper (and CBAM) use a ReLU. Trained with Adam, whose steps have
the learning rate's size however small the gradient, the hidden units of these small MLPs
(8–10 units, fed non-negative pooled features) drift until ``W_0·p < 0`` for every input: a
unit there gets no gradient and never comes back, and once every unit of an MLP is there its
gate is the constant 0.5 — the channel attention does nothing. Measured on bottle-10 after
the default training: 0–62 % of the units alive per MLP, one MLP fully dead; the shipped
models had 1 (bottle) and 3 (magnetic tile) of 8 dead. ``negative_slope > 0`` (a leaky ReLU,
:class:`cainnflow.config.CAINNFlowConfig` ``attention_negative_slope``) leaves every unit a
gradient, and no gate is constant: the default (0.1); ``0`` is the paper's ReLU, and how
checkpoints written before the setting load (benchmarks/README.md, "Dead channel attention").

The last gates a module computed can be kept for display (``record = True``); the flow
model's :func:`cainnflow.model.CAINNFlow.attention_maps` switches that on for one forward.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import ATTENTION_NEGATIVE_SLOPE, MIN_HIDDEN

__all__ = ["CBAM", "ChannelAttention", "SpatialAttention"]

DEFAULT_REDUCTION = 16
SPATIAL_KERNEL_SIZE = 7
# MIN_HIDDEN (the channel MLP's hidden-width floor) and ATTENTION_NEGATIVE_SLOPE (its activation,
# module notes) live in cainnflow.config.


class ChannelAttention(nn.Module):
    """Channel gate ``M_c`` of shape (N, C, 1, 1), values in (0, 1).

    Args:
        channels: number of input channels ``C``.
        reduction: reduction ratio ``r`` of the shared MLP; its hidden width is
            ``C // r``, but at least :data:`MIN_HIDDEN` (and at most ``C``).
        min_hidden: floor on the hidden width.
        negative_slope: slope of the MLP's activation below zero; 0 is the paper's ReLU
            (module notes: why the default is a leaky one).
    """

    def __init__(
        self,
        channels: int,
        reduction: int = DEFAULT_REDUCTION,
        min_hidden: int = MIN_HIDDEN,
        negative_slope: float = ATTENTION_NEGATIVE_SLOPE,
    ) -> None:
        super().__init__()
        if not 0.0 <= negative_slope < 1.0:
            raise ValueError(f"negative_slope must be in [0, 1), got {negative_slope}")
        hidden = min(channels, max(min_hidden, channels // reduction))
        self.negative_slope = float(negative_slope)
        activation = (
            nn.LeakyReLU(self.negative_slope, inplace=True)
            if self.negative_slope > 0
            else nn.ReLU(inplace=True)
        )
        # The shared MLP W_1(act(W_0(.))) as 1x1 convolutions on (N, C, 1, 1) descriptors.
        self.mlp = nn.Sequential(
            nn.Conv2d(channels, hidden, kernel_size=1, bias=False),
            activation,
            nn.Conv2d(hidden, channels, kernel_size=1, bias=False),
        )

    def forward(self, x: Tensor) -> Tensor:
        """Returns the gate (N, C, 1, 1) for features ``x`` (N, C, H, W)."""
        n, c = x.shape[:2]
        pooled = torch.cat([torch.mean(x, dim=(2, 3)), torch.amax(x, dim=(2, 3))], dim=0)  # (2N, C)
        # The 1x1 convs on 1x1 maps are matrix products: run them as such, over both pooled
        # descriptors at once (the same weights; a conv call costs ~100 us of overhead here).
        w0, w1 = self.mlp[0].weight.flatten(1), self.mlp[2].weight.flatten(1)
        out = F.linear(self.mlp[1](F.linear(pooled, w0)), w1)
        from_avg, from_max = out.chunk(2, dim=0)
        return torch.sigmoid(from_avg + from_max).view(n, c, 1, 1)


class SpatialAttention(nn.Module):
    """Spatial gate ``M_s`` of shape (N, 1, H, W), values in (0, 1).

    Args:
        kernel_size: size of the convolution over the two pooled maps (7 in the paper).
    """

    def __init__(self, kernel_size: int = SPATIAL_KERNEL_SIZE) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        """Returns the gate (N, 1, H, W) for features ``x`` (N, C, H, W)."""
        avg = torch.mean(x, dim=1, keepdim=True)
        mx = torch.amax(x, dim=1, keepdim=True)
        return torch.sigmoid(self.conv(torch.cat([avg, mx], dim=1)))


class CBAM(nn.Module):
    """Channel attention first, spatial attention second (paper Eq. 6).

    Input and output shapes are equal, (N, C, H, W).

    Attributes:
        record: when True, the gates of the latest forward are kept in
            ``last_channel_gate`` (N, C, 1, 1) and ``last_spatial_gate`` (N, 1, H, W).
    """

    def __init__(
        self,
        channels: int,
        reduction: int = DEFAULT_REDUCTION,
        spatial_kernel_size: int = SPATIAL_KERNEL_SIZE,
        min_hidden: int = MIN_HIDDEN,
        negative_slope: float = ATTENTION_NEGATIVE_SLOPE,
    ) -> None:
        super().__init__()
        self.channel_attention = ChannelAttention(channels, reduction, min_hidden, negative_slope)
        self.spatial_attention = SpatialAttention(spatial_kernel_size)
        self.record = False
        self.last_channel_gate: Tensor | None = None
        self.last_spatial_gate: Tensor | None = None

    def forward(self, x: Tensor) -> Tensor:
        channel_gate = self.channel_attention(x)
        x = channel_gate * x
        spatial_gate = self.spatial_attention(x)
        if self.record:
            self.last_channel_gate = channel_gate.detach()
            self.last_spatial_gate = spatial_gate.detach()
        return spatial_gate * x
