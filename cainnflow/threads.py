"""CPU threads for training and scoring that share a machine fairly.

Two things make PyTorch jobs collapse when they share a few cores:

* **Spinning OpenMP workers.** By default an OpenMP worker that finishes its part of a
  parallel region spins for a while before it sleeps. With two PyTorch processes on two
  cores, each process's spinning workers take the cores the other one needs, and a training
  step measured at 0.25 s alone took 6–9 s. ``OMP_WAIT_POLICY=PASSIVE`` makes waiting workers
  sleep at once (``KMP_BLOCKTIME=0`` is the same for Intel's OpenMP). OpenMP reads it once,
  when PyTorch's libraries load, so :func:`configure_openmp` runs when ``cainnflow`` is
  imported and must come before ``import torch``; a user's own setting always wins.
* **More threads than cores.** Jobs that run at once (two trainings in the app, a sweep's
  trials) each take :func:`fair_threads` — the cores divided by the jobs — set in the job's
  own thread by :func:`use_threads` (PyTorch's OpenMP thread count is per calling thread).

Thread counts change floating-point summation order, not what is computed: training with
one or two threads gives the same model to float32 rounding (benchmarks/README.md).
"""

from __future__ import annotations

import os
import sys

__all__ = ["OPENMP_DEFAULTS", "available_cores", "configure_openmp", "fair_threads", "use_threads"]

OPENMP_DEFAULTS: dict[str, str] = {"OMP_WAIT_POLICY": "PASSIVE", "KMP_BLOCKTIME": "0"}
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
