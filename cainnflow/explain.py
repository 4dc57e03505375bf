"""Computations behind the app's explanatory views: latent diagnostics, noise-injection
experiments (paper §4.6, figure 11), a 2-D affine coupling example and subnet sizes.

Pure torch / numpy; nothing here knows about Streamlit::

    z = detector.model(features).z
    qq = normal_qq(z[0])                                   # latent vs N(0, 1)
    exp = perturbation_experiment(detector.model, features, LatentInjection(scale=0, points=((8, 8),)))
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from scipy.stats import norm
from torch import Tensor

from .latent import LatentInjection, inject_noise
from .model import CAINNFlow
from .scoring import anomaly_map
from .subnet import VARIANTS, CouplingSubnet

__all__ = [
    "CouplingParams",
    "FeaturePCA",
    "PerturbationResult",
    "affine_coupling",
    "coupling_grid",
    "feature_difference_maps",
    "inverse_affine_coupling",
    "misclassified_first",
    "normal_pdf",
    "normal_qq",
    "perturbation_experiment",
    "polygon_area",
    "squared_norm_maps",
    "subnet_parameter_counts",
]

DEFAULT_QQ_POINTS = 200
PCA_COMPONENTS = 3
PCA_LOW_PERCENTILE, PCA_HIGH_PERCENTILE = 1.0, 99.0


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


@dataclass(frozen=True)
class FeaturePCA:
    """A fixed RGB colouring of feature maps: three principal components of one map.

    Fitting on an original feature map and applying to a disturbed or generated one shows
    both in the same colour space (same centre, axes and colour range).

    Attributes:
        mean: (C,) centre. basis: (C, 3) projection. low, high: (3,) colour range.
    """

    mean: np.ndarray
    basis: np.ndarray
    low: np.ndarray
    high: np.ndarray

    @classmethod
    def fit(cls, features: np.ndarray | Tensor) -> FeaturePCA:
        """Fits on one feature map (C, H, W)."""
        flat = _positions(features)
        mean = flat.mean(axis=0)
        _, _, vt = np.linalg.svd(flat - mean, full_matrices=False)
        basis = vt[:PCA_COMPONENTS].T
        if basis.shape[1] < PCA_COMPONENTS:
            basis = np.pad(basis, ((0, 0), (0, PCA_COMPONENTS - basis.shape[1])))
        proj = (flat - mean) @ basis
        low, high = np.percentile(proj, [PCA_LOW_PERCENTILE, PCA_HIGH_PERCENTILE], axis=0)
        return cls(mean, basis, low, high)

    def to_rgb(self, features: np.ndarray | Tensor, size: int | None = None) -> np.ndarray:
        """RGB uint8 (H, W, 3) (or (size, size, 3), nearest upsampling) of a map (C, H, W)."""
        _, h, w = features.shape
        proj = (_positions(features) - self.mean) @ self.basis
        rgb = np.clip((proj - self.low) / np.maximum(self.high - self.low, 1e-12), 0.0, 1.0)
        img = Image.fromarray((rgb.reshape(h, w, PCA_COMPONENTS) * 255).astype(np.uint8))
        if size is not None:
            img = img.resize((size, size), Image.Resampling.NEAREST)
        return np.asarray(img)


def _positions(features: np.ndarray | Tensor) -> np.ndarray:
    """(C, H, W) → (H·W, C) float64."""
    arr = features.detach().cpu().numpy() if isinstance(features, Tensor) else np.asarray(features)
    if arr.ndim != 3:
        raise ValueError(f"expected a feature map (C, H, W), got shape {arr.shape}")
    return arr.reshape(arr.shape[0], -1).T.astype(np.float64)


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
    """

    z: list[Tensor]
    z_perturbed: list[Tensor]
    features_perturbed: list[Tensor]
    difference: list[np.ndarray]
    map_original: np.ndarray
    map_perturbed: np.ndarray


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
    z_again[k] = model.flows[k](model.standardizers[k](feats_new[k]))[0]  # only this scale changed
    cfg = model.config
    return PerturbationResult(
        z=z_list,
        z_perturbed=z_new,
        features_perturbed=feats_new,
        difference=feature_difference_maps(feats_new, features),
        map_original=anomaly_map(z_list, cfg.image_size, cfg.sigma, cfg.combine).cpu().numpy(),
        map_perturbed=anomaly_map(z_again, cfg.image_size, cfg.sigma, cfg.combine).cpu().numpy(),
    )


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


# --------------------------------------------------------------------------- subnets


def subnet_parameter_counts(
    channels: int, hidden_ratio: float = 1.0, reduction: int = 16, kernel_size: int = 3
) -> dict[str, int]:
    """Trainable parameters of the two subnets of one GLOW coupling block, per variant.

    A block splits ``C`` channels into ``C₁ = C // 2`` and ``C₂ = C − C₁``; one subnet maps
    ``C₁ → 2·C₂`` coefficients, the other ``C₂ → 2·C₁``.
    """
    if channels < 2:
        raise ValueError(f"a coupling block needs at least 2 channels, got {channels}")
    c1 = channels // 2
    c2 = channels - c1
    counts = {}
    for variant in VARIANTS:
        total = 0
        for c_in, c_out in ((c1, 2 * c2), (c2, 2 * c1)):
            subnet = CouplingSubnet(c_in, c_out, variant, hidden_ratio, reduction, kernel_size)
            total += sum(p.numel() for p in subnet.parameters() if p.requires_grad)
        counts[variant] = total
    return counts


# --------------------------------------------------------------------------- thresholds


def misclassified_first(labels: np.ndarray, scores: np.ndarray, threshold: float) -> np.ndarray:
    """Indices of images ordered for review at a threshold.

    Misclassified images first (most confidently wrong first: largest distance of the score
    from the threshold), then correct ones (closest to the threshold first).
    """
    labels_a = np.asarray(labels).astype(bool)
    scores_a = np.asarray(scores, dtype=np.float64)
    predicted = scores_a >= threshold
    wrong = predicted != labels_a
    margin = np.abs(scores_a - threshold)
    # Sort key: wrong images (0) before right ones (1); wrong by decreasing margin, right by increasing.
    key_margin = np.where(wrong, -margin, margin)
    return np.lexsort((key_margin, ~wrong))
