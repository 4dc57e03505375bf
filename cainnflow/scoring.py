"""Anomaly maps and image scores from the flow's latents.

Per scale, the anomaly of a feature position comes from its negative log-likelihood under
``N(0, I)``, ``nll = ½ mean_c z²``, without the flow's log-determinant: FrEIA sums
per-position log-scales, so each position has a log-determinant term of its own; leaving it
out of the map is FastFlow's choice, followed here. Two ways to combine the scales (``combine``):

* ``"likelihood"`` (default): ``1 − exp(−nll)`` per scale — one minus the position's
  likelihood relative to the mode, bounded in [0, 1) — averaged over scales (as FastFlow).
  Bounded per-scale terms keep one scale's heavy tail from drowning the others (measured
  against ``"nll"`` in benchmarks/README.md).
* ``"nll"``: the plain mean of the per-scale NLL maps.

Scale maps are upsampled to the input size, combined and smoothed with a Gaussian: that map
is for localising (pixel AUROC, AUPRO). The combination is a weighted mean: every scale has
weight 1 except the coarsest, which has ``coarsest_weight`` (:func:`scale_weights`). On aligned
parts the coarsest scale's 8 × 8 positions, upsampled, spread a defect's evidence far past its
edges; at half weight AUPRO rose on all six aligned sets measured (bottle 94.83 → 95.26, the
structural demo category 97.34 → 98.22) and pixel AUROC moved by −0.06 to +0.10, while on the
magnetic-tile texture, whose large faint defects are coarse evidence, pixel AUROC fell 2.2
(benchmarks/README.md). So ``CAINNFlowConfig(coarsest_map_weight=None)``, the default, is
decided when training from the image score the good images chose
(:func:`auto_coarsest_weight`): :data:`ALIGNED_COARSEST_WEIGHT` for aligned parts, 1 for
flip-invariant images. The image score (``pooling``) is for deciding:

* ``"coarse"``: the maximum of the map of the coarser half of the scales (strides 16 and 32
  of four). Coarse stages' receptive fields cover a large part of the image, so they judge a
  region against its context, and their normal variation is small; on a texture the fine
  stages localise well but their maxima over a large stationary area have heavy normal
  tails. Magnetic tile image AUROC 0.863 → 0.943, its 20-image subset 0.605 → 0.787
  (benchmarks/README.md); on one trained model the two coarsest scales gave 0.951, the
  coarsest alone 0.946.
* ``"coarse_top"``: the mean of the top eighth (:data:`COARSE_TOP_FRACTION`) of the coarsest
  scale's per-position terms, before upsampling (8 of the 64 positions at 256 px). A defect
  moves several coarse positions (their receptive fields overlap), the normal tail of one
  position does not: magnetic tile 0.942 → 0.952 (0.941 → 0.953 on a second training) on the
  same trained flows as ``"coarse"``; on its 20-image subset it trades small blowholes for thin
  cracks and faint uneven areas, within the spread between trainings (benchmarks/README.md).
  The default for flip-invariant images; ``"coarse"`` stays for the models trained with it.
* ``"max"``: the maximum of the combined map (the paper): better where a small part missing
  from an aligned layout is fine-scale evidence (the structural demo category 0.982 vs 0.909).
  It is the maximum of the scales' equal-weight map, whatever ``coarsest_weight`` the shown map
  uses (the image score keeps the coarse evidence: with the half-weight map's maximum, bottle
  with 10 images lost 0.16 image AUROC); ``"topk"`` likewise.

``CAINNFlowConfig(pooling="auto")``, the default, picks one of these two when training, from
the good images (:func:`cainnflow.augment.auto_pooling`).
* ``"topk"``: the mean of the combined map's top 1 %.

These functions look at one image at a time: a score never depends on the other images in
the batch. Normalisation statistics come from validation normals (:class:`ScoreStats`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .config import COMBINES, POOLINGS
from .stats import ScoreStats

__all__ = [
    "ALIGNED_COARSEST_WEIGHT",
    "COMBINES",
    "POOLINGS",
    "ScoreStats",
    "anomaly_map",
    "auto_coarsest_weight",
    "gaussian_blur",
    "image_scores",
    "latent_energy_maps",
    "scale_weights",
    "score_latents",
    "top_fraction_mean",
]

TOPK_FRACTION = 0.01
COARSE_TOP_FRACTION = 0.125
"""Share of the coarsest scale's positions whose mean is the ``"coarse_top"`` image score."""
GAUSSIAN_TRUNCATE = 4.0
ALIGNED_COARSEST_WEIGHT = 0.5
"""Weight of the coarsest scale in the anomaly map of aligned parts (the others have 1)."""
MAP_POOLINGS = ("max", "topk")
"""Image scores pooled from a map: aligned parts' scores (the others read the coarse scales)."""


def auto_coarsest_weight(pooling: str) -> float:
    """The coarsest scale's map weight for a model whose image score is ``pooling``.

    Aligned parts (``"max"``, ``"topk"``: the scores of images that flips change) get
    :data:`ALIGNED_COARSEST_WEIGHT`, flip-invariant images (the coarse scores) 1.
    """
    return ALIGNED_COARSEST_WEIGHT if pooling in MAP_POOLINGS else 1.0


def scale_weights(z: Sequence[Tensor], coarsest_weight: float = 1.0) -> list[float]:
    """Each scale's weight in the map: 1, and ``coarsest_weight`` for the coarsest of two or more.

    Only a scale strictly coarser than every other is the coarsest: scales of one resolution
    (a ViT's blocks) keep equal weights.
    """
    weights = [1.0] * len(z)
    positions = [int(t.shape[-2]) * int(t.shape[-1]) for t in z]
    if len(z) > 1 and positions.count(min(positions)) == 1:
        weights[positions.index(min(positions))] = float(coarsest_weight)
    return weights


def latent_energy_maps(z: Sequence[Tensor]) -> list[Tensor]:
    """Per-position Gaussian energy ``½ mean_c z²`` of each scale, (N, H_i, W_i).

    Not a log-likelihood: it leaves out the constant ``½ log 2π`` and the flow's
    log-determinant (FrEIA's is a sum of per-position log-scales, so each position has a term
    of its own; leaving it out is FastFlow's choice, followed here), and it is a mean over
    channels, not a sum. It ranks positions as their density in latent space does, not as the
    features' density (which adds each position's log-determinant term).
    """
    return [0.5 * torch.mean(zi.float() ** 2, dim=1) for zi in z]


def gaussian_blur(maps: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian smoothing of maps (N, H, W) with standard deviation ``sigma`` px."""
    if sigma <= 0:
        return maps
    radius = max(1, math.ceil(GAUSSIAN_TRUNCATE * sigma))
    coords = torch.arange(-radius, radius + 1, device=maps.device, dtype=maps.dtype)
    kernel = torch.exp(-0.5 * (coords / sigma) ** 2)
    kernel = kernel / kernel.sum()
    x = maps.unsqueeze(1)
    x = (
        F.pad(x, (radius, radius, radius, radius), mode="reflect")
        if min(x.shape[-2:]) > radius
        else F.pad(x, (radius, radius, radius, radius), mode="replicate")
    )
    x = F.conv2d(x, kernel.view(1, 1, 1, -1))
    x = F.conv2d(x, kernel.view(1, 1, -1, 1))
    return x[:, 0]


def _scale_terms(z: Sequence[Tensor], combine: str) -> list[Tensor]:
    if combine not in COMBINES:
        raise ValueError(f"unknown combine {combine!r}; choose one of {', '.join(COMBINES)}")
    per_scale = latent_energy_maps(z)
    if combine == "likelihood":
        per_scale = [-torch.expm1(-m) for m in per_scale]
    return per_scale


def _upsample(maps: Tensor, size: tuple[int, int]) -> Tensor:
    return F.interpolate(maps.unsqueeze(1), size=size, mode="bilinear", align_corners=False)[:, 0]


def _upsampled_terms(z: Sequence[Tensor], image_size: int | tuple[int, int], combine: str) -> list[Tensor]:
    size = _size(image_size)
    return [_upsample(m, size) for m in _scale_terms(z, combine)]


def _combine(upsampled: Sequence[Tensor], sigma: float, weights: Sequence[float] | None = None) -> Tensor:
    if weights is None or all(w == 1.0 for w in weights):
        return gaussian_blur(torch.stack(list(upsampled), dim=0).mean(dim=0), sigma)
    mixed = sum(w * u for w, u in zip(weights, upsampled, strict=True)) / sum(weights)
    return gaussian_blur(mixed, sigma)


def _coarse_half(z: Sequence[Tensor]) -> list[int]:
    """Indices of the coarser half of the scales (at least one), coarsest first."""
    order = sorted(range(len(z)), key=lambda i: z[i].shape[-2] * z[i].shape[-1])
    return order[: max(1, len(z) // 2)]


def anomaly_map(
    z: Sequence[Tensor],
    image_size: int | tuple[int, int],
    sigma: float = 4.0,
    combine: str = "likelihood",
    coarsest_weight: float = 1.0,
) -> Tensor:
    """Anomaly map (N, H, W) at the input resolution from per-scale latents.

    Args:
        z: one latent (N, C_i, H_i, W_i) per scale.
        image_size: output size, an int for square images or (H, W).
        sigma: Gaussian smoothing in output pixels.
        combine: ``"likelihood"`` (mean of ``1 − exp(−nll)``) or ``"nll"`` (mean of nll).
        coarsest_weight: the coarsest scale's weight in the mean (:func:`scale_weights`).
    """
    return _combine(_upsampled_terms(z, image_size, combine), sigma, scale_weights(z, coarsest_weight))


def _size(image_size: int | tuple[int, int]) -> tuple[int, int]:
    return (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)


def coarse_scales_map(
    z: Sequence[Tensor], image_size: int | tuple[int, int], sigma: float = 4.0, combine: str = "likelihood"
) -> Tensor:
    """The coarser half of the scales alone (N, H, W), combined and smoothed as :func:`anomaly_map`.

    With four scales (strides 4–32) the two coarsest (16, 32); with one to three, the coarsest.
    """
    return anomaly_map([z[i] for i in _coarse_half(z)], image_size, sigma, combine)


def score_latents(
    z: Sequence[Tensor],
    image_size: int | tuple[int, int],
    sigma: float = 4.0,
    combine: str = "likelihood",
    pooling: str = "coarse",
    coarsest_weight: float = 1.0,
) -> tuple[Tensor, Tensor]:
    """Anomaly maps (N, H, W) and image scores (N,) from per-scale latents.

    The map is :func:`anomaly_map`; the score pools the scales' equal-weight map (``"max"``,
    ``"topk"``: the same map when ``coarsest_weight`` is 1) or, with ``"coarse"``, is the
    maximum of :func:`coarse_scales_map` (from the same upsampled terms), with
    ``"coarse_top"`` :func:`top_fraction_mean` of the coarsest scale's terms.
    """
    terms = _scale_terms(z, combine)
    size = _size(image_size)
    upsampled = [_upsample(t, size) for t in terms]
    weights = scale_weights(z, coarsest_weight)
    maps = _combine(upsampled, sigma, weights)
    if pooling == "coarse":
        coarse = _combine([upsampled[i] for i in _coarse_half(z)], sigma)
        return maps, coarse.flatten(1).amax(dim=1)
    if pooling == "coarse_top":
        return maps, top_fraction_mean(terms[_coarse_half(z)[0]], COARSE_TOP_FRACTION)
    equal = maps if all(w == 1.0 for w in weights) else _combine(upsampled, sigma)
    return maps, image_scores(equal, pooling)


def top_fraction_mean(terms: Tensor, fraction: float) -> Tensor:
    """Mean (N,) of the top ``fraction`` of positions of maps or terms (N, h, w), at least one."""
    positions = int(terms.shape[-2]) * int(terms.shape[-1])  # a constant in an exported graph
    k = max(1, round(positions * fraction))
    return terms.flatten(1).topk(k, dim=1).values.mean(dim=1)


def image_scores(maps: Tensor, pooling: str = "max") -> Tensor:
    """Image scores (N,) pooled from maps (N, H, W): the maximum, or the mean of the top 1 %.

    ``"coarse"`` needs the latents, not the map: use :func:`score_latents`.
    """
    flat = maps.flatten(1)
    if pooling == "max":
        return flat.amax(dim=1)
    if pooling == "topk":
        return top_fraction_mean(maps, TOPK_FRACTION)
    if pooling in ("coarse", "coarse_top"):
        raise ValueError(f"{pooling} pooling scores the coarse scales' terms: use score_latents(z, ...)")
    raise ValueError(f"unknown pooling {pooling!r}; choose one of {', '.join(POOLINGS)}")
