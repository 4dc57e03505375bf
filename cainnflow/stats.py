"""Score statistics of validation normals: numpy only, so the torch-free runtime and app use them too."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

__all__ = ["ScoreStats"]


@dataclass(frozen=True)
class ScoreStats:
    """Score statistics of validation normals, stored with the model.

    Attributes:
        image_mean, image_std: mean and standard deviation of normal image scores.
        image_max: the largest normal image score.
        pixel_p50, pixel_p99, pixel_max: quantiles of normal map values; the app fixes its
            heatmap colour scale with them so colours mean the same on every image.
        n_images: number of validation images they come from.
    """

    image_mean: float
    image_std: float
    image_max: float
    pixel_p50: float
    pixel_p99: float
    pixel_max: float
    n_images: int

    @classmethod
    def from_normals(cls, scores: np.ndarray, maps: np.ndarray) -> ScoreStats:
        """Statistics from normal image scores (N,) and their maps (N, H, W)."""
        scores = np.asarray(scores, dtype=np.float64)
        values = np.asarray(maps, dtype=np.float32).ravel()
        if scores.size == 0:
            raise ValueError("score statistics need at least one validation image")
        p50, p99 = np.percentile(values, [50.0, 99.0])
        return cls(
            image_mean=float(scores.mean()),
            image_std=float(scores.std()),
            image_max=float(scores.max()),
            pixel_p50=float(p50),
            pixel_p99=float(p99),
            pixel_max=float(values.max()),
            n_images=int(scores.size),
        )

    def normalize_scores(self, scores: np.ndarray) -> np.ndarray:
        """Scores as standard deviations above the normal mean (z-scores)."""
        return (np.asarray(scores) - self.image_mean) / max(self.image_std, 1e-12)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ScoreStats:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__})
