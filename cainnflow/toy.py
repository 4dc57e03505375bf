"""A 2-D toy flow for teaching: two moons (or rings) ↔ N(0, I) with the same couplings.

The same FrEIA coupling blocks as the image model, on 2-D points: each point is a
(2, 1, 1) "feature map", so the subnets are the very :class:`CouplingSubnet` arrangements
(on a single position the 3×3 convolutions reduce to their centre tap, so 1×1 kernels are
used, and CBAM gates a single cell). On a 1×1 map every convolution is a matrix product of its
centre tap, and the toy runs it as one (:class:`PointwiseConv2d`, the same weights): the CPU
convolution kernels cost ~0.5 ms a call here, which made a step 40 % slower.

Its default (CAC subnets, 300 Adam steps from 1e-2 along a cosine, gradients clipped) separates
the two moons; ``tests/test_toy.py`` holds it to that: on held-out moons it beats a single
Gaussian's NLL by a margin, and most of its samples land on a moon.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.datasets import make_circles, make_moons
from torch import Tensor, nn

from .flow import build_flow
from .subnet import SubnetVariant

__all__ = [
    "TOY_DATASETS",
    "CouplingParams",
    "PointwiseConv2d",
    "ToyFlow",
    "affine_coupling",
    "coupling_grid",
    "gaussian_nll",
    "inverse_affine_coupling",
    "make_toy_data",
    "polygon_area",
]

TOY_DATASETS = ("moons", "circles", "gaussians")
TOY_NOISE = 0.06
# Adam's step size at the start of every train_steps call; it decays to zero along a cosine
# over the call's steps, and gradients are clipped to TOY_CLIP_NORM. On moons (seeds 0-2, 400
# steps) this beat a constant 1e-3 or 3e-3; without clipping 1e-2 diverges.
TOY_LR = 1e-2
TOY_CLIP_NORM = 1.0
TOY_BATCH = 256


class PointwiseConv2d(nn.Conv2d):
    """A convolution applied to (N, C, 1, 1) maps as the matrix product of its centre tap.

    With ``padding = kernel_size // 2`` the other taps only ever see zero padding on a 1×1 map,
    so this is exactly the convolution (same parameters, same gradients), without the overhead
    of the CPU convolution kernels.
    """

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-2:] != (1, 1):
            return super().forward(x)
        kh, kw = self.kernel_size
        weight = self.weight[:, :, kh // 2, kw // 2]
        return F.linear(x.flatten(1), weight, self.bias).view(x.shape[0], -1, 1, 1)


def _pointwise(module: nn.Module) -> nn.Module:
    """Runs every centred, stride-1, ungrouped convolution of ``module`` as a :class:`PointwiseConv2d`."""
    for conv in module.modules():
        if (
            type(conv) is nn.Conv2d
            and conv.stride == (1, 1)
            and conv.dilation == (1, 1)
            and conv.groups == 1
            and conv.padding == (conv.kernel_size[0] // 2, conv.kernel_size[1] // 2)
        ):
            conv.__class__ = PointwiseConv2d
    return module


def gaussian_nll(train: np.ndarray, points: np.ndarray) -> float:
    """Mean NLL (nats) of points (n, 2) under one Gaussian fitted to ``train`` (m, 2): the
    baseline a flow has to beat."""
    mean = train.mean(0)
    cov = np.cov(train.T)
    diff = points - mean
    maha = np.einsum("ni,ij,nj->n", diff, np.linalg.inv(cov), diff)
    _, logdet = np.linalg.slogdet(cov)
    return float(np.mean(0.5 * maha + 0.5 * logdet + math.log(2 * math.pi)))


def make_toy_data(name: str, n: int, seed: int = 0) -> np.ndarray:
    """2-D points (n, 2), standardised, from a named toy distribution."""
    if name == "moons":
        pts, _ = make_moons(n, noise=TOY_NOISE, random_state=seed)
    elif name == "circles":
        pts, _ = make_circles(n, noise=TOY_NOISE, factor=0.5, random_state=seed)
    elif name == "gaussians":
        rng = np.random.default_rng(seed)
        centres = np.array([[np.cos(a), np.sin(a)] for a in np.linspace(0, 2 * np.pi, 4, endpoint=False)])
        pts = centres[rng.integers(0, 4, n)] * 2 + rng.normal(scale=0.25, size=(n, 2))
    else:
        raise ValueError(f"unknown toy dataset {name!r}; choose one of {', '.join(TOY_DATASETS)}")
    pts = (pts - pts.mean(0)) / pts.std(0)
    return pts.astype(np.float32)


@dataclass
class ToyFlow:
    """A small flow on 2-D points, trained by maximum likelihood.

    Attributes:
        variant: subnet arrangement.
        steps: coupling blocks.
        hidden_ratio: subnet width relative to its input (1 channel here), so keep it large.
        losses: training loss after each :meth:`train_steps` call.
    """

    variant: SubnetVariant = "CAC"
    steps: int = 6
    hidden_ratio: float = 64.0
    seed: int = 0
    losses: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        torch.manual_seed(self.seed)
        self.flow = build_flow(
            2,
            1,
            1,
            steps=self.steps,
            variant=self.variant,
            hidden_ratio=self.hidden_ratio,
            reduction=4,
            clamp=2.0,
            kernel_size=1,
            seed=self.seed,
        )
        _pointwise(self.flow)
        self._rng = np.random.default_rng(self.seed)  # batches: one stream, however a run is split
        self.optimizer = torch.optim.Adam(self.flow.parameters(), lr=TOY_LR)

    @staticmethod
    def _as_maps(points: np.ndarray | Tensor) -> Tensor:
        return torch.as_tensor(points, dtype=torch.float32).view(-1, 2, 1, 1)

    def nll(self, points: np.ndarray | Tensor) -> Tensor:
        """Mean negative log-likelihood (nats) of points (n, 2)."""
        z, jac = self.flow(self._as_maps(points))
        return torch.mean(0.5 * (z**2).sum(dim=(1, 2, 3)) + math.log(2 * math.pi) - jac)

    @torch.no_grad()
    def point_nll(self, points: np.ndarray) -> np.ndarray:
        """NLL (nats) of each of the points (n, 2): (n,)."""
        self.flow.eval()
        z, jac = self.flow(self._as_maps(points))
        return (0.5 * (z**2).sum(dim=(1, 2, 3)) + math.log(2 * math.pi) - jac).numpy()

    def held_out_nll(self, points: np.ndarray) -> float:
        """Mean NLL (nats) of points (n, 2) the flow did not train on."""
        return float(self.point_nll(points).mean())

    def train_steps(
        self,
        data: np.ndarray,
        steps: int,
        batch_size: int = TOY_BATCH,
        callback: Callable[[int, float], None] | None = None,
        *,
        schedule_steps: int | None = None,
        schedule_offset: int = 0,
    ) -> float:
        """Runs Adam steps on random batches of ``data`` (n, 2); returns the last loss.

        The step size decays from :data:`TOY_LR` to zero along a cosine over ``schedule_steps``
        (default: this call's ``steps``); ``schedule_offset`` is where this call starts on it,
        so a run split into chunks (the app's animation) follows one schedule.
        """
        total = schedule_steps or steps
        loss_value = float("nan")
        self.flow.train()
        for i in range(steps):
            progress = min((schedule_offset + i) / total, 1.0)
            for group in self.optimizer.param_groups:
                group["lr"] = TOY_LR * 0.5 * (1.0 + math.cos(math.pi * progress))
            batch = data[self._rng.integers(0, len(data), batch_size)]
            loss = self.nll(batch)
            self.optimizer.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(self.flow.parameters(), TOY_CLIP_NORM)
            self.optimizer.step()
            loss_value = loss.item()
            if callback is not None:
                callback(i, loss_value)
        self.losses.append(loss_value)
        self.flow.eval()
        return loss_value

    @torch.no_grad()
    def forward(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Data → latent: z (n, 2) and log|det J| (n,)."""
        z, jac = self.flow(self._as_maps(points))
        return z.view(-1, 2).numpy(), jac.numpy()

    @torch.no_grad()
    def inverse(self, z: np.ndarray) -> np.ndarray:
        """Latent → data: points (n, 2)."""
        x, _ = self.flow(self._as_maps(z), rev=True)
        return x.view(-1, 2).numpy()

    @torch.no_grad()
    def density_grid(
        self, lim: float = 3.0, resolution: int = 80
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Model density on a square grid: xs (R,), ys (R,), p (R, R)."""
        xs = np.linspace(-lim, lim, resolution, dtype=np.float32)
        gx, gy = np.meshgrid(xs, xs)
        pts = np.stack([gx.ravel(), gy.ravel()], axis=1)
        z, jac = self.flow(self._as_maps(pts))
        logp = -0.5 * (z**2).sum(dim=(1, 2, 3)) - math.log(2 * math.pi) + jac
        return xs, xs, torch.exp(logp).view(resolution, resolution).numpy()


# --------------------------------------------------------------------------- one affine coupling in 2-D


@dataclass(frozen=True)
class CouplingParams:
    """A 2-D affine coupling ``v1 = x1``, ``v2 = x2 · exp(s(x1)) + t(x1)``.

    The conditioner is ``s(x1) = s0 + s1 · x1`` and ``t(x1) = t0 + t1 · sin(x1)``: the
    passive coordinate ``x1`` decides how the active one ``x2`` is scaled and shifted.
    """

    s0: float = 0.0
    s1: float = 0.0
    t0: float = 0.0
    t1: float = 0.0

    def s(self, x1: np.ndarray) -> np.ndarray:
        return self.s0 + self.s1 * np.asarray(x1, dtype=np.float64)

    def t(self, x1: np.ndarray) -> np.ndarray:
        return self.t0 + self.t1 * np.sin(np.asarray(x1, dtype=np.float64))


def affine_coupling(points: np.ndarray, params: CouplingParams) -> tuple[np.ndarray, np.ndarray]:
    """Forward coupling of points (n, 2): returns ``v`` (n, 2) and ``log|det J| = s(x1)`` (n,)."""
    pts = np.asarray(points, dtype=np.float64)
    x1, x2 = pts[:, 0], pts[:, 1]
    s = params.s(x1)
    return np.stack([x1, x2 * np.exp(s) + params.t(x1)], axis=1), s


def inverse_affine_coupling(points: np.ndarray, params: CouplingParams) -> np.ndarray:
    """Exact inverse: ``x1 = v1``, ``x2 = (v2 − t(v1)) · exp(−s(v1))``."""
    pts = np.asarray(points, dtype=np.float64)
    v1, v2 = pts[:, 0], pts[:, 1]
    return np.stack([v1, (v2 - params.t(v1)) * np.exp(-params.s(v1))], axis=1)


def coupling_grid(
    params: CouplingParams, lim: float = 2.0, lines: int = 9, resolution: int = 60
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """A square grid of lines before and after the coupling.

    Returns:
        ``(before, after)``: lists of polylines (resolution, 2), vertical lines first.
    """
    ticks = np.linspace(-lim, lim, lines)
    along = np.linspace(-lim, lim, resolution)
    before = [np.stack([np.full_like(along, x), along], axis=1) for x in ticks]
    before += [np.stack([along, np.full_like(along, y)], axis=1) for y in ticks]
    after = [affine_coupling(line, params)[0] for line in before]
    return before, after


def polygon_area(polygon: np.ndarray) -> float:
    """Area of a simple polygon (n, 2) (shoelace formula)."""
    x, y = np.asarray(polygon, dtype=np.float64).T
    return float(0.5 * abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))
