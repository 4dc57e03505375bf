"""Shared helpers of the benchmark scripts: timing, peak memory, the paper's numbers."""

from __future__ import annotations

import resource
import sys
import threading
import time
from pathlib import Path

# isort: off
import cainnflow  # noqa: F401 - OpenMP settings before torch loads
import torch

# isort: on

# CAINNFlow (3×3, WideResNet-50), paper Table 1: (image AUROC, pixel AUROC) in %.
PAPER_TABLE1: dict[str, tuple[float, float]] = {
    "carpet": (100.00, 99.40),
    "grid": (100.00, 98.88),
    "leather": (100.00, 99.68),
    "tile": (100.00, 97.54),
    "wood": (99.78, 95.51),
    "bottle": (100.00, 98.49),
    "cable": (100.00, 98.71),
    "capsule": (99.96, 98.94),
    "hazelnut": (100.00, 99.29),
    "metal_nut": (100.00, 99.11),
    "pill": (98.81, 98.51),
    "screw": (98.72, 99.68),
    "toothbrush": (97.23, 99.55),
    "transistor": (100.00, 97.58),
    "zipper": (99.60, 98.71),
}
# Paper Table 2 (ResNet18, pixel AUROC %) by subnet variant, and Table 3 by steps (CAC).
PAPER_TABLE2_BOTTLE = {"CAC": 98.38, "CA": 98.03, "AC": 98.07, "CC": 98.06}
PAPER_TABLE3_BOTTLE = {1: 98.28, 2: 98.38, 3: 98.01, 4: 97.99, 5: 97.88}

DEFAULT_SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
DEFAULT_MVTEC_ROOT = DEFAULT_SHARED_DATA / "mvtec_ad"


def peak_rss_gib() -> float:
    """Peak resident memory of this process so far, GiB (Linux ru_maxrss is KiB)."""
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kib / (1024**2) if sys.platform != "darwin" else kib / 1024**3


class PeakMemory:
    """Samples RSS in a thread to get the peak within a block (ru_maxrss is process-wide)."""

    def __init__(self, interval: float = 0.05) -> None:
        self.interval = interval
        self.peak = 0.0
        self._stop = threading.Event()

    @staticmethod
    def _rss_gib() -> float:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        return pages * resource.getpagesize() / 1024**3

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss_gib())
            time.sleep(self.interval)

    def __enter__(self) -> PeakMemory:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss_gib())


def latency_ms(detector, image_size: int, batch_size: int = 1, repeats: int = 20) -> float:
    """Median wall time per image (ms) of detector.score_batch on random inputs."""
    x = torch.randn(batch_size, 3, image_size, image_size, device=detector.device)
    for _ in range(3):
        detector.score_batch(x)
    times = []
    for _ in range(repeats):
        if detector.device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        detector.score_batch(x)
        if detector.device.type == "cuda":
            torch.cuda.synchronize()
        times.append((time.perf_counter() - t0) * 1000 / batch_size)
    times.sort()
    return times[len(times) // 2]


def fmt(value: float | None, scale: float = 100.0, digits: int = 2) -> str:
    return "—" if value is None else f"{value * scale:.{digits}f}"
