"""One training as a Ray task (the app's "run on a Ray cluster"), its progress streamed back.

:func:`train_remote` ships the good training images with the task, so the cluster needs no
access to this machine's files; the remote trainer pushes :class:`~cainnflow.training.TrainProgress`
to a small actor (:class:`ProgressBoard`) that the caller polls, and reads a cancel request
from it. The result is a :class:`RemoteTraining` record; a failure is the trainer's own
exception, raised again here by :func:`~cainnflow.sweep.ray_backend.get`.
"""

from __future__ import annotations

import logging
import socket
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from threading import Event
from typing import Any

from ..data import GOOD_LABEL, GOOD_TYPE, CategoryData, Sample
from ..detector import Detector
from ..errors import CainnflowError, DataError, TrainingCancelled
from ..model import CAINNFlowConfig
from ..training import ProgressCallback, TrainConfig, TrainProgress
from .ray_backend import check_resources, connect_ray, get, import_ray

__all__ = ["ProgressBoard", "RemoteTraining", "train_remote"]

logger = logging.getLogger(__name__)

PROGRESS_INTERVAL_S = 0.25  # the remote trainer pushes at most this often (plus phase/epoch ends)
POLL_INTERVAL_S = 0.2  # the caller of train_remote polls the progress board this often
CANCEL_POLL_S = 0.3  # the remote trainer checks for a cancel request this often
CANCEL_GRACE_S = 15.0  # after a cancel, wait this long for the remote trainer to stop by itself


class ProgressBoard:
    """A tiny Ray actor: the remote trainer pushes progress, the caller polls and may cancel."""

    def __init__(self) -> None:
        self._items: list[dict[str, Any]] = []
        self._cancelled = False

    def push(self, item: dict[str, Any]) -> None:
        self._items.append(item)

    def take(self, start: int) -> list[dict[str, Any]]:
        return self._items[start:]

    def size(self) -> int:
        return len(self._items)

    def cancel(self) -> None:
        self._cancelled = True

    def cancelled(self) -> bool:
        return self._cancelled


@dataclass(frozen=True)
class RemoteTraining:
    """What the remote trainer returns: the checkpoint and where it was trained."""

    checkpoint: bytes
    device: str
    host: str


def _remote_training_task(
    board: Any,
    name: str,
    files: list[tuple[str, bytes]],
    config: dict[str, Any],
    train_config: dict[str, Any],
    weights: str,
    weights_file: bytes | None,
    device: str,
) -> RemoteTraining:
    """The Ray task body of :func:`train_remote`: trains on shipped images.

    Raises:
        TrainingCancelled: cancelled before the first epoch finished.
        CainnflowError: the training failed.
    """
    import ray

    cancel = Event()
    stop = Event()

    def watch() -> None:
        while not stop.wait(CANCEL_POLL_S):
            if ray.get(board.cancelled.remote()):
                cancel.set()
                return

    last = {"time": 0.0, "phase": ""}

    def push(progress: TrainProgress) -> None:
        now = time.monotonic()
        boundary = progress.phase != last["phase"] or progress.step == progress.steps
        if boundary or now - last["time"] >= PROGRESS_INTERVAL_S:
            board.push.remote(asdict(progress))
            last.update(time=now, phase=progress.phase)

    watcher = threading.Thread(target=watch, name="cainnflow-cancel-watch", daemon=True)
    watcher.start()
    try:
        with tempfile.TemporaryDirectory(prefix="cainnflow-remote-") as tmp:
            folder = Path(tmp) / "train" / GOOD_TYPE
            folder.mkdir(parents=True)
            samples = []
            for index, (suffix, payload) in enumerate(files):
                path = folder / f"{index:06d}{suffix}"
                path.write_bytes(payload)
                samples.append(Sample(path, GOOD_LABEL, GOOD_TYPE))
            data = CategoryData(name, Path(tmp), tuple(samples), ())
            if weights_file is not None:
                # the file keeps its suffix: the weights loader reads by it
                weights = str(Path(tmp) / f"backbone_weights{Path(weights).suffix}")
                Path(weights).write_bytes(weights_file)
            detector = Detector.create(CAINNFlowConfig.from_dict(config), weights=weights, device=device)
            detector.fit(data, TrainConfig(**train_config), callback=push, cancel=cancel)
            payload = detector.to_bytes()
        ray.get(board.size.remote())  # every push above is processed before the caller drains
        return RemoteTraining(checkpoint=payload, device=str(detector.device), host=socket.gethostname())
    finally:
        stop.set()


def train_remote(
    data: CategoryData,
    config: CAINNFlowConfig,
    train_config: TrainConfig | None = None,
    *,
    address: str | None,
    weights: str | Path = "auto",
    device: str = "auto",
    num_cpus: float = 1.0,
    num_gpus: float | None = None,
    callback: ProgressCallback | None = None,
    cancel: Event | None = None,
) -> bytes:
    """Trains one detector as a Ray task and returns its checkpoint bytes.

    The good training images (``data.train``) travel with the task, so the cluster needs no
    access to this machine's files. Progress reaches ``callback`` as
    :class:`~cainnflow.training.TrainProgress` (through a small actor the trainer pushes to and
    this call polls); setting ``cancel`` stops the remote training within a batch, keeping the
    best epoch so far, as :meth:`Detector.fit` does locally.

    Args:
        data: the category (:class:`~cainnflow.data.CategoryData`); only ``train`` is used.
        config: the model configuration (:class:`~cainnflow.model.CAINNFlowConfig`).
        train_config: optimisation settings (:class:`~cainnflow.training.TrainConfig`).
        address: the Ray cluster (``"auto"``, ``"HOST:6379"``, ``"ray://HOST:10001"``); None
            starts a local Ray.
        weights: backbone weights, ``"auto"``, ``"random"`` or a local file (shipped along).
        device: the device on the worker (``"auto"`` uses the GPU Ray gives the task).
        num_cpus: CPUs the task asks for.
        num_gpus: GPUs the task asks for; None asks for one when the cluster has any.
        callback: receives the remote trainer's progress.
        cancel: set to stop the training.

    Returns:
        The checkpoint (``.safetensors`` bytes), for :meth:`Detector.load`.

    Raises:
        RayUnavailableError: Ray missing, cluster unreachable, or resources it cannot offer.
        TrainingCancelled: cancelled before the first epoch finished.
        CainnflowError: the remote training failed (the trainer's own error).
    """
    ray = import_ray()
    if not data.train:
        raise DataError(f"{data.name} has no training images")
    connect_ray(address)
    gpus = num_gpus
    if gpus is None:
        gpus = 1.0 if ray.cluster_resources().get("GPU", 0.0) >= 1 else 0.0
    check_resources(ray, num_cpus, gpus)
    files = [(s.path.suffix.lower(), Path(s.path).read_bytes()) for s in data.train]
    weights_file = None
    if str(weights) not in ("auto", "random"):
        weights_path = Path(weights)
        if not weights_path.is_file():
            raise CainnflowError(f"backbone weights file {weights_path} does not exist")
        weights_file = weights_path.read_bytes()
    board = ray.remote(num_cpus=0)(ProgressBoard).remote()
    task = ray.remote(_remote_training_task).options(num_cpus=num_cpus, num_gpus=gpus, max_retries=0)
    ref = task.remote(
        board,
        data.name,
        ray.put(files),
        config.to_dict(),
        (train_config or TrainConfig()).to_dict(),
        str(weights),
        weights_file,
        device,
    )
    seen = 0
    cancel_deadline: float | None = None
    finished = False
    try:
        while not finished:
            ready, _ = ray.wait([ref], timeout=POLL_INTERVAL_S)
            finished = bool(ready)
            items = ray.get(board.take.remote(seen))
            seen += len(items)
            if callback is not None:
                for item in items:
                    callback(TrainProgress(**item))
            if finished or cancel is None or not cancel.is_set():
                continue
            if cancel_deadline is None:
                board.cancel.remote()
                cancel_deadline = time.monotonic() + CANCEL_GRACE_S
            elif time.monotonic() > cancel_deadline:
                raise TrainingCancelled("cancelled; the remote training did not stop in time and was ended")
    finally:
        if not finished:
            ray.cancel(ref, force=True)
        ray.kill(board)
    result: RemoteTraining = get(ray, ref)
    logger.info("remote training done on %s at %s", result.device, result.host)
    return result.checkpoint
