"""One trial of a sweep, trained and evaluated in this process: a :class:`TrialOutcome` or an error."""

from __future__ import annotations

import socket
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from ..data import load_mvtec_category
from ..detector import Detector
from .grid import Trial
from .results import TrialResult

__all__ = ["TrialFailure", "TrialOutcome", "failure", "run_trial"]


@dataclass(frozen=True)
class TrialOutcome:
    """What a trial sends back to the process that records it.

    Attributes:
        result: its row of ``results.csv``; ``checkpoint`` and ``finished_at`` are left empty
            for the recorder, which writes the checkpoint.
        checkpoint: the trained detector's checkpoint (``.safetensors`` bytes).
    """

    result: TrialResult
    checkpoint: bytes


@dataclass(frozen=True)
class TrialFailure:
    """A trial that raised: which one, and the error in one line (``"DataError: …"``)."""

    trial: Trial
    error: str


def failure(trial: Trial, exc: BaseException) -> TrialFailure:
    """The record of ``trial`` failing with ``exc`` (the last line of a multi-line message)."""
    text = str(exc).strip()
    last = text.splitlines()[-1] if text else ""
    return TrialFailure(trial, f"{type(exc).__name__}: {last}" if last else type(exc).__name__)


def run_trial(
    trial: Trial, data_root: str | Path, *, device: str = "auto", threads: int | None = None
) -> TrialOutcome:
    """Trains and evaluates one trial in this process.

    Args:
        trial: the settings.
        data_root: MVTec-layout root holding ``trial.category``.
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"mps"``.
        threads: torch CPU threads (None: leave as is).

    Raises:
        CainnflowError: bad data, unavailable weights, or training that cannot go on.
    """
    if threads is not None:
        torch.set_num_threads(max(1, int(threads)))
    data = load_mvtec_category(data_root, trial.category)
    detector = Detector.create(trial.model_config(), weights=trial.weights, device=device)
    history = detector.fit(data, trial.train_config())
    detector.record = replace(detector.record, sweep_key=trial.key)
    image = pixel = pro = ms = None
    if data.has_test:
        result = detector.evaluate(data)
        image, pixel, pro, ms = result.image_auroc, result.pixel_auroc, result.aupro, result.ms_per_image
    return TrialOutcome(
        result=TrialResult(
            trial=trial,
            image_auroc=image,
            pixel_auroc=pixel,
            aupro=pro,
            train_s=history.feature_seconds + history.train_seconds,
            ms_per_image=ms,
            device=str(detector.device),
            host=socket.gethostname(),
            checkpoint="",
            data_root=str(data_root),
        ),
        checkpoint=detector.to_bytes(),
    )
