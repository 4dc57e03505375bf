"""Where the inference time goes: backbone, flows, anomaly map, in all (median ms per image).

    python benchmarks/latency.py                       # default model, 256 px, batch 1
    python benchmarks/latency.py --image-size 224 --batch-size 8 --steps 2
    CAINNFLOW_CPU_BF16=1 python benchmarks/latency.py  # bfloat16 backbone on an AMX CPU

Untrained flows take as long as trained ones, so no data is needed.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cainnflow.detector import Detector
from cainnflow.device import autocast_dtype
from cainnflow.model import CAINNFlowConfig
from cainnflow.scoring import anomaly_map


def median_ms(fn: Callable[[], object], repeats: int, per: int) -> float:
    for _ in range(5):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000 / per)
    times.sort()
    return times[len(times) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backbone", default=CAINNFlowConfig.backbone)
    parser.add_argument("--image-size", type=int, default=CAINNFlowConfig.image_size)
    parser.add_argument("--steps", type=int, default=CAINNFlowConfig.steps)
    parser.add_argument("--variant", default=CAINNFlowConfig.variant)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = CAINNFlowConfig(
        backbone=args.backbone, image_size=args.image_size, steps=args.steps, variant=args.variant
    )
    detector = Detector.create(config, device=args.device)
    model, dev = detector.model, detector.device
    images = torch.randn(args.batch_size, 3, args.image_size, args.image_size, device=dev)
    dtype = autocast_dtype(dev)

    def sync(fn: Callable[[], object]) -> Callable[[], object]:
        def run() -> object:
            out = fn()
            if dev.type == "cuda":
                torch.cuda.synchronize()
            return out

        return run

    def backbone() -> list[torch.Tensor]:
        with torch.autocast(dev.type, dtype=dtype, enabled=dtype is not None):
            return model.extract_features(images)

    n, per = args.repeats, args.batch_size
    with torch.inference_mode():
        features = backbone()
        z = model(features).z
        rows = {
            "backbone": median_ms(sync(backbone), n, per),
            "flows": median_ms(sync(lambda: model(features)), n, per),
            "anomaly map": median_ms(
                sync(lambda: anomaly_map(z, args.image_size, config.sigma, config.combine)), n, per
            ),
            "score_batch (all)": median_ms(sync(lambda: detector.score_batch(images)), n, per),
        }
    print(
        f"{config.backbone} {args.image_size}px {config.variant}×{config.steps} batch {args.batch_size} "
        f"on {dev} ({torch.get_num_threads()} threads, backbone dtype {dtype or torch.float32})"
    )
    for name, ms in rows.items():
        print(f"  {name:<18} {ms:7.2f} ms/image")


if __name__ == "__main__":
    main()
