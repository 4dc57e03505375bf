"""How far the backbone's features alone separate a real set's test images, without a flow.

A nearest-neighbour memory bank (PatchCore's score without its coreset: each test position's
distance to the closest training position, features 3×3-averaged) and a diagonal Gaussian per
stage, on the same frozen features the flows see (the default backbone, the exposure step
decided from the good images as ``Detector.fit`` decides it). If these land where the flow
does, the flow is not what holds a set back: the features and the number of good images are.

    python benchmarks/ceiling.py --real ROOT/magnetic_tile:magnetic_tile:20
    python benchmarks/ceiling.py --real ROOT/mvtec_ad:bottle:10 --stages 2 3 4

Prints image AUROC (%) per stage and score, overall and by defect type.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# isort: off
import cainnflow  # noqa: F401 - OpenMP settings before torch loads
import torch
import torch.nn.functional as F

# isort: on
from benchmarks.categories import real_dataset
from cainnflow.detector import Detector
from cainnflow.metrics import image_auroc
from cainnflow.model import CAINNFlowConfig

TOP_FRACTION = 1 / 8


@torch.no_grad()
def features(detector: Detector, samples, stages: list[int]) -> list[torch.Tensor]:
    """Backbone features (N, C, h, w) of the model's stages listed in ``stages`` (1-based)."""
    chunks = []
    for batch in detector.loader(samples, 16):
        feats = detector.model.extract_features(batch.image)
        chunks.append([feats[s - 1] for s in stages])
    return [torch.cat(parts) for parts in zip(*chunks, strict=True)]


def nearest_distance(train: torch.Tensor, test: torch.Tensor, chunk: int = 16) -> torch.Tensor:
    """Each test position's Euclidean distance to the nearest training position, (N, h·w)."""
    bank = train.permute(0, 2, 3, 1).reshape(-1, train.shape[1])
    queries = test.permute(0, 2, 3, 1).reshape(test.shape[0], -1, test.shape[1])
    return torch.cat([torch.cdist(q, bank).amin(dim=-1) for q in queries.split(chunk)])


def gaussian_energy(train: torch.Tensor, test: torch.Tensor) -> torch.Tensor:
    """Each test position's squared z-score under one diagonal Gaussian of all training positions."""
    mean = train.mean(dim=(0, 2, 3), keepdim=True)
    var = train.var(dim=(0, 2, 3), keepdim=True) + 1e-4
    return ((test - mean) ** 2 / var).mean(dim=1).flatten(1)


def by_type(labels: np.ndarray, types: np.ndarray, scores: np.ndarray) -> str:
    cells = [f"{100 * image_auroc(labels, scores):6.2f}"]
    for kind in sorted(set(types) - {"good"}):
        keep = (types == kind) | (types == "good")
        cells.append(f"{kind} {100 * image_auroc(labels[keep], scores[keep]):.1f}")
    return "  ".join(cells)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--real", required=True, metavar="ROOT:CATEGORY[:N]")
    p.add_argument("--stages", type=int, nargs="+", default=[2, 3, 4], help="1-based, of the model's stages")
    args = p.parse_args()
    data = real_dataset(args.real)
    detector = Detector.create(CAINNFlowConfig(), device="cpu")
    exposure = detector.fit_exposure(data.train)
    print(f"{data.name}: {len(data.train)} good training images, exposure step: {exposure.mode}")
    labels = np.array([s.label for s in data.test])
    types = np.array([s.defect_type for s in data.test])
    train, test = features(detector, data.train, args.stages), features(detector, data.test, args.stages)
    for stage, a, b in zip(args.stages, train, test, strict=True):
        pooled_a, pooled_b = F.avg_pool2d(a, 3, 1, 1), F.avg_pool2d(b, 3, 1, 1)
        for name, positions in (
            ("nearest neighbour", nearest_distance(pooled_a, pooled_b)),
            ("diagonal Gaussian", gaussian_energy(a, b)),
        ):
            k = max(1, round(positions.shape[1] * TOP_FRACTION))
            top = positions.topk(k, dim=1).values.mean(dim=1).numpy()
            print(f"stage {stage} {name:18s} max   {by_type(labels, types, positions.amax(dim=1).numpy())}")
            print(f"stage {stage} {name:18s} top⅛  {by_type(labels, types, top)}")


if __name__ == "__main__":
    main()
