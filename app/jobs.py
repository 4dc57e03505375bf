"""Training that outlives a Streamlit rerun: a background thread publishing its progress.

Streamlit's API is only safe from the script thread, so the job never touches it: it runs
the library's :meth:`Detector.fit` in a thread and stores progress in a lock-protected
object that pages poll. Each browser session keeps its own job in its session state, so two
sessions train independently.

Jobs are also registered per session token (process-wide), which gives three guarantees on
a shared server: a reload (a new Streamlit session with the same token) finds its job again;
a job whose sessions have all ended is cancelled by its watchdog (Streamlit has no
session-end hook; the supported check is ``Runtime.instance().is_active_session(id)``, safe
from any thread); and no more than ``hosting.max_jobs()`` jobs run at once.
"""

from __future__ import annotations

import contextlib
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from streamlit.runtime import Runtime
from streamlit.runtime.scriptrunner import get_script_run_ctx

from cainnflow.data import CategoryData
from cainnflow.errors import CainnflowError, TrainingCancelled
from cainnflow.record import AutoReport, DataReference

from . import hosting
from .loaders import unique_checkpoint_path

if TYPE_CHECKING:  # PyTorch: imported where a job runs, so the app's first page renders without it
    from cainnflow.detector import Detector
    from cainnflow.model import CAINNFlowConfig
    from cainnflow.training import TrainConfig, TrainProgress

__all__ = [
    "JobLimitReached",
    "JobSnapshot",
    "TrainingJob",
    "attach_session",
    "batch_slot",
    "forget",
    "job_for",
    "running_jobs",
    "session_alive",
    "start_job",
]

WATCH_SECONDS = 1.0
SESSION_GRACE_S = 15.0
"""A job keeps running this long after its last browser session ended (a reload reconnects)."""
CLOSED_SESSION_MESSAGE = "Training stopped: its browser session ended."

_registry_lock = threading.Lock()
_jobs: dict[str, TrainingJob] = {}  # session token -> its latest job
_sessions: dict[str, set[str]] = {}  # session token -> Streamlit session ids that used it
_batches = 0  # batch scorings running (they take a job slot too)


class JobLimitReached(CainnflowError):
    """The server already runs as many training jobs as it allows."""


def session_alive(session_id: str) -> bool:
    """Whether a Streamlit session is still connected (True when there is no runtime, e.g. AppTest)."""
    if not Runtime.exists():
        return True
    return Runtime.instance().is_active_session(session_id)


def attach_session(token: str) -> None:
    """Records that the running script's Streamlit session uses ``token`` (called on every run)."""
    ctx = get_script_run_ctx()
    if ctx is None:
        return
    with _registry_lock:
        _sessions.setdefault(token, set()).add(ctx.session_id)


def _token_alive(token: str) -> bool:
    with _registry_lock:
        ids = set(_sessions.get(token, ()))
    if not ids:
        return True  # started outside a session (tests, scripts)
    alive = {i for i in ids if session_alive(i)}
    with _registry_lock:
        _sessions[token] = alive | (_sessions.get(token, set()) - ids)
    return bool(alive)


def job_for(token: str) -> TrainingJob | None:
    """This token's latest job (running or finished and not yet taken)."""
    with _registry_lock:
        return _jobs.get(token)


def running_jobs() -> int:
    """Training jobs and batch scorings running on this server now."""
    with _registry_lock:
        return _running()


def _running() -> int:
    """Training jobs and batch scorings running now (the caller holds ``_registry_lock``)."""
    return sum(job.snapshot().running for job in _jobs.values()) + _batches


def _refuse_when_full(busy: str) -> None:
    """Raises :class:`JobLimitReached` at ``hosting.max_jobs()`` jobs (the caller holds the lock).

    ``busy``: what the server is doing, ``{}`` standing for the count ("training {} model(s)").
    """
    running = _running()
    if running >= hosting.max_jobs():
        raise JobLimitReached(
            f"the server is already {busy.format(running)}, its limit; try again in a few minutes"
        )


def forget(token: str) -> None:
    """Drops a session's finished job and its Streamlit session ids (the session expired)."""
    with _registry_lock:
        job = _jobs.get(token)
        if job is not None and not job.snapshot().running:
            del _jobs[token]
        _sessions.pop(token, None)


@contextlib.contextmanager
def batch_slot():
    """Holds one of the server's job slots while a batch is scored.

    Raises:
        JobLimitReached: ``hosting.max_jobs()`` jobs (trainings and batches) are running.
    """
    global _batches
    with _registry_lock:
        _refuse_when_full("running {} job(s)")
        _batches += 1
    try:
        yield
    finally:
        with _registry_lock:
            _batches -= 1


def start_job(token: str, job: TrainingJob) -> TrainingJob:
    """Starts ``job`` for a session, unless the server already runs as many as it allows.

    Raises:
        JobLimitReached: ``hosting.max_jobs()`` jobs are running.
    """
    with _registry_lock:
        _refuse_when_full("training {} model(s)")
        job.token = token
        _jobs[token] = job
    return job.start()


@dataclass(frozen=True)
class JobSnapshot:
    """A consistent copy of a job's state for one page render."""

    state: str  # "running", "done", "cancelled", "failed"
    progress: TrainProgress | None
    loss_points: list[tuple[int, float, float | None]]  # (step, train loss, validation loss)
    error: str | None
    started: float
    finished: float | None
    label: str
    note: str | None = None

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
        dataset: the data's reference (:class:`cainnflow.record.DataReference`), recorded in
            the detector's ``record.data``.
        save_dir: where the finished model is saved under a unique name (None: not saved).
        alive: says whether anyone still waits for the job; checked every second, the job
            is cancelled after ``grace_s`` seconds of False. Default: a session of its token
            is connected.
        address: a Ray cluster to train on (:func:`cainnflow.sweep.train_remote`: progress
            streams back, the checkpoint becomes the detector); None trains in this process.
        auto: choose stages and smoothing first (:func:`cainnflow.autoconfig.auto_configure`);
            its phases show as the snapshot's ``note``.
    """

    data: CategoryData
    config: CAINNFlowConfig
    train_config: TrainConfig
    weights: str | Path = "auto"
    device: str = "auto"
    label: str = ""
    dataset: DataReference | None = None
    save_dir: Path | None = None
    alive: Callable[[], bool] | None = None
    grace_s: float = SESSION_GRACE_S
    token: str = ""
    address: str | None = None
    auto: bool = False
    detector: Detector | None = None  # until a session takes it (then the job no longer holds it)
    saved_path: Path | None = None
    auto_report: AutoReport | None = None  # what "choose settings for me" tried (kept once taken)
    _state: str = "running"
    _progress: TrainProgress | None = None
    _loss_points: list[tuple[int, float, float | None]] = field(default_factory=list)
    _error: str | None = None
    _note: str | None = None
    _started: float = field(default_factory=time.time)
    _finished: float | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _cancel: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _taken: bool = False
    _closed: bool = False

    def start(self) -> TrainingJob:
        self._thread = threading.Thread(target=self._run, name="cainnflow-train", daemon=True)
        self._thread.start()
        threading.Thread(target=self._watch, name="cainnflow-train-watchdog", daemon=True).start()
        return self

    def _is_wanted(self) -> bool:
        if self.alive is not None:
            return self.alive()
        return _token_alive(self.token) if self.token else True

    def _watch(self) -> None:
        """Cancels the job once nobody has been waiting for it for ``grace_s`` seconds."""
        gone_since: float | None = None
        while self.snapshot().running:
            time.sleep(WATCH_SECONDS)
            if self._is_wanted():
                gone_since = None
                continue
            gone_since = gone_since or time.monotonic()
            if time.monotonic() - gone_since >= self.grace_s:
                with self._lock:
                    self._closed = True
                self._cancel.set()
                return

    def cancel(self) -> None:
        self._cancel.set()

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def _on_progress(self, progress: TrainProgress | str) -> None:
        if isinstance(progress, str):  # a phase of auto-configuration
            with self._lock:
                self._note = progress
                self._progress = None
                self._loss_points = []
            return
        with self._lock:
            if (
                progress.phase == "train"
                and self._progress is not None
                and self._progress.phase == "train"
                and progress.epoch != self._progress.epoch
            ):
                done = (self._progress.epoch - 1) * self._progress.steps + self._progress.step
                self._loss_points.append((done, self._progress.loss, progress.val_loss))
            self._progress = progress

    def _finish(self, state: str, error: str | None = None) -> None:
        with self._lock:
            self._state = state
            self._error = error
            self._finished = time.time()

    def _train_remote(self) -> Detector:
        from cainnflow.detector import Detector
        from cainnflow.sweep import train_remote

        payload = train_remote(
            self.data,
            self.config,
            self.train_config,
            address=self.address,
            weights=self.weights,
            callback=self._on_progress,
            cancel=self._cancel,
        )
        local_weights = None if str(self.weights) in ("auto", "random") else self.weights
        return Detector.load(payload, device=self.device, weights=local_weights)

    def _run(self) -> None:
        try:
            if self.address:
                detector = self._train_remote()
                history = detector.history
            elif self.auto:
                from cainnflow.autoconfig import auto_configure

                detector, _ = auto_configure(
                    self.data,
                    self.config,
                    self.train_config,
                    weights=str(self.weights),
                    device=self.device,
                    callback=self._on_progress,
                    cancel=self._cancel,
                )
                history = detector.history
            else:
                from cainnflow.detector import Detector

                detector = Detector.create(self.config, weights=self.weights, device=self.device)
                history = detector.fit(
                    self.data, self.train_config, callback=self._on_progress, cancel=self._cancel
                )
            with self._lock:
                self._loss_points = [
                    (step, e.train_loss, e.val_loss)
                    for step, e in zip(history.round_steps(), history.epochs, strict=True)
                ]
            if self.dataset is not None:
                detector.record = replace(detector.record, data=self.dataset)
            self.auto_report = detector.record.auto
            self.detector = detector
            if not history.cancelled and self.save_dir is not None:
                self._save(detector)
            self._finish("cancelled" if history.cancelled else "done", self._closed_message())
        except TrainingCancelled:
            self._finish(
                "cancelled",
                self._closed_message()
                or "Training was cancelled before the first epoch finished; no model was kept.",
            )
        except CainnflowError as exc:
            self._finish("failed", str(exc))
        except Exception as exc:  # a bug: keep the UI alive, show the one-line cause
            traceback.print_exc()
            self._finish("failed", f"{type(exc).__name__}: {exc}")

    def _closed_message(self) -> str | None:
        with self._lock:
            return CLOSED_SESSION_MESSAGE if self._closed else None

    def _save(self, detector: Detector) -> None:
        category = detector.record.category or "model"
        try:
            path = unique_checkpoint_path(self.save_dir, f"cainnflow_{category}_{self.config.variant}")
            detector.save(path)
            hosting.keep_within_quota(self.save_dir, path)
        except (CainnflowError, OSError):
            return
        self.saved_path = path

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
            detector, self.detector = self.detector, None  # the session holds it now, not the server
            return detector

    @property
    def taken(self) -> bool:
        with self._lock:
            return self._taken

    def snapshot(self) -> JobSnapshot:
        with self._lock:
            return JobSnapshot(
                state=self._state,
                progress=self._progress,
                loss_points=list(self._loss_points),
                error=self._error,
                started=self._started,
                finished=self._finished,
                label=self.label,
                note=self._note,
            )
