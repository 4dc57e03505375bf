"""Ray for sweeps and remote training: connecting, checking resources, running trials as tasks.

Ray is an optional extra (``pip install 'cainnflow[ray]'``) imported only when used. The
``cainnflow`` package itself is shipped to the workers with the job; every node needs this
project's dependencies (torch, timm, FrEIA, …). A task's own exception passes through
:func:`get` unchanged (the :class:`~cainnflow.errors.CainnflowError` the worker raised).
"""

from __future__ import annotations

import logging
import math
import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from ..errors import CainnflowError
from .grid import Trial
from .trial import TrialFailure, TrialOutcome, failure, run_trial

__all__ = [
    "RAY_INSTALL_HINT",
    "RayUnavailableError",
    "check_resources",
    "connect_ray",
    "disconnect_ray",
    "get",
    "import_ray",
    "run_trials_on_ray",
]

RAY_INSTALL_HINT = "pip install 'cainnflow[ray]' (or: pip install ray)"
WAIT_TIMEOUT_S = 1.0  # the sweep's driver wakes up this often while trials run


class RayUnavailableError(CainnflowError):
    """Ray is not installed, or the cluster cannot be reached or cannot run the request."""


def import_ray() -> ModuleType:
    """The ``ray`` module.

    Raises:
        RayUnavailableError: Ray is not installed (the message says how to install it).
    """
    try:
        import ray
    except ImportError as exc:
        raise RayUnavailableError(f"Ray is not installed: {RAY_INSTALL_HINT}") from exc
    return ray


_connection_lock = threading.Lock()
_connected_address: list[str | None] = []  # the address this module connected to, if it did


def _runtime_env() -> dict[str, Any]:
    """Ships this very ``cainnflow`` package to the workers (same code as the caller)."""
    return {"py_modules": [str(Path(__file__).resolve().parents[1])]}


def connect_ray(address: str | None) -> bool:
    """Connects this process to Ray: a new local instance (``address=None``) or a cluster.

    A connection made elsewhere in the process is reused, and so is this module's own when
    ``address`` names it (the same string, ``"auto"`` or its GCS address). A connection this
    module made to another address is closed first.

    Returns:
        True when this call connected (the caller may :func:`disconnect_ray` when done).

    Raises:
        RayUnavailableError: Ray is missing or the cluster cannot be reached.
    """
    ray = import_ray()
    with _connection_lock:
        if ray.is_initialized():
            if not _connected_address or address in (_connected_address[0], "auto", _gcs_address(ray)):
                return False
            ray.shutdown()
            _connected_address.clear()
        try:
            if address is None:
                ray.init(
                    num_cpus=os.cpu_count() or 1,
                    include_dashboard=False,
                    runtime_env=_runtime_env(),
                    logging_level=logging.WARNING,
                )
            else:
                ray.init(address=address, runtime_env=_runtime_env(), logging_level=logging.WARNING)
        except (ConnectionError, RuntimeError, ValueError, TimeoutError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            where = "start a local Ray" if address is None else f"reach the Ray cluster at {address}"
            raise RayUnavailableError(f"could not {where}: {first}") from exc
        _connected_address[:] = [address]
        return True


def _gcs_address(ray: ModuleType) -> str | None:
    try:
        return ray.get_runtime_context().gcs_address
    except Exception:  # a Ray Client connection has no GCS address of its own
        return None


def disconnect_ray() -> None:
    """Closes the connection :func:`connect_ray` made (a local instance stops with it)."""
    ray = import_ray()
    with _connection_lock:
        if _connected_address and ray.is_initialized():
            ray.shutdown()
        _connected_address.clear()


def check_resources(ray: ModuleType, cpus: float, gpus: float) -> None:
    """Refuses a request the cluster could never schedule (it would wait forever).

    Raises:
        RayUnavailableError: more GPUs or CPUs per task than the whole cluster has.
    """
    available = ray.cluster_resources()
    if gpus > available.get("GPU", 0.0):
        raise RayUnavailableError(
            f"the Ray cluster has {available.get('GPU', 0.0):g} GPUs; a trial asking for {gpus:g} "
            "could never start (lower --gpus-per-trial, or join a cluster with GPUs via --address)"
        )
    if cpus > available.get("CPU", 0.0):
        raise RayUnavailableError(
            f"the Ray cluster has {available.get('CPU', 0.0):g} CPUs; a trial asking for {cpus:g} "
            "could never start (lower --cpus-per-trial)"
        )


def get(ray: ModuleType, ref: Any) -> Any:
    """``ray.get(ref)``; a task that raised a :class:`CainnflowError` raises that very error here.

    Ray wraps a task's exception in a ``RayTaskError`` that is also an instance of the
    exception's class; its message is the worker's traceback. The user's own exception (its
    one-line message) is the ``cause``; other failures (a worker crash) pass through as Ray
    raised them.
    """
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as exc:
        if isinstance(exc.cause, CainnflowError):
            raise exc.cause from None
        raise


def run_trials_on_ray(
    pending: Sequence[Trial],
    data_root: str,
    address: str | None,
    cpus: float,
    gpus: float,
    device: str,
    finish: Callable[[Trial, TrialOutcome | TrialFailure], None],
) -> None:
    """Runs every trial as a Ray task; ``finish`` gets each outcome (or failure) as it comes."""
    ray = import_ray()
    started = connect_ray(address)
    refs: dict[Any, Trial] = {}
    try:
        check_resources(ray, cpus, gpus)
        task = ray.remote(run_trial).options(num_cpus=cpus, num_gpus=gpus, max_retries=0)
        threads = max(1, math.floor(cpus))
        refs = {task.remote(t, data_root, device=device, threads=threads): t for t in pending}
        while refs:
            # A timeout, so Ctrl-C reaches Python within a second (a blocking wait would hold it).
            ready, _ = ray.wait(list(refs), num_returns=1, timeout=WAIT_TIMEOUT_S)
            for ref in ready:
                trial = refs.pop(ref)
                try:
                    outcome: TrialOutcome | TrialFailure = get(ray, ref)
                except Exception as exc:  # a trial's error, a worker crash: keep the sweep going
                    outcome = failure(trial, exc)
                finish(trial, outcome)
    finally:
        for ref in refs:
            ray.cancel(ref, force=True)
        if started:
            disconnect_ray()
