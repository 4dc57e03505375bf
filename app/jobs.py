"""Training that outlives a Streamlit rerun: a background thread publishing its progress.

Streamlit's API is only safe from the script thread, so the job never touches it: it runs
the library's :meth:`Detector.fit` in a thread and stores progress in a lock-protected
object that pages poll. Each browser session keeps its own job in its session state, so two
sessions train independently.
"""

from __future__ import annotations

import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from cainnflow.data import CategoryData
from cainnflow.detector import Detector
from cainnflow.errors import CainnflowError, TrainingCancelled
from cainnflow.model import CAINNFlowConfig
from cainnflow.training import TrainConfig, TrainProgress

__all__ = ["JobSnapshot", "TrainingJob"]


@dataclass(frozen=True)
class JobSnapshot:
    """A consistent copy of a job's state for one page render."""

    state: str  # "running", "done", "cancelled", "failed"
    progress: TrainProgress | None
    epoch_losses: list[tuple[int, float, float | None]]
    error: str | None
    started: float
    finished: float | None
    label: str

    @property
    def running(self) -> bool:
        return self.state == "running"


@dataclass
class TrainingJob:
    """Trains a detector in a background thread.

    Args:
        data: the category to train on.
        config: model configuration.
        train_config: optimisation settings.
        weights: backbone weights ("auto", "random" or a local file).
        device: "auto", "cpu", "cuda" or "mps".
        label: a short description for the UI.
    """

    data: CategoryData
    config: CAINNFlowConfig
    train_config: TrainConfig
    weights: str | Path = "auto"
    device: str = "auto"
    label: str = ""
    detector: Detector | None = None
    _state: str = "running"
    _progress: TrainProgress | None = None
    _epoch_losses: list[tuple[int, float, float | None]] = field(default_factory=list)
    _error: str | None = None
    _started: float = field(default_factory=time.time)
    _finished: float | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _cancel: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _taken: bool = False

    def start(self) -> TrainingJob:
        self._thread = threading.Thread(target=self._run, name="cainnflow-train", daemon=True)
        self._thread.start()
        return self

    def cancel(self) -> None:
        self._cancel.set()

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def _on_progress(self, progress: TrainProgress) -> None:
        with self._lock:
            if (
                progress.phase == "train"
                and self._progress is not None
                and self._progress.phase == "train"
                and progress.epoch != self._progress.epoch
            ):
                self._epoch_losses.append((self._progress.epoch, self._progress.loss, progress.val_loss))
            self._progress = progress

    def _finish(self, state: str, error: str | None = None) -> None:
        with self._lock:
            self._state = state
            self._error = error
            self._finished = time.time()

    def _run(self) -> None:
        try:
            detector = Detector.create(self.config, weights=self.weights, device=self.device)
            history = detector.fit(
                self.data, self.train_config, callback=self._on_progress, cancel=self._cancel
            )
            with self._lock:
                self._epoch_losses = [(e.epoch, e.train_loss, e.val_loss) for e in history.epochs]
            self.detector = detector
            self._finish("cancelled" if history.cancelled else "done")
        except TrainingCancelled:
            self._finish(
                "cancelled", "Training was cancelled before the first epoch finished; no model was kept."
            )
        except CainnflowError as exc:
            self._finish("failed", str(exc))
        except Exception as exc:  # a bug: keep the UI alive, show the one-line cause
            traceback.print_exc()
            self._finish("failed", f"{type(exc).__name__}: {exc}")

    def take_detector(self, *, include_cancelled: bool = False) -> Detector | None:
        """The trained detector, handed out once (None while running, after a failure, or once taken).

        A detector of a job cancelled after its first epoch (best state kept) is only handed out
        with ``include_cancelled=True``.
        """
        with self._lock:
            states = ("done", "cancelled") if include_cancelled else ("done",)
            if self._taken or self._state not in states or self.detector is None:
                return None
            self._taken = True
            return self.detector

    @property
    def taken(self) -> bool:
        with self._lock:
            return self._taken

    def snapshot(self) -> JobSnapshot:
        with self._lock:
            return JobSnapshot(
                state=self._state,
                progress=self._progress,
                epoch_losses=list(self._epoch_losses),
                error=self._error,
                started=self._started,
                finished=self._finished,
                label=self.label,
            )
