"""The detector: a CAINNFlow model with its calibration, ready to train, score and save.

:class:`Detector` is what the command line and the app use::

    detector = Detector.create(CAINNFlowConfig(), device="auto")
    detector.fit(load_mvtec_category(root, "bottle"), TrainConfig(epochs=10))
    prediction = detector.predict([read_image("part.png")])

Training caches the frozen backbone's features once, fits the flows, then calibrates on the
validation split carved from train/good (never from test): score statistics and a default
threshold (a high percentile of validation normal scores) are stored with the model.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from threading import Event
from typing import Any, BinaryIO

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader

from . import __version__
from .backbone import BACKBONES, FeatureExtractor, create_backbone
from .checkpoint import read_checkpoint, write_checkpoint
from .data import AnomalyDataset, CategoryData, Sample, preprocess, read_image, split_train_val
from .device import autocast_dtype, resolve_device
from .errors import CheckpointError, DataError, TrainingError
from .metrics import (
    PrCurve,
    RocCurve,
    aupro,
    f1_optimal_threshold,
    image_auroc,
    percentile_threshold,
    pixel_auroc,
    pixel_roc_curve_points,
    pr_curve_points,
    roc_curve_points,
)
from .model import CAINNFlow, CAINNFlowConfig
from .scoring import ScoreStats, anomaly_map, image_scores
from .training import ProgressCallback, TrainConfig, TrainingHistory, extract_features, fit_flows

__all__ = ["DEFAULT_THRESHOLD_PERCENTILE", "Detector", "EvaluationResult", "ImageResult", "Prediction"]

logger = logging.getLogger(__name__)

DEFAULT_THRESHOLD_PERCENTILE = 99.0
DEFAULT_VAL_FRACTION = 0.15
ImageSource = Image.Image | str | Path | bytes


@dataclass(frozen=True)
class Prediction:
    """Scores of a batch of images.

    Attributes:
        maps: anomaly maps (N, S, S) at the model's input size.
        scores: image scores (N,).
        is_anomalous: ``scores >= threshold`` (N,).
        threshold: the decision threshold used.
    """

    maps: np.ndarray
    scores: np.ndarray
    is_anomalous: np.ndarray
    threshold: float


@dataclass(frozen=True)
class ImageResult:
    """One test image's outcome."""

    name: str
    path: str
    defect_type: str
    label: int
    score: float
    has_mask: bool


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
    per_defect: dict[str, dict[str, float | None]] = field(default_factory=dict)

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
            "per_defect": self.per_defect,
            "images": [vars(r) for r in self.images],
        }


class Detector:
    """A CAINNFlow model plus what it needs to score: statistics, threshold, history.

    Args:
        model: the model, on its device.
        stats: score statistics of validation normals (set by :meth:`fit` / :meth:`calibrate`).
        threshold: decision threshold on image scores.
        history: the training history.
        info: free-form provenance (dataset, category, train config), stored in checkpoints.
    """

    def __init__(
        self,
        model: CAINNFlow,
        *,
        stats: ScoreStats | None = None,
        threshold: float | None = None,
        history: TrainingHistory | None = None,
        info: dict[str, Any] | None = None,
    ) -> None:
        self.model = model
        self.stats = stats
        self.threshold = threshold
        self.history = history
        self.info: dict[str, Any] = dict(info or {})

    # ------------------------------------------------------------------ construction
    @classmethod
    def create(
        cls,
        config: CAINNFlowConfig | None = None,
        *,
        weights: str | Path = "auto",
        device: str | torch.device = "auto",
    ) -> Detector:
        """Builds an untrained detector (backbone weights as :func:`create_backbone` says)."""
        config = config or CAINNFlowConfig()
        backbone = create_backbone(config.backbone, weights=weights, out_indices=config.out_indices)
        if config.out_indices is None:
            config = CAINNFlowConfig.from_dict(
                {**config.to_dict(), "out_indices": list(backbone.out_indices)}
            )
        model = CAINNFlow(backbone, config).to(resolve_device(device))
        model.eval()
        return cls(model)

    @property
    def config(self) -> CAINNFlowConfig:
        return self.model.config

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def backbone(self) -> FeatureExtractor:
        return self.model.backbone

    @property
    def is_trained(self) -> bool:
        return self.stats is not None

    def to(self, device: str | torch.device) -> Detector:
        self.model.to(resolve_device(device))
        return self

    # ------------------------------------------------------------------ data helpers
    def dataset(self, samples: Sequence[Sample]) -> AnomalyDataset:
        return AnomalyDataset(samples, self.config.image_size, self.backbone.mean, self.backbone.std)

    def loader(self, samples: Sequence[Sample], batch_size: int, num_workers: int = 0) -> DataLoader:
        return DataLoader(
            self.dataset(samples),
            batch_size=batch_size,
            shuffle=False,
            num_workers=num_workers,
            pin_memory=self.device.type == "cuda",
        )

    def preprocess(self, images: Sequence[ImageSource]) -> Tensor:
        """PIL images, paths or bytes → a normalised batch (N, 3, S, S) on the model's device."""
        tensors = []
        for item in images:
            image = item if isinstance(item, Image.Image) else read_image(item)
            tensors.append(preprocess(image, self.config.image_size, self.backbone.mean, self.backbone.std))
        if not tensors:
            raise DataError("no images given")
        return torch.stack(tensors).to(self.device)

    # ------------------------------------------------------------------ training
    def fit(
        self,
        data: CategoryData,
        train_config: TrainConfig | None = None,
        *,
        val_fraction: float = DEFAULT_VAL_FRACTION,
        callback: ProgressCallback | None = None,
        cancel: Event | None = None,
        num_workers: int = 0,
    ) -> TrainingHistory:
        """Trains on ``data.train`` (good images), validating on a split carved from it.

        Raises:
            TrainingCancelled: cancelled before the first epoch finished.
            TrainingError: NaN/inf loss (last good state kept).
        """
        train_config = train_config or TrainConfig()
        torch.manual_seed(train_config.seed)
        train_samples, val_samples = split_train_val(data.train, val_fraction, seed=train_config.seed)
        start = time.perf_counter()
        loader = self.loader([*train_samples, *val_samples], train_config.batch_size, num_workers)
        features = extract_features(self.model, loader, self.device, callback=callback, cancel=cancel)
        n_train = len(train_samples)
        train_feats = [f[:n_train] for f in features]
        val_feats = [f[n_train:] for f in features] if val_samples else None
        feature_seconds = time.perf_counter() - start
        history = fit_flows(
            self.model, train_feats, val_feats, train_config, callback=callback, cancel=cancel
        )
        history.feature_seconds = feature_seconds
        self.history = history
        self.calibrate_from_features(val_feats if val_feats is not None else train_feats)
        self.info.update(
            {
                "category": data.name,
                "n_train": n_train,
                "n_val": len(val_samples),
                "train_config": train_config.to_dict(),
            }
        )
        return history

    @torch.no_grad()
    def calibrate_from_features(self, features: Sequence[Tensor], batch_size: int = 16) -> None:
        """Sets score statistics and the default threshold from normal features."""
        maps, scores = [], []
        for start in range(0, features[0].shape[0], batch_size):
            batch = [f[start : start + batch_size].to(self.device) for f in features]
            m, s = self._score_features(batch)
            maps.append(m.cpu().numpy())
            scores.append(s.cpu().numpy())
        all_scores = np.concatenate(scores)
        if not np.all(np.isfinite(all_scores)):
            raise TrainingError("validation scores are not finite; the flow did not train properly")
        self.stats = ScoreStats.from_normals(all_scores, np.concatenate(maps))
        self.threshold = percentile_threshold(all_scores, DEFAULT_THRESHOLD_PERCENTILE)

    # ------------------------------------------------------------------ scoring
    def _score_features(self, features: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
        z = self.model(features).z
        maps = anomaly_map(z, self.config.image_size, self.config.sigma, self.config.combine)
        return maps, image_scores(maps, self.config.pooling)

    @torch.no_grad()
    def score_batch(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """Normalised images (N, 3, S, S) → anomaly maps (N, S, S) and scores (N,).

        On CUDA the frozen backbone runs under bf16 autocast; the flows stay in float32.
        """
        dtype = autocast_dtype(self.device)
        with torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None):
            features = self.model.extract_features(images.to(self.device))
        return self._score_features(features)

    def predict(self, images: Sequence[ImageSource], batch_size: int = 8) -> Prediction:
        """Scores images given as PIL images, paths or bytes.

        Raises:
            DataError: an image cannot be read (its name is in the message).
        """
        threshold = self.threshold if self.threshold is not None else float("inf")
        maps, scores = [], []
        for start in range(0, len(images), batch_size):
            batch = self.preprocess(images[start : start + batch_size])
            m, s = self.score_batch(batch)
            maps.append(m.cpu().numpy())
            scores.append(s.cpu().numpy())
        if not maps:
            raise DataError("no images given")
        score_arr = np.concatenate(scores)
        return Prediction(np.concatenate(maps), score_arr, score_arr >= threshold, threshold)

    @torch.no_grad()
    def evaluate(
        self,
        data: CategoryData,
        *,
        batch_size: int = 8,
        num_workers: int = 0,
        callback: Callable[[int, int], None] | None = None,
        cancel: Event | None = None,
    ) -> EvaluationResult:
        """Scores the test split and computes image/pixel AUROC, AUPRO and thresholds.

        Pixel metrics are None when no anomalous image has a mask (image-level only).
        """
        if not data.test:
            raise DataError(f"category {data.name!r} has no test images to evaluate on")
        loader = self.loader(data.test, batch_size, num_workers)
        maps, scores, masks, has_mask = [], [], [], []
        elapsed = 0.0
        for step, batch in enumerate(loader, start=1):
            if cancel is not None and cancel.is_set():
                raise TrainingError("evaluation cancelled")
            images = batch[0].to(self.device)
            if self.device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            m, s = self.score_batch(images)
            m_np, s_np = m.cpu().numpy(), s.cpu().numpy()
            elapsed += time.perf_counter() - t0
            maps.append(m_np.astype(np.float32))
            scores.append(s_np)
            masks.append(batch[2][:, 0].numpy() > 0.5)
            has_mask.append(batch[3].numpy().astype(bool))
            if callback is not None:
                callback(step, len(loader))
        map_arr = np.concatenate(maps)
        score_arr = np.concatenate(scores).astype(np.float64)
        mask_arr = np.concatenate(masks)
        has_mask_arr = np.concatenate(has_mask)
        labels = np.array([s.label for s in data.test], dtype=np.int64)
        # Pixel metrics use good images (all-zero masks, exact) and anomalous images with masks.
        pixel_rows = (labels == 0) | has_mask_arr
        pixel_ok = bool(np.any(has_mask_arr & (labels == 1)))
        px_masks, px_maps = mask_arr[pixel_rows], map_arr[pixel_rows]
        two_classes = len(set(labels.tolist())) == 2
        f1_thr, f1 = f1_optimal_threshold(labels, score_arr) if two_classes else (None, None)
        per_defect: dict[str, dict[str, float | None]] = {}
        good = labels == 0
        for defect in sorted({s.defect_type for s in data.test if s.label == 1}):
            rows = np.array([s.defect_type == defect for s in data.test])
            sel = good | rows
            defect_px = sel & pixel_rows
            per_defect[defect] = {
                "n": int(rows.sum()),
                "image_auroc": image_auroc(labels[sel], score_arr[sel]),
                "pixel_auroc": pixel_auroc(mask_arr[defect_px], map_arr[defect_px])
                if np.any(has_mask_arr & rows)
                else None,
                "mean_score": float(score_arr[rows].mean()),
            }
        threshold = self.threshold if self.threshold is not None else float(np.median(score_arr))
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
            per_defect=per_defect,
        )

    # ------------------------------------------------------------------ persistence
    def _embeds_backbone(self) -> bool:
        spec = BACKBONES[self.config.backbone]
        source = self.backbone.weights_source.lower()
        from_package = spec.offline_package is not None and "random" not in source and "file" not in source
        from_hub = "hub" in source
        return not (from_package or from_hub)

    def checkpoint_document(self) -> dict[str, Any]:
        return {
            "library_version": __version__,
            "model": self.config.to_dict(),
            "backbone_weights_source": self.backbone.weights_source,
            "backbone_embedded": self._embeds_backbone(),
            "stats": self.stats.to_dict() if self.stats else None,
            "threshold": self.threshold,
            "history": self.history.to_dict() if self.history else None,
            "info": self.info,
        }

    def save(self, path: str | Path) -> Path:
        """Writes the detector to a ``.safetensors`` checkpoint (atomically)."""
        tensors = {f"flows.{k}": v for k, v in self.model.flows.state_dict().items()}
        tensors.update({f"standardizers.{k}": v for k, v in self.model.standardizers.state_dict().items()})
        if self._embeds_backbone():
            tensors.update({f"backbone.{k}": v for k, v in self.backbone.state_dict().items()})
        return write_checkpoint(path, tensors, self.checkpoint_document())

    def to_bytes(self) -> bytes:
        """The checkpoint as bytes (for downloads)."""
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            return self.save(Path(tmp) / "model.safetensors").read_bytes()

    @classmethod
    def load(
        cls,
        source: str | Path | bytes | BinaryIO,
        *,
        device: str | torch.device = "auto",
        weights: str | Path | None = None,
    ) -> Detector:
        """Loads a checkpoint written by :meth:`save`; nothing is unpickled.

        Args:
            source: path, bytes or binary file object.
            device: where to put the model.
            weights: backbone weights to use instead of the recorded source (a local file
                for a hub backbone on an offline machine).

        Raises:
            CheckpointError: the file is not a usable cainnflow checkpoint.
            WeightsUnavailableError: the backbone's weights cannot be had here.
        """
        tensors, doc = read_checkpoint(source)
        try:
            config = CAINNFlowConfig.from_dict(doc["model"])
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"checkpoint has an invalid model configuration: {exc}") from exc
        if config.backbone not in BACKBONES:
            raise CheckpointError(f"checkpoint uses unknown backbone {config.backbone!r}")
        embedded = bool(doc.get("backbone_embedded"))
        if embedded:
            backbone_logger = logging.getLogger("cainnflow.backbone")
            level = backbone_logger.level
            backbone_logger.setLevel(logging.ERROR)  # weights come from the checkpoint below
            try:
                backbone = create_backbone(config.backbone, weights="random", out_indices=config.out_indices)
            finally:
                backbone_logger.setLevel(level)
            state = {k[len("backbone.") :]: v for k, v in tensors.items() if k.startswith("backbone.")}
            try:
                backbone.load_state_dict(state, strict=True)
            except RuntimeError as exc:
                raise CheckpointError(
                    f"checkpoint's backbone weights do not fit {config.backbone}: {exc}"
                ) from exc
            backbone.weights_source = str(doc.get("backbone_weights_source", "checkpoint"))
        else:
            backbone = create_backbone(
                config.backbone, weights=weights or "auto", out_indices=config.out_indices
            )
        model = CAINNFlow(backbone, config)
        for prefix, module in (("flows.", model.flows), ("standardizers.", model.standardizers)):
            state = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
            try:
                module.load_state_dict(state, strict=True)
            except RuntimeError as exc:
                first = str(exc).splitlines()[0] if str(exc) else "shape mismatch"
                raise CheckpointError(f"checkpoint tensors do not match its configuration: {first}") from exc
        model.to(resolve_device(device)).eval()
        stats = ScoreStats.from_dict(doc["stats"]) if doc.get("stats") else None
        history = TrainingHistory.from_dict(doc["history"]) if doc.get("history") else None
        return cls(
            model, stats=stats, threshold=doc.get("threshold"), history=history, info=doc.get("info") or {}
        )
