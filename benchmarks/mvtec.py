"""Train and evaluate CAINNFlow on MVTec-layout categories; print a paper-style table.

    python benchmarks/mvtec.py --root ../shared/data/mvtec_ad --categories bottle
    python benchmarks/mvtec.py --categories bottle --variant CC --steps 4 --image-size 320

Prints per category: image AUROC, pixel AUROC, AUPRO beside the paper's CAINNFlow numbers
(Table 1, WideResNet-50), plus training wall time (feature extraction included), s/epoch,
ms/image at batch size 1 and peak memory during training.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import fields
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import DEFAULT_MVTEC_ROOT, PAPER_TABLE1, PeakMemory, fmt, latency_ms
from cainnflow.data import load_mvtec_category
from cainnflow.detector import Detector
from cainnflow.model import CAINNFlowConfig
from cainnflow.training import TrainConfig


def add_config_args(parser: argparse.ArgumentParser) -> None:
    for f in fields(CAINNFlowConfig):
        if f.name in ("out_indices",):
            parser.add_argument("--out-indices", type=int, nargs="+", default=None)
            continue
        default = f.default
        kind = type(default) if default is not None else str
        parser.add_argument(f"--{f.name.replace('_', '-')}", type=kind, default=None)
    for f in fields(TrainConfig):
        if f.name in ("seed",):
            continue
        default = f.default
        kind = type(default) if default is not None else int
        parser.add_argument(f"--train-{f.name.replace('_', '-')}", type=kind, default=None)


def build_configs(args: argparse.Namespace) -> tuple[CAINNFlowConfig, TrainConfig]:
    model_kw = {
        f.name: getattr(args, f.name)
        for f in fields(CAINNFlowConfig)
        if getattr(args, f.name, None) is not None
    }
    train_kw = {
        f.name: getattr(args, f"train_{f.name}")
        for f in fields(TrainConfig)
        if getattr(args, f"train_{f.name}", None) is not None
    }
    if "seed" in model_kw:  # one --seed for the flow init and the batch order
        train_kw["seed"] = model_kw["seed"]
    if args.out_indices:
        model_kw["out_indices"] = tuple(args.out_indices)
    return CAINNFlowConfig(**model_kw), TrainConfig(**train_kw)


def run_category(
    root: Path, category: str, config: CAINNFlowConfig, train_config: TrainConfig, device: str
) -> dict:
    data = load_mvtec_category(root, category)
    t0 = time.perf_counter()
    with PeakMemory() as mem:
        detector = Detector.create(config, device=device)
        history = detector.fit(data, train_config)
    train_wall = time.perf_counter() - t0
    result = detector.evaluate(data)
    return {
        "category": category,
        "image_auroc": result.image_auroc,
        "pixel_auroc": result.pixel_auroc,
        "aupro": result.aupro,
        "train_wall_s": train_wall,
        "feature_s": history.feature_seconds,
        "s_per_epoch": history.train_seconds / max(len(history.epochs), 1),
        "epochs_run": len(history.epochs),
        "best_epoch": history.best_epoch,
        "ms_per_image_b1": latency_ms(detector, config.image_size, 1),
        "peak_mem_gib": mem.peak,
        "per_defect": [row.to_dict() for row in result.per_defect],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--root", type=Path, default=DEFAULT_MVTEC_ROOT)
    parser.add_argument("--categories", nargs="+", default=["bottle"])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None)
    add_config_args(parser)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config, train_config = build_configs(args)
    print(f"config: {config.to_json()}")
    print(f"train:  {json.dumps(train_config.to_dict())}  threads={args.threads}")
    rows = [run_category(args.root, c, config, train_config, args.device) for c in args.categories]

    header = (
        f"{'category':<12} {'img AUROC':>9} {'paper':>7} {'px AUROC':>9} {'paper':>7} {'AUPRO':>7} "
        f"{'train s':>8} {'s/epoch':>8} {'ms/img':>7} {'peak GiB':>8}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        paper = PAPER_TABLE1.get(r["category"], (None, None))
        print(
            f"{r['category']:<12} {fmt(r['image_auroc']):>9} {paper[0] if paper[0] else '—':>7} "
            f"{fmt(r['pixel_auroc']):>9} {paper[1] if paper[1] else '—':>7} {fmt(r['aupro']):>7} "
            f"{r['train_wall_s']:>8.1f} {r['s_per_epoch']:>8.2f} {r['ms_per_image_b1']:>7.1f} {r['peak_mem_gib']:>8.2f}"
        )
    for r in rows:
        for d in r["per_defect"]:
            print(
                f"  {r['category']}/{d['defect_type']:<16} image {fmt(d['image_auroc'])}  pixel {fmt(d['pixel_auroc'])}"
            )
    if args.json:
        args.json.write_text(
            json.dumps({"config": config.to_dict(), "train": train_config.to_dict(), "rows": rows}, indent=2)
        )


if __name__ == "__main__":
    main()
