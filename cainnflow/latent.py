"""Looking inside the flow: latent statistics, noise injection and inverse generation.

The paper's figure 11: map an image's features forward to ``z``, disturb ``z`` at chosen
places, run the flow backwards and see what features (and what anomaly map) the disturbed
latent stands for. Also sampling ``z ~ N(0, T²I)`` and inverting it to generate features.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from .model import CAINNFlow

__all__ = [
    "LatentInjection",
    "gaussian_bump",
    "inject_noise",
    "latent_summary",
    "random_points",
    "sample_latents",
]


@dataclass(frozen=True)
class LatentInjection:
    """Noise to add to one scale's latent.

    Attributes:
        scale: index of the feature scale.
        points: (row, col) centres in that scale's latent grid.
        amplitude: standard deviation of the added noise (in units of N(0, 1)).
        extent: Gaussian radius (latent cells) of each disturbed spot; 0 = single cell.
        region: optional (H, W) bool mask of cells to disturb, used instead of ``points``.
        seed: seeds the noise.
    """

    scale: int
    points: tuple[tuple[int, int], ...] = ()
    amplitude: float = 3.0
    extent: float = 1.0
    region: np.ndarray | None = None
    seed: int = 0


def gaussian_bump(height: int, width: int, points: Sequence[tuple[int, int]], extent: float) -> Tensor:
    """Weights (H, W) in [0, 1]: a Gaussian of radius ``extent`` around each point (max-combined)."""
    yy, xx = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    weight = torch.zeros(height, width)
    for r, c in points:
        if extent <= 0:
            if 0 <= r < height and 0 <= c < width:
                weight[r, c] = 1.0
            continue
        d2 = (yy - r).float() ** 2 + (xx - c).float() ** 2
        weight = torch.maximum(weight, torch.exp(-0.5 * d2 / extent**2))
    return weight


def random_points(height: int, width: int, count: int, seed: int = 0) -> tuple[tuple[int, int], ...]:
    """``count`` random cells of an (H, W) grid, reproducible by ``seed``."""
    rng = np.random.default_rng(seed)
    return tuple((int(rng.integers(height)), int(rng.integers(width))) for _ in range(count))


def inject_noise(z: Sequence[Tensor], injection: LatentInjection) -> list[Tensor]:
    """Returns a copy of the latents with noise added to one scale.

    Args:
        z: one latent (N, C, H, W) per scale.
        injection: where and how much.

    Returns:
        New latents; only ``z[injection.scale]`` differs, by ``amplitude · ε · w`` where
        ``ε ~ N(0, I)`` and ``w`` (H, W) is the spot or region weight.
    """
    out = [zi.clone() for zi in z]
    target = out[injection.scale]
    h, w = target.shape[-2:]
    if injection.region is not None:
        weight = torch.as_tensor(np.asarray(injection.region, dtype=np.float32))
        if weight.shape != (h, w):
            raise ValueError(f"region shape {tuple(weight.shape)} does not match the latent grid {(h, w)}")
    else:
        weight = gaussian_bump(h, w, injection.points, injection.extent)
    generator = torch.Generator().manual_seed(injection.seed)
    noise = torch.randn(target.shape, generator=generator) * injection.amplitude
    out[injection.scale] = target + (noise * weight).to(target.device, target.dtype)
    return out


def sample_latents(
    shapes: Sequence[tuple[int, int, int]], n: int = 1, temperature: float = 1.0, seed: int = 0
) -> list[Tensor]:
    """Draws ``z ~ N(0, T² I)`` for every scale, (n, C, H, W) each."""
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn((n, *shape), generator=generator) * temperature for shape in shapes]


@torch.no_grad()
def latent_summary(model: CAINNFlow, features: Sequence[Tensor]) -> list[dict[str, float]]:
    """Mean, standard deviation and mean ‖z‖²/C of each scale's latent for the features."""
    z = model(features).z
    return [
        {
            "mean": float(zi.mean()),
            "std": float(zi.std()),
            "mean_sq_norm_per_channel": float((zi**2).mean()),
        }
        for zi in z
    ]
