"""Evaluation of a trained detector on a test split: metrics, curves and per-image results.

:func:`evaluate` scores every test image once and returns an :class:`EvaluationResult` that
keeps the maps and masks, so thresholds can be explored afterwards without scoring again.
It is the one test loop of every engine: the PyTorch detector feeds it its DataLoader's
batches, the exported runtime :func:`read_test_batches`; each passes its own score function.
Numpy only (no PyTorch import).
Per-defect-type figures are typed rows (:class:`DefectRow`), per-image outcomes
:class:`ImageResult`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from threading import Event
from typing import Any

import numpy as np

from .data import CategoryData, ImageSource, sample_mask
from .errors import DataError, TrainingError
from .metrics import (
    PrCurve,
    RocCurve,
    aupro,
    confusion_at,
    f1_optimal_threshold,
    image_auroc,
    pixel_auroc,
    pixel_roc_curve_points,
    pr_curve_points,
    roc_curve_points,
)

#: An engine's scoring of one preprocessed batch (N, 3, S, S) → anomaly maps (N, S, S) and
#: image scores (N,), numpy (:class:`cainnflow.scorer.Scorer`'s engines each have one).
ScoreFn = Callable[[Any], tuple[np.ndarray, np.ndarray]]

#: One batch of the test split, in order: preprocessed images (N, 3, S, S) as the score
#: function takes them, ground truth (N, S, S) bool, and whether it is real ground truth (N,).
TestBatch = tuple[Any, np.ndarray, np.ndarray]

__all__ = [
    "ComparisonFigures",
    "DefectRow",
    "EvaluationResult",
    "ImageResult",
    "ScoreFn",
    "TestBatch",
    "comparison_figures",
    "evaluate",
    "evaluation_result",
    "read_test_batches",
]


@dataclass(frozen=True)
class ImageResult:
    """One test image's outcome."""

    name: str
    path: str
    defect_type: str
    label: int
    score: float
    has_mask: bool


@dataclass(frozen=True)
class DefectRow:
    """Figures of one defect type against the good test images.

    Attributes:
        defect_type: the test folder name.
        n: images of this type.
        image_auroc: AUROC of this type vs the good test images.
        pixel_auroc: pixel AUROC over this type's masked images and the good ones (None
            without masks).
        mean_score: mean image score of this type.
    """

    defect_type: str
    n: int
    image_auroc: float | None
    pixel_auroc: float | None
    mean_score: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class EvaluationResult:
    """Metrics, curves and per-image results of an evaluation on a test split.

    ``maps`` (N, S, S) and ``masks`` (N, S, S; None where no image has a mask) are kept so
    thresholds can be explored without scoring again.
    """

    category: str
    image_auroc: float | None
    pixel_auroc: float | None
    aupro: float | None
    n_test: int
    n_anomalous: int
    ms_per_image: float
    threshold: float
    f1_threshold: float | None
    f1: float | None
    images: list[ImageResult]
    scores: np.ndarray
    labels: np.ndarray
    maps: np.ndarray
    masks: np.ndarray | None
    has_mask: np.ndarray
    image_roc: RocCurve | None = None
    pixel_roc: RocCurve | None = None
    image_pr: PrCurve | None = None
    per_defect: list[DefectRow] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """The JSON-serialisable metrics (no arrays)."""
        return {
            "category": self.category,
            "image_auroc": self.image_auroc,
            "pixel_auroc": self.pixel_auroc,
            "aupro": self.aupro,
            "n_test": self.n_test,
            "n_anomalous": self.n_anomalous,
            "ms_per_image": self.ms_per_image,
            "threshold": self.threshold,
            "f1_threshold": self.f1_threshold,
            "f1": self.f1,
            "per_defect": [row.to_dict() for row in self.per_defect],
            "images": [asdict(r) for r in self.images],
        }


def _defect_rows(
    data: CategoryData,
    labels: np.ndarray,
    scores: np.ndarray,
    maps: np.ndarray,
    masks: np.ndarray,
    has_mask: np.ndarray,
    pixel_rows: np.ndarray,
) -> list[DefectRow]:
    good = labels == 0
    rows: list[DefectRow] = []
    for defect in sorted({s.defect_type for s in data.test if s.label == 1}):
        of_type = np.array([s.defect_type == defect for s in data.test])
        selected = good | of_type
        defect_px = selected & pixel_rows
        rows.append(
            DefectRow(
                defect_type=defect,
                n=int(of_type.sum()),
                image_auroc=image_auroc(labels[selected], scores[selected]),
                pixel_auroc=pixel_auroc(masks[defect_px], maps[defect_px])
                if np.any(has_mask & of_type)
                else None,
                mean_score=float(scores[of_type].mean()),
            )
        )
    return rows


def read_test_batches(
    data: CategoryData,
    preprocess: Callable[[Sequence[ImageSource]], Any],
    image_size: int,
    batch_size: int,
) -> Iterator[TestBatch]:
    """The test split in order, ``batch_size`` images at a time, with its ground truth.

    For engines without a DataLoader; the masks follow :func:`cainnflow.data.sample_mask`,
    as the PyTorch dataset's do.
    """
    for start in range(0, len(data.test), batch_size):
        samples = data.test[start : start + batch_size]
        truth = [sample_mask(sample, image_size) for sample in samples]
        images = preprocess([sample.path for sample in samples])
        yield images, np.stack([mask for mask, _ in truth]), np.array([real for _, real in truth], dtype=bool)


def evaluate(
    data: CategoryData,
    score: ScoreFn,
    batches: Iterable[TestBatch],
    *,
    n_batches: int,
    threshold: float | None,
    callback: Callable[[int, int], None] | None = None,
    cancel: Event | None = None,
) -> EvaluationResult:
    """Scores the test split and computes image/pixel AUROC, AUPRO and thresholds.

    Pixel metrics are None when no anomalous image has a mask (image-level only).

    Args:
        data: the category; ``batches`` yield ``data.test`` in order.
        score: the engine's scoring of one batch (numpy maps and scores out); it alone is
            timed for ``ms_per_image``.
        batches: :data:`TestBatch` tuples (a DataLoader's, or :func:`read_test_batches`).
        n_batches: how many batches there are (for ``callback``).
        threshold: the decision threshold (None: the median score).
        callback: ``(batch, n_batches)`` after each batch.
        cancel: set to stop.

    Raises:
        DataError: the category has no test images.
        TrainingError: cancelled through ``cancel``.
    """
    if not data.test:
        raise DataError(f"category {data.name!r} has no test images to evaluate on")
    maps, scores, masks, has_mask = [], [], [], []
    elapsed = 0.0
    for step, (images, truth, real) in enumerate(batches, start=1):
        if cancel is not None and cancel.is_set():
            raise TrainingError("evaluation cancelled")
        t0 = time.perf_counter()
        m, s = score(images)
        elapsed += time.perf_counter() - t0
        maps.append(np.asarray(m, dtype=np.float32))
        scores.append(s)
        masks.append(truth)
        has_mask.append(real)
        if callback is not None:
            callback(step, n_batches)
    return evaluation_result(
        data,
        np.concatenate(maps),
        np.concatenate(scores),
        np.concatenate(masks),
        np.concatenate(has_mask),
        threshold,
        elapsed,
    )


def evaluation_result(
    data: CategoryData,
    map_arr: np.ndarray,
    scores: np.ndarray,
    mask_arr: np.ndarray,
    has_mask_arr: np.ndarray,
    threshold: float | None,
    elapsed: float,
) -> EvaluationResult:
    """Metrics of scored test images (pure numpy; shared by every engine that scores).

    Args:
        data: the category; ``data.test`` in the order the images were scored.
        map_arr: anomaly maps (N, S, S). scores: image scores (N,).
        mask_arr: ground truth (N, S, S) bool (all False without a mask).
        has_mask_arr: (N,) whether the mask is real ground truth (True for good images).
        threshold: the model's decision threshold (None: the median score).
        elapsed: seconds spent scoring, for ``ms_per_image``.
    """
    score_arr = np.asarray(scores).astype(np.float64)
    labels = np.array([s.label for s in data.test], dtype=np.int64)
    # Pixel metrics use good images (all-zero masks, exact) and anomalous images with masks.
    pixel_rows = (labels == 0) | has_mask_arr
    pixel_ok = bool(np.any(has_mask_arr & (labels == 1)))
    px_masks, px_maps = mask_arr[pixel_rows], map_arr[pixel_rows]
    two_classes = len(set(labels.tolist())) == 2
    f1_thr, f1 = f1_optimal_threshold(labels, score_arr) if two_classes else (None, None)
    threshold = threshold if threshold is not None else float(np.median(score_arr))
    return EvaluationResult(
        category=data.name,
        image_auroc=image_auroc(labels, score_arr),
        pixel_auroc=pixel_auroc(px_masks, px_maps) if pixel_ok else None,
        aupro=aupro(px_masks, px_maps) if pixel_ok else None,
        n_test=len(labels),
        n_anomalous=int(labels.sum()),
        ms_per_image=1000.0 * elapsed / max(len(labels), 1),
        threshold=float(threshold),
        f1_threshold=None if f1_thr is None else float(f1_thr),
        f1=None if f1 is None else float(f1),
        images=[
            ImageResult(s.path.name, str(s.path), s.defect_type, s.label, float(sc), bool(hm))
            for s, sc, hm in zip(data.test, score_arr, has_mask_arr, strict=True)
        ],
        scores=score_arr,
        labels=labels,
        maps=map_arr,
        masks=mask_arr if pixel_ok else None,
        has_mask=has_mask_arr,
        image_roc=roc_curve_points(labels, score_arr) if two_classes else None,
        pixel_roc=pixel_roc_curve_points(px_masks, px_maps) if pixel_ok else None,
        image_pr=pr_curve_points(labels, score_arr) if two_classes else None,
        per_defect=_defect_rows(data, labels, score_arr, map_arr, mask_arr, has_mask_arr, pixel_rows),
    )


# --------------------------------------------------------------------------- comparing models


@dataclass(frozen=True)
class ComparisonFigures:
    """One model's figures on a test split, its decisions taken at its own threshold.

    Two models are compared fairly at the thresholds they would be used with, not at one
    shared number (their scores need not share a scale). A rate is None where it is
    undefined (no predicted positives for precision, no defective images for recall, no
    good images for the false positive rate).

    Attributes:
        image_auroc, pixel_auroc, aupro: threshold-free, as in :class:`EvaluationResult`.
        threshold: the model's decision threshold (anomalous when score ≥ it).
        precision, recall, fpr, f1: of the image verdicts at ``threshold``.
        tp, fp, tn, fn: the confusion counts at ``threshold``.
        best_f1: F1 at the test-optimal threshold (optimistic; chosen on the test split).
        n_test, n_anomalous: test images, and of them defective.
    """

    image_auroc: float | None
    pixel_auroc: float | None
    aupro: float | None
    threshold: float
    precision: float | None
    recall: float | None
    fpr: float | None
    f1: float | None
    tp: int
    fp: int
    tn: int
    fn: int
    best_f1: float | None
    n_test: int
    n_anomalous: int


def comparison_figures(result: EvaluationResult, threshold: float | None = None) -> ComparisonFigures:
    """A model's :class:`ComparisonFigures` from its evaluation.

    Args:
        result: the model's evaluation on the test split.
        threshold: its decision threshold (default: the one it was evaluated with,
            ``result.threshold``).
    """
    limit = float(result.threshold if threshold is None else threshold)
    counts = confusion_at(result.labels, result.scores, limit)
    precision = counts.precision if counts.tp + counts.fp else None
    recall = counts.recall if counts.tp + counts.fn else None
    fpr = counts.fpr if counts.fp + counts.tn else None
    f1 = counts.f1 if precision is not None and recall is not None else None
    return ComparisonFigures(
        image_auroc=result.image_auroc,
        pixel_auroc=result.pixel_auroc,
        aupro=result.aupro,
        threshold=limit,
        precision=precision,
        recall=recall,
        fpr=fpr,
        f1=f1,
        tp=counts.tp,
        fp=counts.fp,
        tn=counts.tn,
        fn=counts.fn,
        best_f1=result.f1,
        n_test=result.n_test,
        n_anomalous=result.n_anomalous,
    )
