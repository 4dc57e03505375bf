"""Retraining with the images an operator marked good: a normal background training job
(:class:`app.jobs.TrainingJob`) on the training images plus the marked ones, whose model
records the feedback it was given (scores re-taken with the new model).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cainnflow.data import GOOD_LABEL, GOOD_TYPE, CategoryData, Sample
from cainnflow.errors import CainnflowError
from cainnflow.feedback import FeedbackSet

from .jobs import TrainingJob

if TYPE_CHECKING:
    from cainnflow.detector import Detector
    from cainnflow.training import TrainConfig

__all__ = ["RetrainJob", "kept_images", "recorded_train_config", "rescored", "with_marked_good"]

MAX_RETRAIN_EPOCHS = 500  # the Train page's limit
MAX_RETRAIN_STEPS = 20_000
MAX_RETRAIN_BATCH = 256


def with_marked_good(data: CategoryData, images: list[Path]) -> CategoryData:
    """``data`` with the marked good images added to its training images (test split unchanged)."""
    known = {sample.path for sample in data.train}
    extra = tuple(Sample(path, GOOD_LABEL, GOOD_TYPE) for path in images if path not in known)
    return dataclasses.replace(data, train=(*data.train, *extra))


def recorded_train_config(recorded: Mapping[str, Any] | None) -> TrainConfig:
    """The optimisation settings a model recorded (``record.train_config``), when sane; else defaults."""
    from cainnflow.training import TrainConfig

    if recorded is None:
        return TrainConfig()
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    values: dict[str, Any] = {k: v for k, v in recorded.items() if k in names}
    # Records written before the setting existed trained every scale on the whole batch.
    values.setdefault("positions_per_step", None)
    limits = {"epochs": MAX_RETRAIN_EPOCHS, "max_steps": MAX_RETRAIN_STEPS, "batch_size": MAX_RETRAIN_BATCH}
    for name, limit in limits.items():
        value = values.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value > limit):
            return TrainConfig()
    try:
        return TrainConfig(**values)
    except (TypeError, ValueError):
        return TrainConfig()


@dataclass
class RetrainJob(TrainingJob):
    """A training job on data with marked good images added; the model it saves carries the
    feedback, re-scored by itself, in its record (its own threshold is left as trained: the
    Inspect page offers the recalibration, with the validation normals).

    Args:
        feedback: the feedback given to the model it replaces.
        images: content hash → kept image of every marked image that is still there.
    """

    feedback: FeedbackSet = field(default_factory=FeedbackSet)
    images: Mapping[str, Path] = field(default_factory=dict)

    def _save(self, detector: Detector) -> None:
        try:
            feedback = rescored(detector, self.feedback, self.images).to_dict()
        except (CainnflowError, OSError, ValueError):
            feedback = None
        detector.record = dataclasses.replace(detector.record, feedback=feedback)
        super()._save(detector)


def rescored(detector: Detector, feedback: FeedbackSet, images: Mapping[str, Path]) -> FeedbackSet:
    """``feedback`` with each item's score taken again by ``detector`` (items without an image
    dropped) and the detector's own threshold as the base."""
    items = [item for item in feedback.items if item.sha256 in images]
    scores = detector.predict([images[item.sha256] for item in items]).scores if items else []
    return FeedbackSet(
        tuple(dataclasses.replace(item, score=float(s)) for item, s in zip(items, scores, strict=True)),
        detector.threshold,
    )


def kept_images(
    feedback: FeedbackSet, find: Callable[[str], Path | None], label: str | None = None
) -> dict[str, Path]:
    """Content hash → kept file of the marked items (only those marked ``label`` when given);
    ``find(sha256)`` gives the file or None."""
    items = feedback.items if label is None else feedback.with_label(label)
    return {item.sha256: path for item in items if (path := find(item.sha256)) is not None}
