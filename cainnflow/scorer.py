"""What every engine that scores images shares: one prediction type, one batch loop, one protocol.

An engine differs from another only in how it turns a preprocessed batch into maps and
scores (a :data:`cainnflow.evaluation.ScoreFn`): the PyTorch :class:`cainnflow.detector.Detector` runs the model,
:class:`cainnflow.runtime.ExportedDetector` runs ONNX Runtime or OpenVINO. Preprocessing
(:func:`cainnflow.data.preprocess_image`), this module's :func:`predict_batches` and the test
loop (:func:`cainnflow.evaluation.evaluate`) are the same code for both::

    scorer: Scorer = load_export("deploy/bottle")     # or Detector.load("bottle.safetensors")
    prediction = scorer.predict(["part.png"])          # Prediction: maps (N, S, S), scores (N,)
    result = scorer.evaluate(load_mvtec_category(root, "bottle"))

Numpy only: the torch-free runtime and the app's first page import it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from .errors import DataError

if TYPE_CHECKING:
    from .config import CAINNFlowConfig
    from .data import CategoryData, ImageSource
    from .evaluation import EvaluationResult, ScoreFn
    from .stats import ScoreStats

__all__ = ["Prediction", "Scorer", "predict_batches"]


@dataclass(frozen=True)
class Prediction:
    """Scores of a batch of images (every engine returns this).

    Attributes:
        maps: anomaly maps (N, S, S) at the model's input size.
        scores: image scores (N,).
        is_anomalous: ``scores >= threshold`` (N,).
        threshold: the decision threshold used (``inf`` when the model has none).
    """

    maps: np.ndarray
    scores: np.ndarray
    is_anomalous: np.ndarray
    threshold: float


@runtime_checkable
class Scorer(Protocol):
    """What scores images, whichever engine runs it.

    Attributes:
        threshold: decision threshold on image scores (None: not calibrated); free to change.
        config: the model configuration (the same type for both engines).
        stats: score statistics of validation normals (None: not calibrated).
        image_size: input side ``S`` of the maps.
    """

    threshold: float | None

    @property
    def config(self) -> CAINNFlowConfig: ...

    @property
    def stats(self) -> ScoreStats | None: ...

    @property
    def image_size(self) -> int: ...

    def predict(
        self, images: Sequence[ImageSource], batch_size: int = 8, *, threshold: float | None = None
    ) -> Prediction: ...

    def evaluate(
        self,
        data: CategoryData,
        *,
        batch_size: int = 8,
        callback: Callable[[int, int], None] | None = None,
    ) -> EvaluationResult: ...


def predict_batches(
    images: Sequence[ImageSource],
    preprocess: Callable[[Sequence[ImageSource]], Any],
    score: ScoreFn,
    *,
    batch_size: int,
    threshold: float | None,
) -> Prediction:
    """Scores ``images`` ``batch_size`` at a time: ``score(preprocess(chunk))`` per chunk.

    Args:
        threshold: the decision threshold (None: ``inf``, nothing is called anomalous).

    Raises:
        DataError: no images, or one cannot be read (its name is in the message).
    """
    limit = float("inf") if threshold is None else float(threshold)
    maps, scores = [], []
    for start in range(0, len(images), batch_size):
        m, s = score(preprocess(images[start : start + batch_size]))
        maps.append(m)
        scores.append(s)
    if not maps:
        raise DataError("no images given")
    score_arr = np.concatenate(scores)
    return Prediction(np.concatenate(maps), score_arr, score_arr >= limit, limit)
