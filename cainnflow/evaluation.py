"""Evaluation of a trained detector on a test split: metrics, curves and per-image results.

:func:`evaluate` scores every test image once and returns an :class:`EvaluationResult` that
keeps the maps and masks, so thresholds can be explored afterwards without scoring again.
Per-defect-type figures are typed rows (:class:`DefectRow`), per-image outcomes
:class:`ImageResult`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from threading import Event
from typing import TYPE_CHECKING, Any

import numpy as np

from .data import CategoryData
from .errors import DataError, TrainingError
from .metrics import (
    PrCurve,
    RocCurve,
    aupro,
    f1_optimal_threshold,
    image_auroc,
    pixel_auroc,
    pixel_roc_curve_points,
    pr_curve_points,
    roc_curve_points,
)

if TYPE_CHECKING:
    import torch

# A batch of preprocessed images (N, 3, S, S) on the model's device -> (maps (N, S, S), scores (N,)).
ScoreBatch = Callable[["torch.Tensor"], tuple["torch.Tensor", "torch.Tensor"]]

__all__ = ["DefectRow", "EvaluationResult", "ImageResult", "ScoreBatch", "evaluate", "evaluation_result"]


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


def evaluate(
    data: CategoryData,
    score_batch: ScoreBatch,
    loader: torch.utils.data.DataLoader,
    *,
    threshold: float | None,
    device: torch.device,
    callback: Callable[[int, int], None] | None = None,
    cancel: Event | None = None,
) -> EvaluationResult:
    """Scores the test split and computes image/pixel AUROC, AUPRO and thresholds.

    Pixel metrics are None when no anomalous image has a mask (image-level only).

    Args:
        data: the category; ``loader`` yields ``data.test`` in order.
        score_batch: the model's scoring of one batch (``Detector.score_batch``).
        loader: batches ``(images, labels, masks (N, 1, S, S), has_mask (N,))``.
        threshold: the decision threshold (None: the median score).
        device: where ``score_batch`` runs (images are moved there; timed with a CUDA sync).
        callback: ``(batch, n_batches)`` after each batch.
        cancel: set to stop.

    Raises:
        DataError: the category has no test images.
        TrainingError: cancelled through ``cancel``.
    """
    import torch  # lazily: evaluation_result is shared with the torch-free export runtime

    if not data.test:
        raise DataError(f"category {data.name!r} has no test images to evaluate on")
    maps, scores, masks, has_mask = [], [], [], []
    elapsed = 0.0
    for step, batch in enumerate(loader, start=1):
        if cancel is not None and cancel.is_set():
            raise TrainingError("evaluation cancelled")
        images = batch[0].to(device)
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        m, s = score_batch(images)
        m_np, s_np = m.cpu().numpy(), s.cpu().numpy()
        elapsed += time.perf_counter() - t0
        maps.append(m_np.astype(np.float32))
        scores.append(s_np)
        masks.append(batch[2][:, 0].numpy() > 0.5)
        has_mask.append(batch[3].numpy().astype(bool))
        if callback is not None:
            callback(step, len(loader))
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
