"""AUROCs that can be resampled: per-image histograms and a paired bootstrap over images.

Auto-configuration compares settings on a few held-out images; whether one setting's lead is
more than the luck of which images were held out is a question for a bootstrap: resample the
images (good and anomalous separately, so every resample has both), recompute each setting's
AUROCs on the same resample, look at the spread of the differences. Pixel AUROC over millions
of pixels cannot be recomputed hundreds of times by sorting, so each image's pixels are counted
once into quantile bins (good and defect pixels apart); a resample's pixel AUROC is then a
weighted sum of those counts — Mann–Whitney on the bins, ties within a bin counted half, which
is within ``1 / bins`` of the exact value (:func:`cainnflow.metrics.pixel_auroc`).

AUPRO comes from the same counts (:func:`weighted_aupro`): a threshold at a bin edge gives the
false-positive rate from the good pixels' counts and each anomalous image's overlap from its own
defect pixels' counts — one region per image, which is what a synthetic anomaly is (MVTec's
AUPRO splits a mask into connected components: :func:`cainnflow.metrics.aupro`).

Pure numpy; torch-free.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "DEFAULT_BINS",
    "auroc_from_counts",
    "pixel_histograms",
    "resample_weights",
    "weighted_aupro",
    "weighted_image_auroc",
    "weighted_pixel_auroc",
]

DEFAULT_BINS = 4096
_EDGE_SAMPLE = 1 << 20
_CHUNK = 64


def auroc_from_counts(negative: np.ndarray, positive: np.ndarray) -> np.ndarray:
    """AUROC from counts over ordered bins (last axis, low to high scores); ties count half.

    Leading axes are batches (one AUROC each); NaN where a class has no count.
    """
    negative = np.asarray(negative, dtype=np.float64)
    positive = np.asarray(positive, dtype=np.float64)
    below = np.cumsum(negative, axis=-1) - negative
    wins = np.sum(positive * (below + 0.5 * negative), axis=-1)
    pairs = positive.sum(axis=-1) * negative.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(pairs > 0, wins / np.where(pairs > 0, pairs, 1.0), np.nan)


def pixel_histograms(maps: np.ndarray, masks: np.ndarray, bins: int = DEFAULT_BINS) -> np.ndarray:
    """Per-image counts of good and defect pixels in ``bins`` quantile bins of all the maps.

    Args:
        maps: ``(N, H, W)`` anomaly maps.
        masks: ``(N, H, W)`` bool ground truth.
        bins: number of bins; the bin edges are quantiles of (a sample of) every map value.

    Returns:
        ``(N, 2, bins)`` counts: ``[:, 0]`` good pixels, ``[:, 1]`` defect pixels.
    """
    maps = np.asarray(maps, dtype=np.float32)
    masks = np.asarray(masks, dtype=bool)
    if maps.shape != masks.shape or maps.ndim != 3:
        raise ValueError(f"maps {maps.shape} and masks {masks.shape} must both be (N, H, W)")
    n = maps.shape[0]
    sample = maps.reshape(-1)[:: max(1, maps.size // _EDGE_SAMPLE)]
    edges = np.unique(np.quantile(sample, np.linspace(0.0, 1.0, bins + 1)[1:-1]))
    counts = np.zeros((n, 2, bins))
    for start in range(0, n, _CHUNK):
        part = slice(start, start + _CHUNK)
        index = np.searchsorted(edges, maps[part].reshape(-1), side="right").reshape(len(maps[part]), -1)
        index += masks[part].reshape(len(index), -1) * bins + (np.arange(len(index)) * 2 * bins)[:, None]
        counts[part] = np.bincount(index.reshape(-1), minlength=len(index) * 2 * bins).reshape(-1, 2, bins)
    return counts


def weighted_pixel_auroc(histograms: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Pixel AUROC of each resample: ``weights`` ``(B, N)`` image counts, ``histograms`` ``(N, 2, bins)``."""
    counts = np.tensordot(np.asarray(weights, dtype=np.float64), histograms, axes=(1, 0))
    return auroc_from_counts(counts[:, 0], counts[:, 1])


def weighted_aupro(histograms: np.ndarray, weights: np.ndarray, fpr_limit: float = 0.3) -> np.ndarray:
    """AUPRO of each resample (PRO against FPR up to ``fpr_limit``, divided by it).

    Args:
        histograms: ``(N, 2, bins)`` per-image counts (:func:`pixel_histograms`).
        weights: ``(B, N)`` counts of each image in each resample.
        fpr_limit: the FPR integration limit, in ``(0, 1]``.

    Returns:
        ``(B,)`` AUPROs, each image's defect pixels one region; NaN where a resample has no
        good pixel or no defect pixel.
    """
    if not 0.0 < fpr_limit <= 1.0:
        raise ValueError(f"fpr_limit must be in (0, 1], got {fpr_limit}")
    histograms = np.asarray(histograms, dtype=np.float64)
    weights = np.asarray(weights, dtype=np.float64)

    # Counts at or above each bin edge, from the highest threshold down (column 0: nothing above).
    def tails(counts: np.ndarray) -> np.ndarray:
        above = np.cumsum(counts[..., ::-1], axis=-1)
        return np.concatenate([np.zeros((*counts.shape[:-1], 1)), above], axis=-1)

    good = tails(weights @ histograms[:, 0])  # (B, bins + 1)
    defect_total = histograms[:, 1].sum(axis=1)
    anomalous = defect_total > 0
    overlap = tails(histograms[anomalous, 1]) / defect_total[anomalous, None]  # (A, bins + 1)
    region_weight = weights[:, anomalous]
    with np.errstate(invalid="ignore", divide="ignore"):
        fpr = good / good[:, -1:]
        pro = (region_weight @ overlap) / region_weight.sum(axis=1, keepdims=True)
    x0, x1, y0, y1 = fpr[:, :-1], fpr[:, 1:], pro[:, :-1], pro[:, 1:]
    crossing = (x0 < fpr_limit) & (x1 > fpr_limit)
    with np.errstate(invalid="ignore", divide="ignore"):
        y_at = y0 + (y1 - y0) * (fpr_limit - x0) / np.where(x1 > x0, x1 - x0, 1.0)
    y1 = np.where(crossing, y_at, y1)
    dx = np.minimum(x1, fpr_limit) - np.minimum(x0, fpr_limit)
    return np.sum(dx * (y0 + y1) / 2.0, axis=1) / fpr_limit


def weighted_image_auroc(labels: np.ndarray, scores: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Image AUROC of each resample: ``weights`` ``(B, N)`` counts of each image; ties count half."""
    labels = np.asarray(labels).astype(bool)
    values, inverse = np.unique(np.asarray(scores, dtype=np.float64), return_inverse=True)
    onehot = np.zeros((len(labels), len(values)))
    onehot[np.arange(len(labels)), inverse.reshape(-1)] = 1.0
    weights = np.asarray(weights, dtype=np.float64)
    return auroc_from_counts((weights * ~labels) @ onehot, (weights * labels) @ onehot)


def resample_weights(labels: np.ndarray, resamples: int, seed: int = 0) -> np.ndarray:
    """``(resamples, N)`` counts of each image in stratified bootstrap resamples.

    Good and anomalous images are resampled apart, each class keeping its size, so every
    resample has both.
    """
    labels = np.asarray(labels).astype(bool)
    rng = np.random.default_rng(seed)
    weights = np.zeros((resamples, len(labels)))
    rows = np.arange(resamples)[:, None]
    for group in (np.flatnonzero(~labels), np.flatnonzero(labels)):
        if len(group):
            draws = group[rng.integers(0, len(group), size=(resamples, len(group)))]
            np.add.at(weights, (rows, draws), 1.0)
    return weights
