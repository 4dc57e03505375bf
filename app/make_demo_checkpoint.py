"""Train the small ready-to-use demo checkpoint shipped in ``assets/``.

Run from the repository root::

    python -m app.make_demo_checkpoint            # writes assets/demo_carpet_weave.safetensors + its export
    python -m app.make_demo_checkpoint --epochs 4 --out /tmp/demo.safetensors --export-out /tmp/demo_onnx
    python -m app.make_demo_checkpoint --export-only   # re-export the shipped checkpoint

It generates the synthetic demo data (cached in ``$CAINNFLOW_HOME/demo``), trains CAINNFlow
(tf_efficientnet_lite0 with its offline ImageNet weights, which are not embedded in the file)
on ``carpet_weave``, prints the metrics on the demo test split, and exports the same model to
ONNX (``assets/demo_carpet_weave_onnx/``): the app serves its first heatmaps from that export
while PyTorch is still importing (``app.quickstart``).

The demo model uses backbone stages 1–3 (strides 4–16) rather than the library's default 1–4:
its whole-graph export then ships at about 4 MB instead of about 14 MB (the stride-32 stage
holds most of Lite0's weights), and the demo's local defects do not need it.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

from cainnflow.data import load_mvtec_category
from cainnflow.demo_data import make_demo_dataset
from cainnflow.detector import Detector
from cainnflow.model import CAINNFlowConfig
from cainnflow.record import DataReference
from cainnflow.training import TrainConfig

from .loaders import DEMO_CHECKPOINT, DEMO_CHECKPOINT_CATEGORY, DEMO_EXPORT, app_home

DEFAULT_EPOCHS = 15
DEFAULT_BATCH_SIZE = 16
DEMO_STAGES = (1, 2, 3)
MAX_ASSET_BYTES = 3 * 1024 * 1024
MAX_EXPORT_BYTES = 6 * 1024 * 1024


def build_demo_detector(category: str, epochs: int | None, device: str) -> tuple[Detector, float]:
    """Trains the demo detector (``epochs`` None: the library's step budget); returns it and the seconds."""
    root = make_demo_dataset(app_home() / "demo", categories=[category])
    data = load_mvtec_category(root, category)
    detector = Detector.create(CAINNFlowConfig(out_indices=DEMO_STAGES), weights="auto", device=device)
    start = time.perf_counter()
    detector.fit(data, TrainConfig(epochs=epochs, batch_size=DEFAULT_BATCH_SIZE))
    detector.record = replace(detector.record, data=DataReference("demo", "", category))  # app opens it
    return detector, time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--category", default=DEMO_CHECKPOINT_CATEGORY)
    parser.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=DEMO_CHECKPOINT)
    parser.add_argument("--export-out", type=Path, default=DEMO_EXPORT, help="its ONNX export folder")
    parser.add_argument("--export-only", action="store_true", help="export the existing --out checkpoint")
    args = parser.parse_args(argv)
    if args.export_only:
        return export_demo(Detector.load(args.out, device="cpu"), args.export_out)

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
    return export_demo(detector, args.export_out)


def export_demo(detector: Detector, folder: Path) -> int:
    """Writes the ONNX export the app's quick start serves; 1 if it is too large to ship."""
    from cainnflow.export import export_detector

    export_detector(detector, folder, format="onnx")
    size = sum(path.stat().st_size for path in folder.iterdir())
    print(f"wrote {folder} ({size / 1024:.0f} KiB)")
    if size > MAX_EXPORT_BYTES:
        print(f"warning: the export is larger than {MAX_EXPORT_BYTES // 1024 // 1024} MiB")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
