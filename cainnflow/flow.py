"""Per-scale 2-D normalizing flow of affine coupling blocks (paper §3.1, Eq. 1–2).

One flow per backbone stage maps a feature map (N, C, H, W) to a latent ``z`` of the same
shape, trained so that ``z ~ N(0, I)`` for defect-free images. Each *step* (the paper's
"step", Table 3) is a FrEIA coupling block whose subnets are
:class:`cainnflow.subnet.CouplingSubnet`, followed by a fixed random channel permutation:

* ``coupling="glow"`` (default): FrEIA ``GLOWCouplingBlock``, exactly the paper's Eq. 1 —
  both halves are transformed, ``v1 = u1 ⊙ exp(s2(u2)) + t2(u2)``,
  ``v2 = u2 ⊙ exp(s1(v1)) + t1(v1)``, with soft clamping of ``s``.
* ``coupling="allinone"``: FrEIA ``AllInOneBlock`` (one half per block plus a learned global
  affine scaling), as FastFlow uses.

With ``standardize=True`` the flow opens with a :class:`FeatureStandardizer`, the fixed
per-channel map ``(x − mean) / std`` fitted once on training features, as a FrEIA invertible
module: forward, inverse and log-determinant bookkeeping live in one place.

The flow is fully convolutional, so it runs on any H × W.
"""

from __future__ import annotations

import FrEIA.framework as Ff
import FrEIA.modules as Fm
import numpy as np
import torch
from torch import Tensor

from .config import ATTENTION_NEGATIVE_SLOPE, COUPLINGS, MIN_HIDDEN, CouplingType
from .subnet import SubnetVariant, create_subnet

__all__ = ["COUPLINGS", "CouplingType", "FeatureStandardizer", "build_flow"]


STD_FLOOR_RELATIVE = 0.05
"""A channel's std is floored at this fraction of the median channel std: a channel that is
near-constant on the training images cannot turn a small test-time change into a huge z."""
STD_FLOOR_ABSOLUTE = 1e-6


class FeatureStandardizer(Fm.InvertibleModule):
    """Fixed per-channel affine map ``y = (x − mean) / std`` as a FrEIA invertible module.

    The statistics are buffers set once from training features (:meth:`fit`); before that the
    map is the identity. Forward returns ``log|det| = −H·W·Σ_c log std_c`` per image; the
    inverse returns its negative, as FrEIA's contract asks.
    """

    def __init__(self, dims_in, dims_c=None) -> None:
        super().__init__(dims_in, dims_c)
        channels = dims_in[0][0]
        self.register_buffer("mean", torch.zeros(1, channels, 1, 1))
        self.register_buffer("std", torch.ones(1, channels, 1, 1))

    @torch.no_grad()
    def fit(self, features: Tensor) -> None:
        """Sets the statistics from features (N, C, H, W), with a floor on each std."""
        features = features.to(self.mean.device, torch.float32)
        std = features.std(dim=(0, 2, 3), keepdim=True)
        floor = max(STD_FLOOR_ABSOLUTE, STD_FLOOR_RELATIVE * float(std.flatten().median()))
        self.mean.copy_(features.mean(dim=(0, 2, 3), keepdim=True))
        self.std.copy_(std.clamp_min(floor))

    def forward(self, x_or_z, c=None, rev: bool = False, jac: bool = True):
        x = x_or_z[0]
        log_det = -torch.log(self.std).sum() * x.shape[2] * x.shape[3]
        log_det = log_det.to(x.dtype).expand(x.shape[0])
        if rev:
            return (x * self.std + self.mean,), -log_det
        return ((x - self.mean) / self.std,), log_det

    def output_dims(self, input_dims):
        return input_dims


def build_flow(
    channels: int,
    height: int,
    width: int,
    *,
    steps: int = 2,
    variant: SubnetVariant = "CAC",
    hidden_ratio: float = 1.0,
    reduction: int = 16,
    attention_min_hidden: int = MIN_HIDDEN,
    clamp: float = 2.0,
    coupling: CouplingType = "glow",
    kernel_size: int = 3,
    subnet_relu: bool = False,
    attention_negative_slope: float = ATTENTION_NEGATIVE_SLOPE,
    seed: int = 0,
    standardize: bool = False,
) -> Ff.SequenceINN:
    """Builds one scale's flow.

    Args:
        channels, height, width: feature map shape (C, H, W) of the stage.
        steps: number of coupling blocks.
        variant: subnet arrangement (``CA``, ``AC``, ``CAC``, ``CC``).
        hidden_ratio: subnet hidden width as a multiple of its input channels.
        reduction: CBAM reduction ratio ``r``.
        attention_min_hidden: floor on CBAM's channel-MLP hidden width.
        clamp: soft clamp of the log-scale ``s`` (|s| < clamp).
        coupling: ``"glow"`` (paper Eq. 1) or ``"allinone"``.
        kernel_size: subnet convolution size (3 in the paper).
        subnet_relu: a ReLU after ``CAC``'s first convolution (not in the paper's Eq. 11).
        attention_negative_slope: negative slope of CBAM's channel-MLP activation (0: ReLU).
        seed: seeds the fixed channel permutations, so a flow is reproducible.
        standardize: open the flow with a :class:`FeatureStandardizer` (``module_list[0]``).

    Returns:
        A ``SequenceINN``: ``z, log_jac_det = flow(x)`` with ``log_jac_det`` of shape (N,);
        ``x, _ = flow(z, rev=True)`` inverts it.
    """
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    if coupling not in COUPLINGS:
        raise ValueError(f"unknown coupling {coupling!r}; choose one of {', '.join(COUPLINGS)}")
    if channels < 2:
        raise ValueError(f"a coupling flow needs at least 2 channels, got {channels}")
    subnet = create_subnet(
        variant,
        hidden_ratio=hidden_ratio,
        reduction=reduction,
        kernel_size=kernel_size,
        min_hidden=attention_min_hidden,
        relu=subnet_relu,
        attention_slope=attention_negative_slope,
    )
    flow = Ff.SequenceINN(channels, height, width)
    if standardize:
        flow.append(FeatureStandardizer)
    # FrEIA draws its permutations from numpy's global generator; fork it so building a
    # flow neither depends on nor disturbs the caller's random state.
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        for step in range(steps):
            if coupling == "glow":
                flow.append(Fm.GLOWCouplingBlock, subnet_constructor=subnet, clamp=clamp)
                flow.append(Fm.PermuteRandom, seed=seed * 1000 + step)
            else:
                flow.append(
                    Fm.AllInOneBlock, subnet_constructor=subnet, affine_clamping=clamp, permute_soft=False
                )
    finally:
        np.random.set_state(state)
    return flow
