"""CPU threads for training and scoring that share a machine fairly.

Two things make PyTorch jobs collapse when they share a few cores:

* **Spinning OpenMP workers.** An OpenMP worker that finishes its part of a parallel region
  spins for a while before it sleeps. GNU OpenMP (PyTorch's wheels) bounds the spin (300 000
  iterations) unless ``OMP_WAIT_POLICY=ACTIVE`` makes it spin for ever; Intel's OpenMP spins
  for ``KMP_BLOCKTIME`` ms (200 by default), which :data:`OPENMP_DEFAULTS` sets to 0.
  ``OMP_WAIT_POLICY=PASSIVE`` (sleep at once) was the default here until it was measured
  alone on an AMD EPYC: a training step took 0.24–0.34 s against 0.16–0.17 s with GNU
  OpenMP's bounded spin, and two trainings taking turns kept 41 % of the solo speed each
  against 52 % (benchmarks/README.md) — a flow step is many short parallel regions, and a
  worker that sleeps between them must be woken for the next. OpenMP reads its settings once,
  when PyTorch's libraries load, so :func:`configure_openmp` runs when ``cainnflow`` is
  imported and must come before ``import torch``; a user's own setting always wins.
* **More threads than cores** — the bigger of the two. Two trainings of two threads each on
  two cores ran 6.4× slower per step than one alone, with or without the passive policy
  (benchmarks/README.md). So every CPU training registers itself machine-wide while it runs
  (:func:`cpu_job`: a file per job in a per-user folder of the temporary directory, stale ones
  from dead processes ignored) and, when others run beside it, **takes turns**: each
  optimizer step runs under a machine-wide lock (:meth:`CpuJob.turn`, an ``flock`` on one file
  of that folder, handed to a waiting job after each step), so at any time one training uses
  the cores with all the threads it started with.

Turns, not thread shares: a job's thread count never changes while it trains, so its
floating-point sums are the same whatever else runs, and an identical command gives an
identical model on a busy machine and an idle one. (Dividing the threads between the jobs,
the previous policy, was as fast but changed the summation order with the load: bottle-10's
AUPRO moved by 0.5 between an idle and a busy run.) Where ``fcntl`` is missing (Windows) jobs
fall back to dividing the threads.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: no flock; jobs divide the threads instead
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "OPENMP_DEFAULTS",
    "CpuJob",
    "available_cores",
    "configure_openmp",
    "cpu_job",
    "fair_threads",
    "running_cpu_jobs",
    "use_threads",
]

OPENMP_DEFAULTS: dict[str, str] = {"KMP_BLOCKTIME": "0"}
"""Environment defaults set before PyTorch loads (a value already in the environment wins)."""


def configure_openmp() -> bool:
    """Sets :data:`OPENMP_DEFAULTS` in the environment where the user has not.

    Returns:
        Whether it came in time: False when PyTorch was already imported, so its OpenMP
        runtime has read the environment already.
    """
    for name, value in OPENMP_DEFAULTS.items():
        os.environ.setdefault(name, value)
    return "torch" not in sys.modules


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def fair_threads(jobs: int, cores: int | None = None) -> int:
    """Threads for each of ``jobs`` CPU jobs sharing ``cores`` (default: this machine's)."""
    cores = available_cores() if cores is None else max(1, int(cores))
    return max(1, cores // max(1, int(jobs)))


def use_threads(threads: int) -> int:
    """Sets PyTorch's intra-op threads for the calling thread (and new ones); returns the old count.

    Call it from the thread that runs the job: OpenMP keeps the count per calling thread, so a
    training thread can take its share without changing the threads of the app's other work.
    """
    import torch

    old = torch.get_num_threads()
    if threads != old:
        torch.set_num_threads(max(1, int(threads)))
    return old


JOBS_DIR_ENV = "CAINNFLOW_JOBS_DIR"
"""Where running CPU trainings register (default: a per-user folder in the temporary directory)."""


def _jobs_dir() -> Path:
    uid = os.getuid() if hasattr(os, "getuid") else 0
    return Path(os.environ.get(JOBS_DIR_ENV) or Path(tempfile.gettempdir()) / f"cainnflow-cpu-jobs-{uid}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def running_cpu_jobs() -> int:
    """CPU trainings registered on this machine by live processes (stale entries are removed)."""
    folder = _jobs_dir()
    count = 0
    try:
        entries = list(folder.iterdir())
    except OSError:
        return 0
    for entry in entries:
        if entry.name.startswith("."):  # the turn lock
            continue
        pid = entry.name.split("-", 1)[0]
        if pid.isdigit() and _alive(int(pid)):
            count += 1
        else:
            entry.unlink(missing_ok=True)
    return count


TURN_FILE = ".turns"
HANDOFF_S = 0.02
"""After its turn, a job waits this long at most for a waiting job to take the lock."""


class CpuJob:
    """One registered CPU training: it takes turns with the trainings running beside it."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.base_threads = 1
        self.threads = 1
        self.others = 0
        self._lock_fd: int | None = None

    def rebalance(self) -> int:
        """Looks again at the trainings running; returns the threads this job uses.

        With ``fcntl`` the thread count stays the one the job started with (see :meth:`turn`);
        without it, the job takes its share of them.
        """
        if self.path is None:
            return self.threads
        running = running_cpu_jobs() or 1
        self.others = running - 1
        if fcntl is None:
            share = fair_threads(running, self.base_threads)
            if share != self.threads:
                use_threads(share)
                self.threads = share
        return self.threads

    def _open_lock(self) -> int | None:
        if self._lock_fd is None and self.path is not None and fcntl is not None:
            try:
                self._lock_fd = os.open(self.path.parent / TURN_FILE, os.O_RDWR | os.O_CREAT, 0o600)
            except OSError:
                return None
        return self._lock_fd

    @contextlib.contextmanager
    def turn(self) -> Iterator[None]:
        """Runs the block alone on the machine's cores when other trainings are running.

        The lock is handed over after the block: the job waits (at most :data:`HANDOFF_S`)
        until a waiting job has taken it, so two jobs alternate instead of one keeping it.
        """
        fd = self._open_lock() if self.others else None
        if fd is None:
            yield
            return
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
        deadline = time.monotonic() + HANDOFF_S
        while time.monotonic() < deadline:
            time.sleep(0.001)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:  # someone else has it now
                return
            fcntl.flock(fd, fcntl.LOCK_UN)

    def close(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None


class cpu_job:
    """Registers a CPU training for the duration of a ``with`` block (a no-op elsewhere).

    Args:
        device_type: ``"cpu"`` registers; any other device type does nothing.
    """

    def __init__(self, device_type: str = "cpu") -> None:
        self.device_type = device_type
        self.job = CpuJob(None)

    def __enter__(self) -> CpuJob:
        if self.device_type != "cpu":
            return self.job
        import torch

        folder = _jobs_dir()
        try:
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            path = folder / f"{os.getpid()}-{threading.get_ident()}-{uuid.uuid4().hex[:8]}"
            path.touch()
        except OSError:  # an unwritable temporary folder: train as before
            return self.job
        self.job = CpuJob(path)
        self.job.base_threads = self.job.threads = torch.get_num_threads()
        self.job.rebalance()
        return self.job

    def __exit__(self, *exc: object) -> None:
        job = self.job
        if job.path is None:
            return
        job.close()
        job.path.unlink(missing_ok=True)
        if job.threads != job.base_threads:
            use_threads(job.base_threads)
