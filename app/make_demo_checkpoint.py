"""Train the small ready-to-use demo checkpoint shipped in ``assets/``.

Run from the repository root::

    python -m app.make_demo_checkpoint            # writes assets/demo_carpet_weave.safetensors
    python -m app.make_demo_checkpoint --epochs 4 --out /tmp/demo.safetensors

It generates the synthetic demo data (cached in ``$CAINNFLOW_HOME/demo``), trains the default
CAINNFlow configuration (tf_efficientnet_lite0 with its offline ImageNet weights, which are not
embedded in the file) on ``carpet_weave`` and prints the image AUROC on the demo test split.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from cainnflow.data import load_mvtec_category
from cainnflow.demo_data import make_demo_dataset
from cainnflow.detector import Detector
from cainnflow.model import CAINNFlowConfig
from cainnflow.training import TrainConfig

from .loaders import DEMO_CHECKPOINT, DEMO_CHECKPOINT_CATEGORY, app_home

DEFAULT_EPOCHS = TrainConfig.epochs
DEFAULT_BATCH_SIZE = 16
MAX_ASSET_BYTES = 3 * 1024 * 1024


def build_demo_detector(category: str, epochs: int | None, device: str) -> tuple[Detector, float]:
    """Trains the demo detector (``epochs`` None: the library's step budget); returns it and the seconds."""
    root = make_demo_dataset(app_home() / "demo", categories=[category])
    data = load_mvtec_category(root, category)
    detector = Detector.create(CAINNFlowConfig(), weights="auto", device=device)
    start = time.perf_counter()
    detector.fit(data, TrainConfig(epochs=epochs, batch_size=DEFAULT_BATCH_SIZE))
    detector.info["dataset"] = {"source": "demo", "root": "", "category": category}  # app.state.DataRef
    return detector, time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--category", default=DEMO_CHECKPOINT_CATEGORY)
    parser.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=DEMO_CHECKPOINT)
    args = parser.parse_args(argv)

    detector, seconds = build_demo_detector(args.category, args.epochs, args.device)
    data = load_mvtec_category(app_home() / "demo", args.category)
    result = detector.evaluate(data)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    detector.save(args.out)
    size = args.out.stat().st_size
    history = detector.history
    print(
        f"trained {args.category} in {seconds:.1f} s ({args.epochs} epochs, best epoch {history.best_epoch})"
    )
    print(
        f"image AUROC {result.image_auroc:.3f} · pixel AUROC {result.pixel_auroc:.3f} · AUPRO {result.aupro:.3f}"
    )
    print(f"wrote {args.out} ({size / 1024:.0f} KiB)")
    if size > MAX_ASSET_BYTES:
        print(f"warning: the checkpoint is larger than {MAX_ASSET_BYTES // 1024 // 1024} MiB")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
