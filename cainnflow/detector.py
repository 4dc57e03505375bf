"""The detector: a CAINNFlow model with its calibration, ready to train, score and save.

:class:`Detector` is what the command line and the app use::

    detector = Detector.create(CAINNFlowConfig(), device="auto")
    detector.fit(load_mvtec_category(root, "bottle"), TrainConfig(epochs=10))
    prediction = detector.predict([read_image("part.png")])

Training caches the frozen backbone's features once, fits the flows, then calibrates on the
validation split carved from train/good (never from test): score statistics and a default
threshold (a high percentile of validation normal scores) are stored with the model, and a
:class:`cainnflow.record.TrainingRecord` says what it was trained on, how long it took and how
its threshold was set.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from functools import partial
from pathlib import Path
from threading import Event
from typing import BinaryIO

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader

from .augment import (
    AUGMENT_MAX_IMAGES,
    FLIP_TEST_IMAGES,
    FLIPS,
    FlipDecision,
    apply_flip,
    auto_pooling,
    choose_flips,
    used_flips,
)
from .backbone import FeatureExtractor, create_backbone
from .checkpoint import DetectorParts, detector_to_bytes, load_detector_parts, save_detector
from .data import (
    DEFAULT_VAL_FRACTION,
    AnomalyDataset,
    CategoryData,
    ImageSource,
    Sample,
    preprocess_images,
    split_train_val,
)
from .device import autocast_dtype, resolve_device
from .errors import TrainingError
from .evaluation import EvaluationResult, TestBatch, evaluate
from .metrics import DEFAULT_THRESHOLD_PERCENTILE, percentile_threshold
from .model import CAINNFlow, CAINNFlowConfig
from .photometric import EXPOSURE_IMAGES, Exposure, measure_exposure
from .record import DataReference, Timings, TrainingRecord
from .scorer import Prediction, predict_batches
from .scoring import MAP_POOLINGS, ScoreStats, auto_coarsest_weight
from .training import ProgressCallback, TrainConfig, TrainingHistory, extract_features, fit_flows

__all__ = ["Detector", "Prediction"]

logger = logging.getLogger(__name__)


class Detector:
    """A CAINNFlow model plus what it needs to score: statistics, threshold, history, record.

    The PyTorch engine of :class:`cainnflow.scorer.Scorer` (the exported runtime is the other).

    Args:
        model: the model, on its device.
        stats: score statistics of validation normals (set by :meth:`fit` / :meth:`calibrate`).
        threshold: decision threshold on image scores.
        history: the training history.
        record: what it was trained on and how (:class:`cainnflow.record.TrainingRecord`),
            stored in checkpoints; replace it with :func:`dataclasses.replace`.
    """

    def __init__(
        self,
        model: CAINNFlow,
        *,
        stats: ScoreStats | None = None,
        threshold: float | None = None,
        history: TrainingHistory | None = None,
        record: TrainingRecord | None = None,
    ) -> None:
        self.model = model
        self.stats = stats
        self.history = history
        self.record = record if record is not None else TrainingRecord()
        self._threshold = threshold

    @property
    def threshold(self) -> float | None:
        """Decision threshold on image scores; setting it records ``"user"`` as its origin."""
        return self._threshold

    @threshold.setter
    def threshold(self, value: float | None) -> None:
        self.set_threshold(value, "user")

    def set_threshold(self, value: float | None, origin: str) -> None:
        """Sets the threshold and records how it was set.

        Args:
            value: the threshold on image scores (None: none).
            origin: one of :data:`cainnflow.record.THRESHOLD_ORIGINS`.

        Raises:
            ValueError: an unknown origin (the threshold is left as it was).
        """
        self.record = replace(self.record, threshold_origin=None if value is None else origin)
        self._threshold = None if value is None else float(value)

    @property
    def info(self) -> None:
        raise AttributeError(
            "Detector.info (a free dict) is gone: read and replace detector.record, a "
            "cainnflow.record.TrainingRecord (data, n_train, n_val, train_config, timings, auto, "
            "threshold_origin, sweep_key, feedback)"
        )

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
        # The initial weights follow from the configuration (its seed) alone: not from what ran
        # before in this process (an earlier training, auto-configuration's selector, another
        # session's job), and the caller's random state is left as it was.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            backbone = create_backbone(config.backbone, weights=weights, out_indices=config.out_indices)
            if config.out_indices is None:
                config = CAINNFlowConfig.from_dict(
                    {**config.to_dict(), "out_indices": list(backbone.out_indices)}
                )
            model = CAINNFlow(backbone, config)
        model = model.to(resolve_device(device))
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
    def image_size(self) -> int:
        return self.config.image_size

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
        batch = preprocess_images(images, self.config.image_size, self.backbone.mean, self.backbone.std)
        return torch.from_numpy(batch).to(self.device)

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
        if self.config.photometric != "none":
            self.fit_exposure(train_samples)
        loader = self.loader([*train_samples, *val_samples], train_config.batch_size, num_workers)
        features = extract_features(self.model, loader, self.device, callback=callback, cancel=cancel)
        n_train = len(train_samples)
        train_feats = [f[:n_train] for f in features]
        val_feats = [f[n_train:] for f in features] if val_samples else None
        augment = train_config.augment == "auto" and n_train <= AUGMENT_MAX_IMAGES
        flips: list[FlipDecision] = []
        if augment or self.config.pooling == "auto":
            # Flip evidence from (at most FLIP_TEST_IMAGES of) the training images: it decides
            # the image score of "auto" pooling and which flips may augment few images.
            probe = list(train_samples) if augment else list(train_samples)[:FLIP_TEST_IMAGES]
            probe_loader = self.loader(probe, train_config.batch_size, num_workers)
            flipped = {
                name: extract_features(
                    self.model,
                    probe_loader,
                    self.device,
                    cancel=cancel,
                    transform=partial(apply_flip, name=name),
                )
                for name in FLIPS
            }
            coarsest = min(range(len(train_feats)), key=lambda i: train_feats[i][0, 0].numel())
            flips = choose_flips(
                train_feats[coarsest][: len(probe)], {k: v[coarsest] for k, v in flipped.items()}
            )
            if self.config.pooling == "auto":
                pooling = auto_pooling(flips)
                self.model.config = replace(self.config, pooling=pooling)
                logger.info(
                    "image score: %s (%s)",
                    pooling,
                    "aligned" if pooling in MAP_POOLINGS else "flip-invariant images",
                )
            used = used_flips(flips) if augment else []
            if used:
                logger.info("augmenting %d training images with %s", n_train, ", ".join(used))
                train_feats = [
                    torch.cat([f, *(flipped[k][i] for k in used)]) for i, f in enumerate(train_feats)
                ]
        if self.config.coarsest_map_weight is None:
            weight = auto_coarsest_weight(self.config.pooling)
            self.model.config = replace(self.config, coarsest_map_weight=weight)
            logger.info("anomaly map: the coarsest scale at weight %g", weight)
        feature_seconds = time.perf_counter() - start
        history = fit_flows(
            self.model,
            train_feats,
            val_feats,
            train_config,
            callback=callback,
            cancel=cancel,
            n_images=n_train,
        )
        history.feature_seconds = feature_seconds
        history.flips = [d.to_dict() for d in flips]
        self.history = history
        self.record = TrainingRecord(
            data=DataReference.of_category(data.name),
            n_train=n_train,
            n_val=len(val_samples),
            train_config=train_config.to_dict(),
            timings=Timings.from_history(history),
        )
        self.calibrate_from_features(val_feats if val_feats is not None else train_feats)
        return history

    def fit_exposure(self, samples: Sequence[Sample]) -> Exposure:
        """Decides from (at most :data:`EXPOSURE_IMAGES` of) the good ``samples`` whether, and to
        what, images are standardised in exposure (:mod:`cainnflow.photometric`), and sets it."""
        probe = self.preprocess([s.path for s in samples[:EXPOSURE_IMAGES]])
        exposure = measure_exposure(probe, self.backbone.mean, self.backbone.std, self.config.photometric)
        self.model.set_photometric(exposure.mode, exposure.target if exposure.mode != "none" else None)
        logger.info(
            "exposure: %s (spread %.1f %%, grey level %.3f ± %.3f)",
            exposure.mode,
            100 * exposure.spread,
            *exposure.target,
        )
        return exposure

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
        self.set_threshold(
            percentile_threshold(all_scores, DEFAULT_THRESHOLD_PERCENTILE), "validation_quantile"
        )

    # ------------------------------------------------------------------ scoring
    def _score_features(self, features: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
        return self.model.score(self.model(features).z)

    @torch.no_grad()
    def score_batch(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """Normalised images (N, 3, S, S) → anomaly maps (N, S, S) and scores (N,).

        On CUDA the frozen backbone runs under bf16 autocast; the flows stay in float32.
        """
        dtype = autocast_dtype(self.device)
        with torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None):
            features = self.model.extract_features(images.to(self.device))
        return self._score_features(features)

    def _score_numpy(self, images: Tensor) -> tuple[np.ndarray, np.ndarray]:
        maps, scores = self.score_batch(images)
        return maps.cpu().numpy(), scores.cpu().numpy()

    def predict(
        self, images: Sequence[ImageSource], batch_size: int = 8, *, threshold: float | None = None
    ) -> Prediction:
        """Scores images given as PIL images, paths or bytes.

        Args:
            threshold: overrides :attr:`threshold` for this call.

        Raises:
            DataError: an image cannot be read (its name is in the message).
        """
        limit = self.threshold if threshold is None else threshold
        return predict_batches(
            images, self.preprocess, self._score_numpy, batch_size=batch_size, threshold=limit
        )

    def _test_batches(self, loader: DataLoader) -> Iterator[TestBatch]:
        """The loader's batches as :data:`cainnflow.evaluation.TestBatch`, images on the device."""
        for batch in loader:  # DatasetItem fields, batched
            images, masks, has_mask = batch.image.to(self.device), batch.mask, batch.has_mask
            if self.device.type == "cuda":
                torch.cuda.synchronize()  # the copy is not timed as scoring
            yield images, masks[:, 0].numpy() > 0.5, has_mask.numpy().astype(bool)

    def evaluate(
        self,
        data: CategoryData,
        *,
        batch_size: int = 8,
        num_workers: int = 0,
        callback: Callable[[int, int], None] | None = None,
        cancel: Event | None = None,
    ) -> EvaluationResult:
        """Scores the test split; see :func:`cainnflow.evaluation.evaluate`."""
        loader = self.loader(data.test, batch_size, num_workers)
        return evaluate(
            data,
            self._score_numpy,
            self._test_batches(loader),
            n_batches=len(loader),
            threshold=self.threshold,
            callback=callback,
            cancel=cancel,
        )

    # ------------------------------------------------------------------ persistence
    @property
    def parts(self) -> DetectorParts:
        """What a checkpoint holds: the model, statistics, threshold, history and record."""
        return DetectorParts(self.model, self.stats, self.threshold, self.history, self.record)

    def save(self, path: str | Path) -> Path:
        """Writes the detector to a ``.safetensors`` checkpoint (atomically); see :mod:`cainnflow.checkpoint`."""
        return save_detector(self.parts, path)

    def to_bytes(self) -> bytes:
        """The checkpoint as bytes (for downloads)."""
        return detector_to_bytes(self.parts)

    @classmethod
    def load(
        cls,
        source: str | Path | bytes | BinaryIO,
        *,
        device: str | torch.device = "auto",
        weights: str | Path | None = None,
    ) -> Detector:
        """Loads a checkpoint written by :meth:`save`; nothing is unpickled.

        Arguments and errors as :func:`cainnflow.checkpoint.load_detector_parts`: a path, bytes
        or an upload; a :class:`CheckpointError` line when the file is not a usable checkpoint.
        """
        parts = load_detector_parts(source, device=device, weights=weights)
        return cls(
            parts.model,
            stats=parts.stats,
            threshold=parts.threshold,
            history=parts.history,
            record=parts.record,
        )
