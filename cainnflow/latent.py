"""Looking inside the flow: latent statistics, noise injection and inverse generation.

The paper's figure 11: map an image's features forward to ``z``, disturb ``z`` at chosen
places, run the flow backwards and see what features (and what anomaly map) the disturbed
latent stands for. Also sampling ``z ~ N(0, T²I)`` and inverting it to generate features.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from scipy.stats import norm
from torch import Tensor

from .model import CAINNFlow

if TYPE_CHECKING:
    from PIL import Image

    from .detector import Detector

__all__ = [
    "ImageAnalysis",
    "LatentInjection",
    "PerturbationResult",
    "analyse_image",
    "feature_difference_maps",
    "gaussian_bump",
    "generate_features",
    "inject_noise",
    "latent_summary",
    "normal_pdf",
    "normal_qq",
    "perturbation_experiment",
    "random_points",
    "sample_latents",
    "squared_norm_maps",
]

DEFAULT_QQ_POINTS = 200


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
def generate_features(model: CAINNFlow, n: int = 1, temperature: float = 1.0, seed: int = 0) -> list[Tensor]:
    """Samples ``z ~ N(0, T² I)`` and runs the flows backwards: generated features, on the CPU."""
    z = sample_latents(model.feature_shapes, n=n, temperature=temperature, seed=seed)
    features = model.inverse([zi.to(model.device) for zi in z])
    return [f.cpu() for f in features if f is not None]


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


# --------------------------------------------------------------------------- latent diagnostics


def squared_norm_maps(z: Sequence[Tensor]) -> list[np.ndarray]:
    """Per-position squared norm ``‖z‖² = Σ_c z_c²`` of each scale, (N, H_i, W_i) each."""
    return [torch.sum(zi.float() ** 2, dim=1).cpu().numpy() for zi in z]


def normal_pdf(x: np.ndarray) -> np.ndarray:
    """Standard normal density at ``x``."""
    return norm.pdf(np.asarray(x, dtype=np.float64))


def normal_qq(
    values: Tensor | np.ndarray, n_points: int = DEFAULT_QQ_POINTS
) -> tuple[np.ndarray, np.ndarray]:
    """Quantile-quantile points of ``values`` against N(0, 1).

    Args:
        values: any shape; flattened.
        n_points: number of evenly spaced probability levels.

    Returns:
        ``(theoretical, sample)`` quantiles, each ``(n_points,)``; on the diagonal when the
        values are standard normal.
    """
    flat = np.asarray(
        values.detach().cpu() if isinstance(values, Tensor) else values, dtype=np.float64
    ).ravel()
    if flat.size == 0:
        raise ValueError("a QQ plot needs at least one value")
    probs = (np.arange(n_points) + 0.5) / n_points
    return norm.ppf(probs), np.quantile(flat, probs)


def feature_difference_maps(a: Sequence[Tensor], b: Sequence[Tensor]) -> list[np.ndarray]:
    """Mean absolute difference over channels per position, (N, H_i, W_i) per scale."""
    return [torch.mean((x.float() - y.float()).abs(), dim=1).cpu().numpy() for x, y in zip(a, b, strict=True)]


# --------------------------------------------------------------------------- figure 11


@dataclass(frozen=True)
class PerturbationResult:
    """An inverse-generation experiment: disturb ``z``, invert, score again.

    Attributes:
        z: original latents, one (N, C_i, H_i, W_i) per scale.
        z_perturbed: latents after noise injection.
        features_perturbed: ``model.inverse(z_perturbed)``, in the backbone's feature space.
        difference: mean |perturbed − original feature| per position, (N, H_i, W_i) per scale.
        map_original: anomaly map (N, S, S) of the original features (as the model scores).
        map_perturbed: anomaly map (N, S, S) of the perturbed features, forwarded again.
        score_original, score_perturbed: the model's image scores (N,) of both, the numbers
            its threshold judges (not always the map's maximum: see ``CAINNFlowConfig.pooling``).
    """

    z: list[Tensor]
    z_perturbed: list[Tensor]
    features_perturbed: list[Tensor]
    difference: list[np.ndarray]
    map_original: np.ndarray
    map_perturbed: np.ndarray
    score_original: np.ndarray
    score_perturbed: np.ndarray


@torch.no_grad()
def perturbation_experiment(
    model: CAINNFlow,
    features: Sequence[Tensor],
    injection: LatentInjection,
    z: Sequence[Tensor] | None = None,
) -> PerturbationResult:
    """Injects noise into one scale's latent, inverts the flow and re-scores the result.

    Args:
        model: a trained model.
        features: backbone features, one (N, C_i, H_i, W_i) per scale.
        injection: where and how much noise.
        z: the latents of ``features`` if already computed (saves one forward pass).

    Returns:
        The experiment; where noise went in, ``map_perturbed`` rises above ``map_original``.
    """
    device = model.device
    features = [f.to(device) for f in features]
    z_list = list(z) if z is not None else model(features).z
    z_list = [zi.to(device) for zi in z_list]
    z_new = inject_noise(z_list, injection)
    # Only the disturbed scale changes; the others are mapped back exactly, so reuse them.
    inverted = model.inverse([zi if i == injection.scale else None for i, zi in enumerate(z_new)])
    feats_new = [inv if inv is not None else f for inv, f in zip(inverted, features, strict=True)]
    k = injection.scale
    z_again = list(z_list)
    z_again[k] = model.flows[k](feats_new[k])[0]  # only this scale changed
    map_original, score_original = model.score(z_list)
    map_perturbed, score_perturbed = model.score(z_again)
    return PerturbationResult(
        z=z_list,
        z_perturbed=z_new,
        features_perturbed=feats_new,
        difference=feature_difference_maps(feats_new, features),
        map_original=map_original.cpu().numpy(),
        map_perturbed=map_perturbed.cpu().numpy(),
        score_original=score_original.cpu().numpy(),
        score_perturbed=score_perturbed.cpu().numpy(),
    )


# --------------------------------------------------------------------------- one image, all the way


@dataclass(frozen=True)
class ImageAnalysis:
    """One image's forward pass, kept for looking inside the flow.

    Attributes:
        features: backbone features, one (1, C_i, H_i, W_i) per scale, on the CPU.
        z: latents, one (1, C_i, H_i, W_i) per scale, on the CPU.
        squared_norms: ``‖z‖²`` per position, one (H_i, W_i) per scale.
        anomaly_map: the model's anomaly map (S, S).
        score: the model's image score.
    """

    features: list[Tensor]
    z: list[Tensor]
    squared_norms: list[np.ndarray]
    anomaly_map: np.ndarray
    score: float


@torch.no_grad()
def analyse_image(detector: Detector, image: Image.Image) -> ImageAnalysis:
    """Features, latents, per-scale ``‖z‖²``, anomaly map and score of one image."""
    model = detector.model
    features = model.extract_features(detector.preprocess([image]))
    z = model(features).z
    amap, score = model.score(z)
    return ImageAnalysis(
        features=[f.cpu() for f in features],
        z=[zi.cpu() for zi in z],
        squared_norms=[m[0] for m in squared_norm_maps(z)],
        anomaly_map=amap[0].cpu().numpy(),
        score=float(score[0]),
    )
