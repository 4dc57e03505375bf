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

The flow is fully convolutional, so it runs on any H × W.
"""

from __future__ import annotations

from typing import Literal, get_args

import FrEIA.framework as Ff
import FrEIA.modules as Fm
import numpy as np

from .subnet import SubnetVariant, create_subnet

__all__ = ["COUPLINGS", "CouplingType", "build_flow"]

CouplingType = Literal["glow", "allinone"]
COUPLINGS: tuple[str, ...] = get_args(CouplingType)


def build_flow(
    channels: int,
    height: int,
    width: int,
    *,
    steps: int = 2,
    variant: SubnetVariant = "CAC",
    hidden_ratio: float = 1.0,
    reduction: int = 16,
    clamp: float = 2.0,
    coupling: CouplingType = "glow",
    kernel_size: int = 3,
    seed: int = 0,
) -> Ff.SequenceINN:
    """Builds one scale's flow.

    Args:
        channels, height, width: feature map shape (C, H, W) of the stage.
        steps: number of coupling blocks.
        variant: subnet arrangement (``CA``, ``AC``, ``CAC``, ``CC``).
        hidden_ratio: subnet hidden width as a multiple of its input channels.
        reduction: CBAM reduction ratio ``r``.
        clamp: soft clamp of the log-scale ``s`` (|s| < clamp).
        coupling: ``"glow"`` (paper Eq. 1) or ``"allinone"``.
        kernel_size: subnet convolution size (3 in the paper).
        seed: seeds the fixed channel permutations, so a flow is reproducible.

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
    subnet = create_subnet(variant, hidden_ratio=hidden_ratio, reduction=reduction, kernel_size=kernel_size)
    flow = Ff.SequenceINN(channels, height, width)
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
