"""Small-data stability: train on the first N good images of a category, N runs, full test split.

    python benchmarks/small_data.py                        # "bottle-10": 10 images, 3 runs, defaults
    python benchmarks/small_data.py --n-train 20 --runs 5
    python benchmarks/small_data.py --stages 2 3 4 --epochs 40
    python benchmarks/small_data.py --settings default long stages234
    python benchmarks/small_data.py --category circuit_board --demo   # a demo category instead

The training set is the first ``--n-train`` images of ``train/good`` sorted by file name;
the library then carves its validation split from them as usual. Run ``k`` uses seed
``first_seed + k`` for the flow initialisation, the batch order and the validation split
(``--same-seed`` repeats one seed, which shows what is left of run-to-run noise at a fixed
seed). Prints per run image / pixel AUROC
and AUPRO, then per setting the mean, the worst run and the spread (max − min).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.categories import add_setting_args, describe, resolve_settings, train_detector
from benchmarks.common import DEFAULT_MVTEC_ROOT, PeakMemory, fmt
from cainnflow.data import CategoryData, load_mvtec_category
from cainnflow.demo_data import make_demo_dataset

METRICS = (("image_auroc", "img"), ("pixel_auroc", "pixel"), ("aupro", "aupro"))


def first_n(data: CategoryData, n: int) -> CategoryData:
    """The category with only its first ``n`` training images (by file name)."""
    if n > len(data.train):
        raise SystemExit(f"{data.name} has only {len(data.train)} training images, asked for {n}")
    train = tuple(sorted(data.train, key=lambda s: s.path.name)[:n])
    return replace(data, train=train)


def summary(values: list[float | None]) -> str:
    real = [v for v in values if v is not None]
    if not real:
        return "—"
    arr = np.array(real)
    return f"mean {fmt(arr.mean())}  worst {fmt(arr.min())}  spread {fmt(arr.max() - arr.min())}  sd {fmt(arr.std())}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", type=Path, default=DEFAULT_MVTEC_ROOT, help="MVTec AD root")
    p.add_argument("--category", default="bottle")
    p.add_argument("--demo", action="store_true", help="the category is a demo category (generated)")
    p.add_argument("--n-train", type=int, default=10)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--first-seed", type=int, default=0, help="run k uses seed first-seed + k")
    p.add_argument("--same-seed", action="store_true", help="every run with the first seed")
    p.add_argument("--json", type=Path, default=None)
    add_setting_args(p)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    settings = resolve_settings(args)
    root = args.root
    if args.demo:
        root = make_demo_dataset(
            Path(tempfile.mkdtemp(prefix="cainnflow-demo-")), categories=(args.category,)
        )
    data = first_n(load_mvtec_category(root, args.category), args.n_train)
    print(
        f"# {args.category}-{args.n_train}: {len(data.train)} training images "
        f"({data.train[0].path.name} … {data.train[-1].path.name}), {len(data.test)} test images"
    )
    rows = []
    for setting in settings:
        print("#", describe(setting))
        print(
            f"{'run':>3} {'seed':>4} | {'img':>6} {'pixel':>6} {'aupro':>6} | {'train s':>7} {'peak GiB':>8}"
        )
        for k in range(args.runs):
            seed = args.first_seed if args.same_seed else args.first_seed + k
            t0 = time.perf_counter()
            with PeakMemory() as mem:
                detector = train_detector(setting, data, args.device, seed)
            train_s = time.perf_counter() - t0
            if k == 0:
                cfg = detector.config
                print(f"    (stages {cfg.out_indices}, {cfg.image_size} px, {cfg.variant} x{cfg.steps})")
            result = detector.evaluate(data)
            row = {
                "setting": setting.name,
                "run": k,
                "seed": seed,
                "image_auroc": result.image_auroc,
                "pixel_auroc": result.pixel_auroc,
                "aupro": result.aupro,
                "train_s": train_s,
                "peak_gib": mem.peak,
                "best_epoch": detector.history.best_epoch if detector.history else None,
                "out_indices": list(detector.config.out_indices or ()),
            }
            rows.append(row)
            print(
                f"{k:>3} {seed:>4} | {fmt(row['image_auroc']):>6} {fmt(row['pixel_auroc']):>6} "
                f"{fmt(row['aupro']):>6} | {train_s:>7.1f} {mem.peak:>8.2f}",
                flush=True,
            )
        for key, label in METRICS:
            values = [r[key] for r in rows if r["setting"] == setting.name]
            print(f"    {label:<6} {summary(values)}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
