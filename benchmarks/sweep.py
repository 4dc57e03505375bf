"""Sweep CAINNFlow settings on one MVTec-layout category, caching backbone features.

Backbone features are computed once per (backbone, image size, stages); every flow setting
then trains on that cache, and every scoring setting (map smoothing, pooling) is evaluated
on the same latents — so a sweep costs flow training only. Prints the table the paper's
Tables 2–3 would be for this data (variants × steps), and more.

    python benchmarks/sweep.py --category bottle --variants CA AC CAC CC --steps 1 2 3 4
    python benchmarks/sweep.py --backbones tf_efficientnet_lite0 tf_efficientnet_lite1 --image-sizes 256 320
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import DEFAULT_MVTEC_ROOT, PAPER_TABLE2_BOTTLE, PAPER_TABLE3_BOTTLE, fmt, latency_ms
from cainnflow.data import load_mvtec_category, split_train_val
from cainnflow.detector import Detector
from cainnflow.metrics import aupro, image_auroc, pixel_auroc
from cainnflow.model import CAINNFlow, CAINNFlowConfig
from cainnflow.scoring import anomaly_map, image_scores
from cainnflow.training import TrainConfig, extract_features, fit_flows

_DEFAULT = CAINNFlowConfig()  # every option defaults to the library's default


def cache(detector: Detector, data, val_fraction: float, seed: int):
    train, val = split_train_val(data.train, val_fraction, seed=seed)
    dev = detector.device
    feats = {}
    t0 = time.perf_counter()
    for name, samples in (("train", train), ("val", val), ("test", data.test)):
        feats[name] = extract_features(detector.model, detector.loader(samples, 16), dev)
    seconds = time.perf_counter() - t0
    masks, has_mask = [], []
    for batch in detector.loader(data.test, 16):
        masks.append(batch[2][:, 0].numpy() > 0.5)
        has_mask.append(batch[3].numpy().astype(bool))
    labels = np.array([s.label for s in data.test])
    return feats, np.concatenate(masks), np.concatenate(has_mask), labels, seconds


@torch.no_grad()
def latents(detector: Detector, features, batch: int = 16) -> list[torch.Tensor]:
    zs = []
    for s in range(0, features[0].shape[0], batch):
        zs.append(detector.model([f[s : s + batch].to(detector.device) for f in features]).z)
    return [torch.cat(parts).cpu() for parts in zip(*zs, strict=True)]


def score(z, image_size, sigma, pooling, combine, labels, masks, has_mask):
    maps = torch.cat(
        [
            anomaly_map([zi[s : s + 16] for zi in z], image_size, sigma, combine)
            for s in range(0, z[0].shape[0], 16)
        ]
    )
    scores = image_scores(maps, pooling).numpy()
    maps = maps.numpy()
    rows = (labels == 0) | has_mask
    return image_auroc(labels, scores), pixel_auroc(masks[rows], maps[rows]), aupro(masks[rows], maps[rows])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", type=Path, default=DEFAULT_MVTEC_ROOT)
    p.add_argument("--category", default="bottle")
    p.add_argument("--backbones", nargs="+", default=["tf_efficientnet_lite0"])
    p.add_argument("--image-sizes", type=int, nargs="+", default=[256])
    p.add_argument("--out-indices", type=str, nargs="+", default=["1,2,3"], help="e.g. 1,2,3 2,3")
    p.add_argument("--variants", nargs="+", default=[_DEFAULT.variant])
    p.add_argument("--steps", type=int, nargs="+", default=[_DEFAULT.steps])
    p.add_argument("--hidden-ratios", type=float, nargs="+", default=[_DEFAULT.hidden_ratio])
    p.add_argument("--couplings", nargs="+", default=[_DEFAULT.coupling])
    p.add_argument("--clamps", type=float, nargs="+", default=[_DEFAULT.clamp])
    p.add_argument("--lrs", type=float, nargs="+", default=[TrainConfig.lr])
    p.add_argument("--epochs", type=int, nargs="+", default=[TrainConfig.epochs])
    p.add_argument("--sigmas", type=float, nargs="+", default=[_DEFAULT.sigma])
    p.add_argument("--poolings", nargs="+", default=[_DEFAULT.pooling])
    p.add_argument("--combines", nargs="+", default=[_DEFAULT.combine])
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="flow init and batch-order seeds")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="auto")
    p.add_argument("--weights", default="auto", help="backbone weights: auto, random or a file")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    data = load_mvtec_category(args.root, args.category)
    results = []
    print(
        f"{'backbone':<22} {'size':>4} {'stages':>6} {'var':>4} {'st':>2} {'hid':>4} {'cpl':>8} {'clamp':>5} {'lr':>7} "
        f"{'ep':>3} {'seed':>4} {'sigma':>5} {'pool':>4} {'cmb':>3} | {'img':>6} {'pixel':>6} {'aupro':>6} | {'train s':>7} {'ms/img':>6}"
    )
    for backbone, size, stages in itertools.product(args.backbones, args.image_sizes, args.out_indices):
        out_indices = tuple(int(i) for i in stages.split(","))
        base = Detector.create(
            CAINNFlowConfig(backbone=backbone, image_size=size, out_indices=out_indices),
            weights=args.weights,
            device=args.device,
        )
        feats, masks, has_mask, labels, feat_s = cache(base, data, 0.15, 0)
        print(
            f"# features {backbone} {size}px stages {stages}: {feat_s:.1f} s for {len(data.train) + len(data.test)} images"
        )
        grid = itertools.product(
            args.variants,
            args.steps,
            args.hidden_ratios,
            args.couplings,
            args.clamps,
            args.lrs,
            args.epochs,
            args.seeds,
        )
        for variant, steps, hidden, coupling, clamp, lr, epochs, seed in grid:
            config = CAINNFlowConfig(
                backbone=backbone,
                image_size=size,
                out_indices=out_indices,
                variant=variant,
                steps=steps,
                hidden_ratio=hidden,
                coupling=coupling,
                clamp=clamp,
                seed=seed,
            )

            model = CAINNFlow(base.backbone, config).to(base.device)
            det = Detector(model)
            t0 = time.perf_counter()
            history = fit_flows(
                model, feats["train"], feats["val"], TrainConfig(epochs=epochs, lr=lr, seed=seed)
            )
            train_s = time.perf_counter() - t0
            ms_b1 = latency_ms(det, size, 1, repeats=10)
            z = latents(det, feats["test"])
            for sigma, pooling, combine in itertools.product(args.sigmas, args.poolings, args.combines):
                img, px, pro = score(z, size, sigma, pooling, combine, labels, masks, has_mask)
                row = dict(
                    backbone=backbone,
                    size=size,
                    stages=stages,
                    variant=variant,
                    steps=steps,
                    hidden=hidden,
                    coupling=coupling,
                    clamp=clamp,
                    lr=lr,
                    epochs=epochs,
                    seed=seed,
                    sigma=sigma,
                    combine=combine,
                    pooling=pooling,
                    image_auroc=img,
                    pixel_auroc=px,
                    aupro=pro,
                    train_s=train_s,
                    ms_per_image_b1=ms_b1,
                    feature_s=feat_s,
                    best_epoch=history.best_epoch,
                )
                results.append(row)
                print(
                    f"{backbone:<22} {size:>4} {stages:>6} {variant:>4} {steps:>2} {hidden:>4} {coupling:>8} {clamp:>5} "
                    f"{lr:>7.0e} {epochs:>3} {seed:>4} {sigma:>5} {pooling:>4} {combine[:3]:>3} | {fmt(img):>6} {fmt(px):>6} {fmt(pro):>6} | {train_s:>7.1f} {ms_b1:>6.1f}",
                    flush=True,
                )
    if args.category == "bottle" and len(args.variants) > 1:
        print("\npaper Table 2 (ResNet18, bottle pixel AUROC):", PAPER_TABLE2_BOTTLE)
    if args.category == "bottle" and len(args.steps) > 1:
        print("paper Table 3 (ResNet18 CAC, bottle pixel AUROC by steps):", PAPER_TABLE3_BOTTLE)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
