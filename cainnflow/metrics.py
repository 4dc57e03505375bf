"""Anomaly-detection metrics: pure numpy / scikit-learn functions.

Image level: AUROC, ROC / PR curves, F1-optimal and percentile thresholds, confusion counts.
Pixel level: AUROC, a down-sampled ROC curve for plotting and the MVTec AUPRO (per-region
overlap integrated up to a false-positive-rate limit).

Conventions: label 1 = anomalous; a sample is predicted anomalous when ``score >= threshold``.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy import ndimage
from sklearn.metrics import precision_recall_curve, roc_auc_score, roc_curve

from cainnflow.errors import DataError

__all__ = [
    "DEFAULT_FPR_LIMIT",
    "DEFAULT_MAX_CURVE_POINTS",
    "DEFAULT_THRESHOLD_PERCENTILE",
    "ConfusionStats",
    "PrCurve",
    "RocCurve",
    "aupro",
    "confusion_at",
    "f1_optimal_threshold",
    "format_metric",
    "image_auroc",
    "misclassified_first",
    "percentile_threshold",
    "pixel_auroc",
    "pixel_roc_curve_points",
    "pr_curve_points",
    "pro_curve_points",
    "roc_curve_points",
]

DEFAULT_FPR_LIMIT = 0.3
DEFAULT_MAX_CURVE_POINTS = 2000
DEFAULT_THRESHOLD_PERCENTILE = 99.0
_PERCENT = 100.0


class RocCurve(NamedTuple):
    """ROC curve points, each array ``(K,)``; ``thresholds`` decrease."""

    fpr: np.ndarray
    tpr: np.ndarray
    thresholds: np.ndarray


class PrCurve(NamedTuple):
    """Precision-recall points: ``precision`` / ``recall`` ``(K + 1,)``, ``thresholds`` ``(K,)``."""

    precision: np.ndarray
    recall: np.ndarray
    thresholds: np.ndarray


class ConfusionStats(NamedTuple):
    """Confusion counts and derived rates at one threshold (rates are 0 when undefined)."""

    tp: int
    fp: int
    tn: int
    fn: int
    precision: float
    recall: float
    f1: float
    accuracy: float
    fpr: float


# --------------------------------------------------------------------------- validation


def _labels_scores(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    labels_a = np.asarray(labels).astype(np.int64).ravel()
    scores_a = np.asarray(scores, dtype=np.float64).ravel()
    if labels_a.shape != scores_a.shape:
        raise ValueError(f"labels {labels_a.shape} and scores {scores_a.shape} differ in length")
    if not np.isin(labels_a, (0, 1)).all():
        raise ValueError("labels must be 0 (good) or 1 (anomalous)")
    if not np.isfinite(scores_a).all():
        raise ValueError("scores contain NaN or infinite values")
    return labels_a, scores_a


def _both_classes(labels: np.ndarray) -> bool:
    return labels.size > 0 and 0 < int(labels.sum()) < labels.size


def _masks_maps(
    masks: np.ndarray, maps: np.ndarray, has_mask: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """Validate ``(N, H, W)`` masks / maps and keep the images that have ground truth."""
    masks_a = np.asarray(masks).astype(bool)
    maps_a = np.asarray(maps)
    if not np.issubdtype(maps_a.dtype, np.floating):
        maps_a = maps_a.astype(np.float64)
    if masks_a.ndim == 2:
        masks_a, maps_a = masks_a[None], maps_a[None]
    if masks_a.shape != maps_a.shape or masks_a.ndim != 3:
        raise ValueError(f"masks {masks_a.shape} and maps {maps_a.shape} must both be (N, H, W)")
    if has_mask is not None:
        keep = np.asarray(has_mask, dtype=bool).ravel()
        if keep.shape[0] != masks_a.shape[0]:
            raise ValueError(f"has_mask has {keep.shape[0]} entries for {masks_a.shape[0]} images")
        masks_a, maps_a = masks_a[keep], maps_a[keep]
    if not np.isfinite(maps_a).all():
        raise ValueError("anomaly maps contain NaN or infinite values")
    return masks_a, maps_a


def _pixels(
    masks: np.ndarray, maps: np.ndarray, has_mask: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray] | None:
    """Every pixel with ground truth: (truth, map value), both flat; None unless both classes occur."""
    masks_a, maps_a = _masks_maps(masks, maps, has_mask)
    truth = masks_a.ravel()
    return (truth, maps_a.ravel()) if _both_classes(truth) else None


# --------------------------------------------------------------------------- image level


def image_auroc(labels: np.ndarray, scores: np.ndarray) -> float | None:
    """Image-level AUROC.

    Args:
        labels: ``(N,)`` 0 good / 1 anomalous.
        scores: ``(N,)`` anomaly scores, higher = more anomalous.

    Returns:
        The AUROC, or None when only one class is present.
    """
    labels_a, scores_a = _labels_scores(labels, scores)
    if not _both_classes(labels_a):
        return None
    return float(roc_auc_score(labels_a, scores_a))


def roc_curve_points(labels: np.ndarray, scores: np.ndarray) -> RocCurve | None:
    """Image-level ROC curve (None when only one class is present)."""
    labels_a, scores_a = _labels_scores(labels, scores)
    if not _both_classes(labels_a):
        return None
    fpr, tpr, thresholds = roc_curve(labels_a, scores_a)
    return RocCurve(fpr=fpr, tpr=tpr, thresholds=thresholds)


def pr_curve_points(labels: np.ndarray, scores: np.ndarray) -> PrCurve | None:
    """Image-level precision-recall curve (None when there is no anomalous sample)."""
    labels_a, scores_a = _labels_scores(labels, scores)
    if labels_a.size == 0 or labels_a.sum() == 0:
        return None
    precision, recall, thresholds = precision_recall_curve(labels_a, scores_a)
    return PrCurve(precision=precision, recall=recall, thresholds=thresholds)


def f1_optimal_threshold(labels: np.ndarray, scores: np.ndarray) -> tuple[float, float]:
    """Threshold maximising F1 (predict anomalous when ``score >= threshold``).

    Args:
        labels: ``(N,)`` 0 good / 1 anomalous.
        scores: ``(N,)`` anomaly scores.

    Returns:
        ``(threshold, f1)``; ties go to the highest threshold.

    Raises:
        DataError: there are no anomalous samples.
    """
    labels_a, scores_a = _labels_scores(labels, scores)
    if labels_a.size == 0 or labels_a.sum() == 0:
        raise DataError("an F1-optimal threshold needs at least one anomalous sample")
    precision, recall, thresholds = precision_recall_curve(labels_a, scores_a)
    precision, recall = precision[:-1], recall[:-1]  # the last point has no threshold
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(denom), where=denom > 0)
    best = int(np.flatnonzero(f1 == f1.max())[-1])
    return float(thresholds[best]), float(f1[best])


def percentile_threshold(
    normal_scores: np.ndarray, percentile: float = DEFAULT_THRESHOLD_PERCENTILE
) -> float:
    """Threshold at a percentile of the scores of normal (e.g. validation) images.

    Args:
        normal_scores: ``(N,)`` scores of good images.
        percentile: Percentile in ``[0, 100]``.

    Returns:
        The threshold.

    Raises:
        DataError: no scores were given.
        ValueError: the percentile is out of range or scores are not finite.
    """
    scores_a = np.asarray(normal_scores, dtype=np.float64).ravel()
    if scores_a.size == 0:
        raise DataError("a percentile threshold needs at least one normal score")
    if not 0.0 <= percentile <= _PERCENT:
        raise ValueError(f"percentile must be in [0, 100], got {percentile}")
    if not np.isfinite(scores_a).all():
        raise ValueError("scores contain NaN or infinite values")
    return float(np.percentile(scores_a, percentile))


def _ratio(num: float, den: float) -> float:
    return float(num / den) if den > 0 else 0.0


def confusion_at(labels: np.ndarray, scores: np.ndarray, threshold: float) -> ConfusionStats:
    """Confusion counts when predicting anomalous for ``score >= threshold``.

    Args:
        labels: ``(N,)`` 0 good / 1 anomalous.
        scores: ``(N,)`` anomaly scores.
        threshold: Decision threshold.

    Returns:
        Counts and rates.
    """
    labels_a, scores_a = _labels_scores(labels, scores)
    pred = scores_a >= threshold
    truth = labels_a == 1
    tp = int(np.sum(pred & truth))
    fp = int(np.sum(pred & ~truth))
    tn = int(np.sum(~pred & ~truth))
    fn = int(np.sum(~pred & truth))
    precision = _ratio(tp, tp + fp)
    recall = _ratio(tp, tp + fn)
    return ConfusionStats(
        tp=tp,
        fp=fp,
        tn=tn,
        fn=fn,
        precision=precision,
        recall=recall,
        f1=_ratio(2 * precision * recall, precision + recall),
        accuracy=_ratio(tp + tn, labels_a.size),
        fpr=_ratio(fp, fp + tn),
    )


# --------------------------------------------------------------------------- pixel level


def pixel_auroc(masks: np.ndarray, maps: np.ndarray, has_mask: np.ndarray | None = None) -> float | None:
    """Pixel-level AUROC over the images that have ground truth.

    Args:
        masks: ``(N, H, W)`` bool ground truth.
        maps: ``(N, H, W)`` anomaly maps.
        has_mask: ``(N,)`` bool, which images have real ground truth (default: all).

    Returns:
        The AUROC, or None when there is no defect pixel or no good pixel.
    """
    pixels = _pixels(masks, maps, has_mask)
    return None if pixels is None else float(roc_auc_score(*pixels))


def _subsample(n: int, max_points: int) -> np.ndarray:
    if n <= max_points:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, max_points).round().astype(np.int64))


def pixel_roc_curve_points(
    masks: np.ndarray,
    maps: np.ndarray,
    max_points: int = DEFAULT_MAX_CURVE_POINTS,
    has_mask: np.ndarray | None = None,
) -> RocCurve | None:
    """Pixel-level ROC curve with at most ``max_points`` points (first and last kept), for plots.

    Args:
        masks: ``(N, H, W)`` bool ground truth.
        maps: ``(N, H, W)`` anomaly maps.
        max_points: Largest number of curve points returned.
        has_mask: ``(N,)`` bool, which images have real ground truth (default: all).

    Returns:
        The curve, or None when there is no defect pixel or no good pixel.
    """
    pixels = _pixels(masks, maps, has_mask)
    if pixels is None:
        return None
    fpr, tpr, thresholds = roc_curve(*pixels, drop_intermediate=True)
    keep = _subsample(fpr.size, max(max_points, 2))
    return RocCurve(fpr=fpr[keep], tpr=tpr[keep], thresholds=thresholds[keep])


def pro_curve_points(
    masks: np.ndarray, maps: np.ndarray, has_mask: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray] | None:
    """Exact per-region-overlap curve (PRO vs FPR) at every distinct map value.

    Each connected defect region (8-connectivity, per image) weighs equally; the FPR is
    measured over all good pixels of the images with ground truth. Computed with one sort and
    cumulative sums, so memory is a few arrays of ``N * H * W`` values.

    Args:
        masks: ``(N, H, W)`` bool ground truth.
        maps: ``(N, H, W)`` anomaly maps.
        has_mask: ``(N,)`` bool, which images have real ground truth (default: all).

    Returns:
        ``(fpr, pro)``, each ``(K,)`` and non-decreasing from ``(0, 0)`` to ``(1, 1)``;
        None when there is no defect region or no good pixel.
    """
    masks_a, maps_a = _masks_maps(masks, maps, has_mask)
    structure = np.ones((3, 3), dtype=bool)
    region_ids = np.zeros(masks_a.shape, dtype=np.int32)
    n_regions = 0
    for i, mask in enumerate(masks_a):
        labelled, count = ndimage.label(mask, structure=structure)
        region_ids[i] = np.where(labelled > 0, labelled + n_regions, 0)
        n_regions += count
    n_good = int((~masks_a).sum())
    if n_regions == 0 or n_good == 0:
        return None

    flat_ids = region_ids.ravel()
    flat_maps = maps_a.ravel()
    region_sizes = np.bincount(flat_ids, minlength=n_regions + 1).astype(np.float64)
    pixel_weight = np.zeros(n_regions + 1, dtype=np.float64)
    pixel_weight[1:] = 1.0 / (region_sizes[1:] * n_regions)  # each region sums to 1 / n_regions

    order = np.argsort(flat_maps, kind="stable")[::-1]
    sorted_scores = flat_maps[order]
    sorted_ids = flat_ids[order]
    del order
    last_of_tie = np.append(sorted_scores[1:] != sorted_scores[:-1], True)
    del sorted_scores
    fpr = np.cumsum(sorted_ids == 0)[last_of_tie] / n_good
    pro = np.cumsum(pixel_weight[sorted_ids])[last_of_tie]
    fpr = np.clip(np.concatenate(([0.0], fpr)), 0.0, 1.0)
    pro = np.clip(np.concatenate(([0.0], pro)), 0.0, 1.0)
    return fpr, pro


def _area_up_to(x: np.ndarray, y: np.ndarray, x_max: float) -> float:
    """Trapezoid area under a non-decreasing-in-x curve from 0 to ``x_max`` (interpolated)."""
    inside = x <= x_max
    xs, ys = x[inside], y[inside]
    if xs[-1] < x_max and inside.sum() < x.size:
        nxt = int(np.argmax(~inside))
        x0, x1, y0, y1 = x[nxt - 1], x[nxt], y[nxt - 1], y[nxt]
        y_at = y0 + (y1 - y0) * (x_max - x0) / (x1 - x0)
        xs, ys = np.append(xs, x_max), np.append(ys, y_at)
    return float(np.sum(np.diff(xs) * (ys[1:] + ys[:-1]) / 2.0))


def aupro(
    masks: np.ndarray,
    maps: np.ndarray,
    fpr_limit: float = DEFAULT_FPR_LIMIT,
    has_mask: np.ndarray | None = None,
) -> float | None:
    """MVTec AUPRO: area under the PRO-vs-FPR curve up to ``fpr_limit``, divided by it.

    A perfect map gives 1.0. The curve is exact (every distinct map value is a threshold).

    Args:
        masks: ``(N, H, W)`` bool ground truth.
        maps: ``(N, H, W)`` anomaly maps.
        fpr_limit: FPR integration limit in ``(0, 1]``.
        has_mask: ``(N,)`` bool, which images have real ground truth (default: all).

    Returns:
        The normalised AUPRO, or None when there is no defect region or no good pixel.
    """
    if not 0.0 < fpr_limit <= 1.0:
        raise ValueError(f"fpr_limit must be in (0, 1], got {fpr_limit}")
    curve = pro_curve_points(masks, maps, has_mask)
    if curve is None:
        return None
    fpr, pro = curve
    return _area_up_to(fpr, pro, fpr_limit) / fpr_limit


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


def format_metric(value: float | None, digits: int = 4) -> str:
    """A metric for printing: ``"n/a"`` where it is undefined (one class, no masks)."""
    return "n/a" if value is None else f"{value:.{digits}f}"
