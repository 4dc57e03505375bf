"""Deployment speed: PyTorch eager, the PyTorch fast path, ONNX Runtime and OpenVINO side by side.

Trains (or loads) a bottle model, exports it to ONNX and OpenVINO, and prints ms/image at
batch 1 and 8 on ``--threads`` CPU threads plus each engine's bottle image AUROC, then where
ONNX Runtime spends its time (backbone / flows / anomaly map, from its profiler)::

    python benchmarks/export_speed.py --threads 2
    python benchmarks/export_speed.py --checkpoint runs/bottle.safetensors
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import DEFAULT_MVTEC_ROOT
from cainnflow.data import load_mvtec_category
from cainnflow.detector import Detector
from cainnflow.export import ScoringGraph, export_detector
from cainnflow.metrics import image_auroc
from cainnflow.model import CAINNFlowConfig
from cainnflow.runtime import load_export
from cainnflow.training import TrainConfig

BATCHES = (1, 8)


def ms_per_image(run, batch: int, size: int, repeats: int) -> float:
    x = np.random.default_rng(0).standard_normal((batch, 3, size, size)).astype(np.float32)
    for _ in range(3):
        run(x)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run(x)
        times.append(time.perf_counter() - t0)
    return 1000.0 * float(np.median(times)) / batch


def auroc_of(score_batch, exported, data) -> float:
    """Image AUROC on the test split with numpy preprocessing shared by every engine."""
    scores = []
    for start in range(0, len(data.test), 8):
        batch = exported.preprocess([s.path for s in data.test[start : start + 8]])
        scores.append(np.asarray(score_batch(batch)[1], dtype=np.float64))
    return float(image_auroc(np.array([s.label for s in data.test]), np.concatenate(scores)))


def ort_breakdown(graph: Path, size: int, threads: int, runs: int = 20) -> dict[str, float]:
    """ms per batch-1 run of ONNX Runtime per part of the graph (node-name prefixes)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.enable_profiling = True
    options.profile_file_prefix = str(graph.parent / "profile")
    session = ort.InferenceSession(graph.read_bytes(), options, providers=["CPUExecutionProvider"])
    x = np.zeros((1, 3, size, size), np.float32)
    for _ in range(runs):
        session.run(None, {"image": x})
    events = json.loads(Path(session.end_profiling()).read_text())
    parts: collections.Counter[str] = collections.Counter()
    for event in events:
        if event.get("cat") != "Node" or not event["name"].endswith("_kernel_time"):
            continue
        name = event["name"]
        part = (
            "backbone"
            if "/features/" in name
            else "flows"
            if "/model/flows" in name
            else "map, layout, other"
        )
        parts[part] += event["dur"]
    return {k: v / 1000 / runs for k, v in parts.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--root", type=Path, default=Path(os.environ.get("CAINNFLOW_MVTEC_ROOT", DEFAULT_MVTEC_ROOT))
    )
    parser.add_argument("--category", default="bottle")
    parser.add_argument("--checkpoint", type=Path, default=None, help="default: train with the defaults")
    parser.add_argument("--epochs", type=int, default=TrainConfig.epochs)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--save", type=Path, default=None, help="keep the trained checkpoint here")
    parser.add_argument("--keep", type=Path, default=None, help="keep the exports in this folder")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = load_mvtec_category(args.root, args.category)
    if args.checkpoint:
        detector = Detector.load(args.checkpoint, device="cpu")
    else:
        detector = Detector.create(CAINNFlowConfig(), device="cpu")
        detector.fit(data, TrainConfig(epochs=args.epochs))
        if args.save:
            detector.save(args.save)
    size = detector.config.image_size
    eager = ScoringGraph(detector.model, size).eval()

    def eager_run(x):
        with torch.no_grad():
            return eager(torch.from_numpy(x))

    def fast_run(x):
        return detector.score_batch(torch.from_numpy(x))

    rows = []
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = args.keep or tmp_dir
        exports = {}
        for fmt in ("onnx", "openvino"):
            t0 = time.perf_counter()
            out = export_detector(detector, Path(tmp) / fmt, format=fmt)
            exports[fmt] = load_export(out, threads=args.threads)
            print(f"export {fmt}: {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        reference = exports["onnx"]
        engines = {
            "PyTorch eager (fused BN)": eager_run,
            "PyTorch fast path (score_batch)": fast_run,
            "ONNX Runtime (FP32, opt ALL)": exports["onnx"].score_batch,
            "OpenVINO (FP32, LATENCY)": exports["openvino"].score_batch,
        }
        for name, run in engines.items():
            timings = [ms_per_image(run, b, size, args.repeats if b == 1 else 5) for b in BATCHES]
            auroc = auroc_of(lambda x, run=run: [np.asarray(v) for v in run(x)], reference, data)
            rows.append((name, *timings, auroc))
        breakdown = ort_breakdown(Path(tmp) / "onnx" / "model.onnx", size, args.threads)
    print(f"\n{args.category}, {size} px, {args.threads} threads, {torch.__version__}")
    print(f"{'engine':<34} {'b1 ms/img':>10} {'b8 ms/img':>10} {'image AUROC':>12}")
    for name, b1, b8, auroc in rows:
        print(f"{name:<34} {b1:>10.1f} {b8:>10.1f} {auroc:>12.4f}")
    print("\nONNX Runtime, batch 1, profiler (ms/run, kernel time):")
    for part, ms in sorted(breakdown.items(), key=lambda kv: -kv[1]):
        print(f"  {part:<20} {ms:.1f}")


if __name__ == "__main__":
    main()
