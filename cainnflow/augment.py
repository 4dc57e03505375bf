"""Flip evidence from the good images: which flips leave them good, and what that says.

Two decisions are taken from it, never from a name:

* **The image score** of ``pooling="auto"`` (:func:`auto_pooling`): images that every flip
  leaves as good as they were are flip-invariant — a texture, a surface — and are scored by the
  coarsest scale (``"coarse_top"``: the mean of its top eighth of positions), whose context
  judges a region against its surroundings and whose normal spread is small; the fine scales'
  maxima over a large stationary texture have heavy normal tails. Images that flips change —
  an aligned part or layout — are scored by the maximum of the combined map (``"max"``, the
  paper), where a small missing part is fine-scale evidence. Measured: magnetic tile image
  AUROC 0.863 (``max``) → 0.943 (``coarse``, the coarse scales' maximum) → 0.952
  (``coarse_top``); the structural demo category 0.982 with ``max``, 0.909 with ``coarse``
  (benchmarks/README.md).
* **Flip augmentation of few good images** (``TrainConfig(augment="auto")``, off by default:
  it did not measure better, see benchmarks/README.md).

A flipped good image is itself a good image for a texture or a round part seen from above, not
for a board whose parts sit on one side. That is decided from the training images:

For a flip ``T``, compare the per-position mean of the coarsest stage's features over
``T(images)`` with the mean over the images, in units of the features' spread across images
(:func:`flip_shift`). For comparison, the same measure between two halves of the images (the
sampling noise of a mean, :func:`half_split_shift`). ``T`` is used when its shift is no larger
than that noise (:data:`SHIFT_TOLERANCE` times it): flipped images are then as alike to the
good ones as the good ones are to each other. An aligned asymmetric part moves its mean map by
many times the noise.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "AUGMENT_MAX_IMAGES",
    "FLIPS",
    "FlipDecision",
    "apply_flip",
    "auto_pooling",
    "choose_flips",
    "flip_shift",
    "half_split_shift",
]

FLIPS: dict[str, tuple[int, ...]] = {"hflip": (-1,), "vflip": (-2,), "rot180": (-2, -1)}
"""Candidate flips of an image batch (N, C, H, W): the dims :func:`torch.flip` reverses."""
AUGMENT_MAX_IMAGES = 64
"""Augment only training sets of at most this many images (larger ones show enough variation,
and every flip costs one more pass of the backbone)."""
FLIP_TEST_IMAGES = 32
"""Training images the flip evidence is taken from when no augmentation needs them all."""
SHIFT_TOLERANCE = 2.0
"""A flip is used when its mean shift is at most this many times the half-split noise."""
_EPS = 1e-6


@dataclass(frozen=True)
class FlipDecision:
    """Whether one flip is used, and the evidence.

    Attributes:
        name: ``hflip``, ``vflip`` or ``rot180``.
        shift: mean standardised shift of the coarsest features' mean map under the flip.
        noise: the same measure between two halves of the images.
        used: ``shift <= SHIFT_TOLERANCE * noise``.
    """

    name: str
    shift: float
    noise: float
    used: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def apply_flip(images: Tensor, name: str) -> Tensor:
    """Flips a batch (N, C, H, W) by one of :data:`FLIPS`."""
    return torch.flip(images, dims=FLIPS[name])


def _spread(features: Tensor) -> Tensor:
    return features.std(dim=0, unbiased=True) + _EPS


def flip_shift(features: Tensor, flipped: Tensor) -> float:
    """Mean |mean map of flipped − mean map of originals| / spread; features (N, C, H, W)."""
    return float(((flipped.mean(0) - features.mean(0)).abs() / _spread(features)).mean())


def half_split_shift(features: Tensor, seed: int = 0) -> float:
    """The same measure between two random halves of the images (the noise of a mean map).

    Scaled by ``1/√2`` to the noise of comparing two means of ``N`` images each (a half-split
    compares means of ``N/2``).
    """
    n = features.shape[0]
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    a, b = features[order[: n // 2]], features[order[n // 2 :]]
    raw = ((a.mean(0) - b.mean(0)).abs() / _spread(features)).mean()
    return float(raw) / 2**0.5


def choose_flips(features: Tensor, flipped: dict[str, Tensor], seed: int = 0) -> list[FlipDecision]:
    """Decides each flip from coarsest-stage features of the images and of their flips.

    Args:
        features: (N, C, H, W) features of the good training images, N >= 4.
        flipped: flip name → (N, C, H, W) features of the flipped images, same order.
    """
    if features.shape[0] < 4:
        return [FlipDecision(name, float("nan"), float("nan"), False) for name in flipped]
    noise = half_split_shift(features, seed)
    decisions = []
    for name, feats in flipped.items():
        shift = flip_shift(features, feats)
        decisions.append(FlipDecision(name, shift, noise, shift <= SHIFT_TOLERANCE * noise))
    return decisions


def used_flips(decisions: Sequence[FlipDecision]) -> list[str]:
    return [d.name for d in decisions if d.used]


def auto_pooling(decisions: Sequence[FlipDecision]) -> str:
    """``"coarse_top"`` for flip-invariant images (every flip used), else ``"max"``."""
    return "coarse_top" if decisions and all(d.used for d in decisions) else "max"
