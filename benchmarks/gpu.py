"""GPU benchmark: training s/epoch and inference images/s at batch sizes 1 and 32 on CUDA,
and a check that the GPU path scores like the CPU path.

    python benchmarks/gpu.py --root ../shared/data/mvtec_ad --category bottle
    python benchmarks/gpu.py --demo            # no MVTec data: the synthetic demo set

Exits with a message when no CUDA device is present. Bf16 autocast is used for the frozen
backbone only (the flows stay in float32: their exp/log-det are not safe in bf16), so GPU and
CPU scores should agree closely; the script reports the largest score difference and the
AUROC of both.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import DEFAULT_MVTEC_ROOT, fmt
from cainnflow.data import load_mvtec_category
from cainnflow.demo_data import make_demo_dataset
from cainnflow.detector import Detector
from cainnflow.device import describe_device
from cainnflow.metrics import image_auroc
from cainnflow.model import CAINNFlowConfig
from cainnflow.training import TrainConfig


def throughput(detector: Detector, batch_size: int, seconds: float = 3.0) -> float:
    """Images per second of score_batch on random inputs (backbone + flows + map)."""
    size = detector.config.image_size
    x = torch.randn(batch_size, 3, size, size, device=detector.device)
    for _ in range(5):
        detector.score_batch(x)
    torch.cuda.synchronize()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        detector.score_batch(x)
        n += batch_size
    torch.cuda.synchronize()
    return n / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", type=Path, default=DEFAULT_MVTEC_ROOT)
    p.add_argument("--category", default="bottle")
    p.add_argument("--demo", action="store_true", help="use the synthetic demo set")
    p.add_argument("--epochs", type=int, default=None, help="default: the library's step budget")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--image-size", type=int, default=256)
    args = p.parse_args()
    if not torch.cuda.is_available():
        sys.exit("no CUDA device here: run this on a machine with an NVIDIA GPU")

    if args.demo:
        root, category = make_demo_dataset(Path(tempfile.mkdtemp()) / "demo"), "carpet_weave"
    else:
        root, category = args.root, args.category
    data = load_mvtec_category(root, category)
    print(
        f"device: {describe_device('cuda')}  data: {category} ({len(data.train)} train, {len(data.test)} test)"
    )

    config = CAINNFlowConfig(image_size=args.image_size)
    torch.manual_seed(0)
    gpu = Detector.create(config, device="cuda")
    t0 = time.perf_counter()
    history = gpu.fit(data, TrainConfig(epochs=args.epochs, batch_size=args.batch_size))
    torch.cuda.synchronize()
    wall = time.perf_counter() - t0
    print(
        f"training: {wall:.1f} s wall ({history.feature_seconds:.1f} s features, "
        f"{history.train_seconds / len(history.epochs):.3f} s/epoch, {len(history.epochs)} epochs)"
    )
    print(f"peak GPU memory: {torch.cuda.max_memory_allocated() / 1024**3:.2f} GiB")
    for bs in (1, 32):
        print(f"inference batch {bs:>2}: {throughput(gpu, bs):8.1f} images/s")

    result_gpu = gpu.evaluate(data, batch_size=32)
    with tempfile.TemporaryDirectory() as tmp:
        cpu = Detector.load(gpu.save(Path(tmp) / "m.safetensors"), device="cpu")
    result_cpu = cpu.evaluate(data, batch_size=8)
    diff = np.abs(result_gpu.scores - result_cpu.scores) / np.maximum(np.abs(result_cpu.scores), 1e-6)
    print(
        f"GPU image/pixel AUROC {fmt(result_gpu.image_auroc)} / {fmt(result_gpu.pixel_auroc)}; "
        f"CPU {fmt(result_cpu.image_auroc)} / {fmt(result_cpu.pixel_auroc)}; "
        f"max relative score difference {diff.max():.2e}"
    )
    same_ranking = image_auroc(data_labels := result_cpu.labels, result_gpu.scores) == image_auroc(
        data_labels, result_cpu.scores
    )
    print("CPU and GPU agree" if diff.max() < 1e-2 and same_ranking else "WARNING: CPU and GPU scores differ")


if __name__ == "__main__":
    main()
