"""A threshold the model's few validation images cannot carry: say so, and offer a better one.

The default threshold is a high percentile of the scores of the validation normals carved
from the training images. From a handful of them it is little more than their maximum, and
good test images land above it. :func:`synthetic_threshold` sets it instead between those
validation images and synthetic anomalies pasted into the good training images
(:func:`cainnflow.synthetic.make_synthetic_anomalies`, the same defects auto-configuration
uses): the F1-optimal score between the two groups.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from cainnflow.data import DEFAULT_VAL_FRACTION, CategoryData, read_image, split_train_val
from cainnflow.errors import DataError

if TYPE_CHECKING:  # the sidebar imports this module on a fresh server: nothing heavy at import
    from cainnflow.detector import Detector

__all__ = ["MIN_VALIDATION_IMAGES", "SyntheticThreshold", "few_validation_images", "synthetic_threshold"]

MIN_VALIDATION_IMAGES = 10
"""A threshold from fewer validation images than this is flagged."""
SYNTHETIC_PER_IMAGE = 2
MIN_SYNTHETIC = 12
MAX_SOURCE_IMAGES = 40
WORKING_SIDE = 512


@dataclass(frozen=True)
class SyntheticThreshold:
    """A threshold between validation normals and synthetic anomalies, and what it rests on."""

    threshold: float
    n_good: int
    n_synthetic: int


def few_validation_images(detector: Detector) -> int | None:
    """How many validation images the threshold came from, when fewer than :data:`MIN_VALIDATION_IMAGES`."""
    stats = getattr(detector, "stats", None)
    n = getattr(stats, "n_images", None)
    if not isinstance(n, int) or n < 1 or detector.threshold is None:  # 0: an export that does not say
        return None
    return n if n < MIN_VALIDATION_IMAGES else None


def synthetic_threshold(detector: Detector, data: CategoryData, *, seed: int = 0) -> SyntheticThreshold:
    """The F1-optimal threshold between the model's validation normals and synthetic anomalies.

    Args:
        detector: the trained model.
        data: the data it was trained on (its good training images; the test split is not read).
        seed: the seed the model's validation split was carved with (the app trains with 0).

    Raises:
        DataError: too few good images, or none that a synthetic defect can change.
    """
    from cainnflow.synthetic import f1_threshold, make_synthetic_anomalies

    _, val = split_train_val(data.train, DEFAULT_VAL_FRACTION, seed=seed)
    if not val:
        raise DataError("the data has too few good training images to hold any out")
    good = [read_image(s.path, max_side=WORKING_SIDE) for s in val]
    sources = [read_image(s.path, max_side=WORKING_SIDE) for s in data.train[:MAX_SOURCE_IMAGES]]
    n = max(MIN_SYNTHETIC, SYNTHETIC_PER_IMAGE * len(sources))
    anomalies = make_synthetic_anomalies(sources, n, seed=seed)
    threshold = f1_threshold(detector, good, [a.image for a in anomalies])
    return SyntheticThreshold(threshold, len(good), len(anomalies))
