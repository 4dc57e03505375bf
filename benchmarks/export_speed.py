"""Deployment table (issue #18): engine × precision, speed, accuracy and file size per category.

For each ``--dataset CATEGORY=ROOT`` (an MVTec-layout root holding ``CATEGORY``) the model is
read from ``--checkpoints DIR/CATEGORY.safetensors`` (trained once with the defaults and saved
there when missing), exported to ONNX Runtime and OpenVINO at FP32 and INT8
(:mod:`cainnflow.quantize`: calibrated on the model's validation images, checked on synthetic
anomalies), and each engine is timed and evaluated on the test split::

    python benchmarks/export_speed.py --dataset bottle=DATA/mvtec_ad \\
        --dataset magnetic_tile=DATA/magnetic_tile --checkpoints runs/models --threads 2

Rows: PyTorch (``Detector.score_batch``, the library's own path; its metrics are the
reference), PyTorch eager (the export's traced module run in PyTorch), ONNX Runtime FP32 /
INT8, OpenVINO FP32 / INT8. Columns: ms/image at batch 1 and 8 (median of ``--repeats`` runs
after warm-up, on ``--threads`` threads; the engines take turns in blocks of 10), image AUROC, pixel AUROC and AUPRO on the test split,
the graph's size on disk. An INT8 export that its accuracy control refuses shows the refusal.
``--profile`` adds where OpenVINO spends a batch-1 run (backbone / flows / map).
Timings on a shared machine are inflated by whatever else runs: the load average is printed
with each table.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cainnflow.data import load_mvtec_category
from cainnflow.detector import Detector
from cainnflow.errors import CainnflowError
from cainnflow.export import ScoringGraph, export_detector
from cainnflow.model import CAINNFlowConfig
from cainnflow.quantize import QuantizeOptions
from cainnflow.runtime import load_export
from cainnflow.training import TrainConfig

BATCHES = (1, 8)
WARMUP = 5
BLOCK = 10


@dataclass
class Row:
    engine: str
    ms: dict[int, float | None]
    image_auroc: float | None = None
    pixel_auroc: float | None = None
    aupro: float | None = None
    megabytes: float | None = None
    note: str = ""


def interleaved_ms(runs: dict[str, Callable], batch: int, size: int, repeats: int) -> dict[str, float]:
    """Median ms/image of each run over ``repeats`` timed runs, the engines taking turns in blocks.

    Each round gives every engine one untimed run then ``BLOCK`` timed ones: turns spread
    whatever else the machine does over every engine alike (timing one engine after another
    hands a burst of load to whichever ran then), blocks and the untimed run keep one engine's
    idle threads (ONNX Runtime's spin for a while after each run) from slowing the next.
    """
    x = np.random.default_rng(0).standard_normal((batch, 3, size, size)).astype(np.float32)
    for run in runs.values():
        for _ in range(WARMUP):
            run(x)
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(-(-repeats // BLOCK)):
        for name, run in runs.items():
            run(x)
            for _ in range(BLOCK):
                t0 = time.perf_counter()
                run(x)
                times[name].append(time.perf_counter() - t0)
    return {name: 1000.0 * float(np.median(t)) / batch for name, t in times.items()}


def _megabytes(paths) -> float:
    return sum(Path(p).stat().st_size for p in paths) / 1e6


def openvino_breakdown(xml: Path, size: int, threads: int, runs: int = 30) -> dict[str, float]:
    """ms per batch-1 OpenVINO run by part of the graph (node-name prefixes), from its counters."""
    import openvino as ov

    core = ov.Core()
    config = {
        "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_PRECISION_HINT": "f32",
        "INFERENCE_NUM_THREADS": threads,
        "PERF_COUNT": True,
    }
    model = core.read_model(str(xml))
    model.reshape({model.inputs[0]: [1, 3, size, size]})  # as cainnflow.runtime compiles it
    request = core.compile_model(model, "CPU", config).create_infer_request()
    x = np.zeros((1, 3, size, size), np.float32)
    for _ in range(WARMUP):
        request.infer({0: x})
    parts: collections.Counter[str] = collections.Counter()
    for _ in range(runs):
        request.infer({0: x})
        for node in request.profiling_info:
            name = node.node_name
            part = (
                "backbone" if "/features/" in name else "flows" if "/flows/" in name else "map, layout, other"
            )
            parts[part] += node.real_time.total_seconds() * 1000
    return {k: v / runs for k, v in parts.items()}


def _detector(category: str, root: Path, checkpoints: Path) -> Detector:
    path = checkpoints / f"{category}.safetensors"
    if path.exists():
        return Detector.load(path, device="cpu")
    print(f"training {category} with the defaults (saved to {path})", file=sys.stderr)
    detector = Detector.create(CAINNFlowConfig(), device="cpu")
    detector.fit(load_mvtec_category(root, category), TrainConfig())
    checkpoints.mkdir(parents=True, exist_ok=True)
    detector.save(path)
    return detector


def category_rows(category: str, root: Path, args, tmp: Path) -> tuple[list[Row], dict]:
    data = load_mvtec_category(root, category)
    detector = _detector(category, root, args.checkpoints)
    size = detector.config.image_size
    eager = ScoringGraph(detector.model, size).eval()
    rows: list[Row] = []

    runs: dict[str, Callable] = {}  # timed together at the end, in turns

    def timed(run, name: str) -> dict[int, float | None]:
        runs[name] = run
        return dict.fromkeys(BATCHES)

    reference = None if args.speed_only else detector.evaluate(data, batch_size=8)
    checkpoint_mb = _megabytes([args.checkpoints / f"{category}.safetensors"])
    rows.append(
        Row(
            "PyTorch (Detector.score_batch)",
            timed(lambda x: detector.score_batch(torch.from_numpy(x)), "PyTorch (Detector.score_batch)"),
            *(() if reference is None else (reference.image_auroc, reference.pixel_auroc, reference.aupro)),
            megabytes=checkpoint_mb,
            note="checkpoint",
        )
    )

    def eager_run(x):
        with torch.no_grad():
            return eager(torch.from_numpy(x))

    rows.append(
        Row(
            "PyTorch eager (export module)",
            timed(eager_run, "PyTorch eager (export module)"),
            note="no TorchScript",
        )
    )
    profile = {}
    for fmt, engine in (("onnx", "ONNX Runtime"), ("openvino", "OpenVINO")):
        for precision in ("fp32", "int8"):
            name = f"{engine} {precision.upper()}"
            out = tmp / f"{category}-{fmt}-{precision}"
            options = None
            if precision == "int8":
                if args.no_int8:
                    continue
                options = QuantizeOptions(
                    data=data,
                    max_auroc_drop=args.max_auroc_drop,
                    max_image_auroc_drop=args.max_image_auroc_drop,
                    max_aupro_drop=args.max_aupro_drop,
                    threads=args.threads,
                )
            t0 = time.perf_counter()
            reused = args.reuse and (out / "export.json").exists()
            try:
                if not reused:
                    export_detector(detector, out, format=fmt, precision=precision, quantization=options)
            except CainnflowError as exc:
                rows.append(Row(name, dict.fromkeys(BATCHES), note=f"refused: {exc}"))
                continue
            seconds = time.perf_counter() - t0
            exported = load_export(out, threads=args.threads)
            result = None if args.speed_only else exported.evaluate(data, batch_size=8)
            graph_files = [p for p in exported.info.files]
            row = Row(
                name,
                timed(exported.score_batch, name),
                *(() if result is None else (result.image_auroc, result.pixel_auroc, result.aupro)),
                megabytes=_megabytes(graph_files),
                note=("reused export" if reused else f"export {seconds:.0f} s") + _scope(out),
            )
            rows.append(row)
            if args.profile and fmt == "openvino":
                profile[name] = openvino_breakdown(exported.info.files[0], size, args.threads)
    if args.fastflow and not args.metrics_only:
        from benchmarks.fastflow_export import fastflow_engines

        fastflow, megabytes = fastflow_engines(size, args.threads, tmp)
        runs.update(fastflow)
        rows.extend(
            Row(name, dict.fromkeys(BATCHES), megabytes=megabytes, note="untrained flows (speed only)")
            for name in fastflow
        )
    if not args.metrics_only:
        for batch in BATCHES:
            for name, ms in interleaved_ms(runs, batch, size, args.repeats).items():
                next(r for r in rows if r.engine == name).ms[batch] = ms
    return rows, profile


def _scope(out: Path) -> str:
    record = json.loads((out / "export.json").read_text()).get("quantization")
    return f"; {record['scope']}" if record else ""


def _fmt(value: float | None, digits: int) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def print_table(category: str, rows: list[Row], args) -> None:
    load = " / ".join(f"{v:.1f}" for v in os.getloadavg())
    print(f"\n### {category}: {args.threads} threads, torch {torch.__version__}, load average {load}\n")
    print("| engine | b1 ms/img | b8 ms/img | image AUROC | pixel AUROC | AUPRO | MB | note |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r.engine} | {_fmt(r.ms[1], 1)} | {_fmt(r.ms[8], 1)} | {_fmt(r.image_auroc, 4)} | "
            f"{_fmt(r.pixel_auroc, 4)} | {_fmt(r.aupro, 4)} | {_fmt(r.megabytes, 1)} | {r.note} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--dataset",
        action="append",
        required=True,
        metavar="CATEGORY=ROOT",
        help="a category and the MVTec-layout root that holds it (repeat for more)",
    )
    parser.add_argument(
        "--checkpoints",
        type=Path,
        required=True,
        help="folder of CATEGORY.safetensors (trained there if missing)",
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=50, help="timed runs per batch size (median)")
    parser.add_argument("--max-auroc-drop", type=float, default=0.003, help="pixel AUROC")
    parser.add_argument("--max-image-auroc-drop", type=float, default=0.01)
    parser.add_argument("--max-aupro-drop", type=float, default=0.01)
    parser.add_argument("--speed-only", action="store_true", help="skip the test-split metrics")
    parser.add_argument("--metrics-only", action="store_true", help="skip the timings")
    parser.add_argument("--no-int8", action="store_true", help="FP32 rows only")
    parser.add_argument("--profile", action="store_true", help="OpenVINO time per part of the graph")
    parser.add_argument(
        "--fastflow", action="store_true", help="time anomalib's FastFlow export too (needs anomalib)"
    )
    parser.add_argument("--keep", type=Path, default=None, help="keep the exports in this folder")
    parser.add_argument(
        "--reuse", action="store_true", help="with --keep: time and evaluate the exports already there"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = args.keep or Path(tmp_dir)
        for item in args.dataset:
            category, _, root = item.partition("=")
            if not root:
                parser.error(f"--dataset takes CATEGORY=ROOT, got {item!r}")
            rows, profile = category_rows(category, Path(root), args, tmp)
            print_table(category, rows, args)
            for name, parts in profile.items():
                split = ", ".join(f"{k} {v:.1f}" for k, v in sorted(parts.items(), key=lambda kv: -kv[1]))
                print(f"\n{name}, batch 1, ms per run by part: {split}")
            sys.stdout.flush()


if __name__ == "__main__":
    main()
