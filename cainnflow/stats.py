"""Score statistics of validation normals: numpy only, so the torch-free runtime and app use them too."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from .validate import MAX_ABS_VALUE, finite_number

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
    def from_dict(cls, data: object, *, n_images: int | None = None) -> ScoreStats:
        """Validated statistics from a checkpoint's or an export's document (the one check of them).

        Args:
            data: the :meth:`to_dict` form.
            n_images: the count to use when ``data`` has none (an export records none: 0,
                unknown).

        Raises:
            ValueError: not an object, a field missing, a value not a finite number of sane
                size, or impossible values (``n_images < 1``, ``image_std < 0``); one line
                that starts with what is wrong, for the caller to prefix with where.
        """
        if not isinstance(data, dict):
            raise ValueError("must be an object")
        fewest = 1
        if n_images is not None and "n_images" not in data:
            data, fewest = {**data, "n_images": n_images}, 0
        missing = [k for k in cls.__dataclass_fields__ if k not in data]
        if missing:
            raise ValueError(f"has no {missing[0]!r}")
        values = {k: finite_number(data[k], repr(k), limit=MAX_ABS_VALUE) for k in cls.__dataclass_fields__}
        count = values["n_images"]
        if count < fewest or count != int(count) or values["image_std"] < 0:
            raise ValueError("holds impossible values (n_images < 1 or std < 0)")
        return cls(**{**values, "n_images": int(values["n_images"])})
