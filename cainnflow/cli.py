"""Command line: ``python -m cainnflow {make-demo-data,train,evaluate,predict,export,sweep}``.

Bad arguments and bad files end with a non-zero exit code and one clear line on stderr,
never a traceback.

Over 500 lines: one subparser and one handler per command (six), each a straight list of
library calls; the whole command line stays in one place to read.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from . import __version__
from .config import DEFAULT_POSITIONS_PER_STEP, PHOTOMETRIC_MODES
from .device import DEVICE_CHOICES
from .errors import CainnflowError

if TYPE_CHECKING:
    from .scorer import Scorer
    from .sweep import SweepProgress

__all__ = ["add_sweep_parser", "main", "run_sweep_command"]

EXIT_ERROR = 2
EXIT_INTERRUPTED = 130


def _build_parser() -> argparse.ArgumentParser:
    from .model import CAINNFlowConfig
    from .registry import BACKBONES, DEFAULT_BACKBONE
    from .subnet import VARIANTS

    parser = argparse.ArgumentParser(
        prog="python -m cainnflow",
        description="CAINNFlow anomaly detection: make demo data, train, evaluate, predict.",
    )
    parser.add_argument("--version", action="version", version=f"cainnflow {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("make-demo-data", help="write the synthetic demo dataset (MVTec layout)")
    demo.add_argument("out_dir", type=Path)
    demo.add_argument("--seed", type=int, default=0)

    train = sub.add_parser("train", help="train a flow on the good images of a category")
    train.add_argument("--data-root", type=Path, required=True, help="MVTec-layout root folder")
    train.add_argument("--category", required=True)
    train.add_argument("--out", type=Path, required=True, help="checkpoint file to write (.safetensors)")
    train.add_argument("--backbone", default=DEFAULT_BACKBONE, choices=sorted(BACKBONES))
    train.add_argument("--variant", default=CAINNFlowConfig.variant, choices=VARIANTS)
    train.add_argument("--steps", type=int, default=CAINNFlowConfig.steps, help="coupling blocks per scale")
    train.add_argument(
        "--max-steps",
        type=int,
        default=None,
        help="optimizer-step budget, early-stopped on validation NLL (default: 18·√images, 300 to 400)",
    )
    train.add_argument("--epochs", type=int, default=None, help="train exactly this many epochs instead")
    train.add_argument(
        "--auto",
        action="store_true",
        help="choose stages and smoothing on synthetic anomalies pasted into held-out good images "
        "(never the test split), then train the choice on all good images",
    )
    train.add_argument(
        "--stages",
        type=int,
        nargs="+",
        default=None,
        help="backbone feature stages (CNN) or blocks (ViT) to model, e.g. 1 2 3 (default: the backbone's)",
    )
    train.add_argument("--image-size", type=int, default=None, help="default: the backbone's")
    train.add_argument("--batch-size", type=int, default=16)
    train.add_argument("--lr", type=float, default=None)
    train.add_argument(
        "--positions-per-step",
        type=int,
        default=None,
        help=(
            "feature positions each scale trains on per step; fine scales use fewer images of the "
            f"batch (default {DEFAULT_POSITIONS_PER_STEP}; 0: every scale the whole batch)"
        ),
    )
    train.add_argument(
        "--photometric",
        default=CAINNFlowConfig.photometric,
        choices=PHOTOMETRIC_MODES,
        help="standardize: every image to the training images' grey-level mean and contrast before "
        "the backbone; none: images as they are; auto (default): standardize when the good images' "
        "exposure varies",
    )
    train.add_argument("--device", default="auto", choices=DEVICE_CHOICES)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument(
        "--weights", default="auto", help="backbone weights: auto, random (tests only), or a file"
    )
    train.add_argument("--quiet", action="store_true", help="no progress bar")

    _add_scoring_commands(sub)
    add_sweep_parser(sub)
    return parser


_CHECKPOINT_HELP = "a .safetensors checkpoint, or a folder written by 'export' (runs without PyTorch)"


def _add_scoring_commands(sub) -> None:
    """evaluate, predict and export (torch-free, so an export runs where torch is not installed)."""
    ev = sub.add_parser("evaluate", help="evaluate a checkpoint on a category's test split")
    ev.add_argument("--checkpoint", type=Path, required=True, help=_CHECKPOINT_HELP)
    ev.add_argument("--data-root", type=Path, required=True)
    ev.add_argument("--category", required=True)
    ev.add_argument("--json", type=Path, default=None, help="write the metrics as JSON here")
    ev.add_argument("--device", default="auto", choices=DEVICE_CHOICES)
    ev.add_argument("--batch-size", type=int, default=8)

    pr = sub.add_parser("predict", help="score images and write overlays and raw maps")
    pr.add_argument("--checkpoint", type=Path, required=True, help=_CHECKPOINT_HELP)
    pr.add_argument("images", type=Path, nargs="+")
    pr.add_argument("--out", type=Path, required=True, help="output folder")
    pr.add_argument("--device", default="auto", choices=DEVICE_CHOICES)
    pr.add_argument("--alpha", type=float, default=0.5, help="heatmap opacity of the overlays")

    ex = sub.add_parser("export", help="export a checkpoint's scoring graph for ONNX Runtime / OpenVINO")
    ex.add_argument("--checkpoint", type=Path, required=True, help="a .safetensors checkpoint")
    ex.add_argument("--out", type=Path, required=True, help="export folder to write")
    ex.add_argument("--format", default="onnx", choices=("onnx", "openvino"))
    ex.add_argument("--image-size", type=int, default=None, help="default: the size it was trained at")
    ex.add_argument(
        "--precision",
        default="fp32",
        choices=("fp32", "int8"),
        help="int8: backbone and flows quantised (OpenVINO: NNCF with accuracy control; ONNX Runtime: static "
        "quantisation), calibrated on the model's validation images and checked on synthetic anomalies",
    )
    ex.add_argument(
        "--data-root", type=Path, default=None, help="int8: the training data's MVTec-layout root"
    )
    ex.add_argument(
        "--category", default=None, help="int8: default: the category the checkpoint was trained on"
    )
    ex.add_argument(
        "--max-auroc-drop", type=float, default=0.003, help="int8: largest pixel AUROC loss allowed"
    )
    ex.add_argument(
        "--max-image-auroc-drop", type=float, default=0.01, help="int8: largest image AUROC loss allowed"
    )
    ex.add_argument("--max-aupro-drop", type=float, default=0.01, help="int8: largest AUPRO loss allowed")
    ex.add_argument(
        "--synthetic",
        type=int,
        default=None,
        help="int8: synthetic anomalies to check on (default: 2 per image)",
    )


def _cmd_make_demo_data(args: argparse.Namespace) -> int:
    from .demo_data import make_demo_dataset

    start = time.perf_counter()
    root = make_demo_dataset(args.out_dir, seed=args.seed)
    cats = sorted(p.name for p in root.iterdir() if p.is_dir())
    print(f"demo dataset in {root} ({', '.join(cats)}) in {time.perf_counter() - start:.1f} s")
    return 0


def _progress_printer(quiet: bool):
    from tqdm import tqdm

    bars: dict[str, tqdm] = {}

    def callback(p) -> None:
        if quiet:
            return
        if isinstance(p, str):  # a phase of auto-configuration
            for bar in bars.values():
                bar.close()
            bars.clear()
            print(f"auto: {p}", file=sys.stderr)
            return
        total = p.steps if p.phase == "features" else p.epochs * p.steps
        if p.phase not in bars and p.phase != "done":
            for bar in bars.values():
                bar.close()
            desc = "features" if p.phase == "features" else "training"
            bars[p.phase] = tqdm(total=total, desc=desc, unit="batch", file=sys.stderr, leave=True)
        if p.phase == "done":
            for bar in bars.values():
                bar.close()
            return
        bar = bars[p.phase]
        done = p.step if p.phase == "features" else (p.epoch - 1) * p.steps + p.step
        bar.update(done - bar.n)
        if p.phase == "train":
            post = {"epoch": f"{p.epoch}/{p.epochs}", "loss": f"{p.loss:.4f}"}
            if p.val_loss is not None:
                post["val"] = f"{p.val_loss:.4f}"
            bar.set_postfix(post, refresh=False)

    return callback


def _check_writable(out: Path) -> None:
    """Refuses a ``train --out`` that could not be written, before any training.

    Raises:
        CainnflowError: not a ``.safetensors`` name, a folder, or a place this process cannot write.
    """
    if out.suffix != ".safetensors":
        raise CainnflowError(f"--out must end in .safetensors, got {out.name}")
    if out.is_dir():
        raise CainnflowError(f"--out {out} is a folder; name the checkpoint file to write")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out.parent):
            pass
    except OSError as exc:
        raise CainnflowError(f"--out {out} cannot be written: {exc.strerror or exc}") from exc


def _cmd_train(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from .data import load_mvtec_category
    from .detector import Detector
    from .model import CAINNFlowConfig
    from .record import DataReference
    from .registry import BACKBONES
    from .training import TrainConfig

    _check_writable(args.out)
    data = load_mvtec_category(args.data_root, args.category)
    spec = BACKBONES[args.backbone]
    config = CAINNFlowConfig(
        backbone=args.backbone,
        image_size=args.image_size or spec.default_image_size,
        photometric=args.photometric,
        variant=args.variant,
        steps=args.steps,
        seed=args.seed,
        out_indices=tuple(args.stages) if args.stages else None,
    )
    defaults = TrainConfig()
    train_config = TrainConfig(
        epochs=args.epochs,
        max_steps=args.max_steps if args.max_steps is not None else defaults.max_steps,
        batch_size=args.batch_size,
        lr=args.lr if args.lr is not None else defaults.lr,
        seed=args.seed,
        positions_per_step=(
            defaults.positions_per_step
            if args.positions_per_step is None
            else (args.positions_per_step or None)
        ),
    )
    detector = Detector.create(config, weights=args.weights, device=args.device)
    print(
        f"training {config.variant} flow ({config.steps} steps/scale) on {data.name}: "
        f"{len(data.train)} good images, backbone {config.backbone} [{detector.backbone.weights_source}], "
        f"device {detector.device}",
        file=sys.stderr,
    )
    if args.auto:
        from .autoconfig import auto_configure

        detector, report = auto_configure(
            data,
            config,
            train_config,
            candidate_stages=args.stages,
            weights=args.weights,
            device=args.device,
            callback=_progress_printer(args.quiet),
        )
        history = detector.history
        best = report.chosen
        verb = "kept the defaults (no setting led them clearly):" if report.kept_defaults else "chose"
        print(
            f"auto: {verb} stages {' '.join(map(str, best.stages))}, sigma {best.sigma:g}, {best.pooling} score "
            f"(held-out good vs synthetic anomalies: image AUROC {best.image_auroc:.3f}, "
            f"pixel AUROC {best.pixel_auroc:.3f}, AUPRO {_fmt(best.aupro)}; {len(report.candidates)} settings tried, "
            f"proposed threshold {_fmt(report.proposed_threshold)})",
            file=sys.stderr,
        )
    else:
        history = detector.fit(data, train_config, callback=_progress_printer(args.quiet))
    # the data root's folder name, never its path (a checkpoint travels)
    root_name = Path(args.data_root).name
    detector.record = replace(detector.record, data=DataReference.of_category(data.name, root=root_name))
    detector.save(args.out)
    val = "n/a (no validation images)" if history.best_val_loss is None else f"{history.best_val_loss:.4f}"
    took = detector.record.timings
    print(
        f"saved {args.out}  best epoch {history.best_epoch}  val loss {val}  "
        f"features {took.feature_seconds:.1f} s  training {took.train_seconds:.1f} s "
        f"({took.steps} steps{', stopped early' if took.stopped_early else ''})  "
        f"threshold {detector.threshold:.4g}"
    )
    return 0


def _fmt(value: float | None, digits: int = 4) -> str:
    from .metrics import format_metric  # numpy / scikit-learn: imported when first needed

    return format_metric(value, digits)


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from .data import load_mvtec_category

    if args.checkpoint.is_dir():
        from .runtime import load_export

        exported = load_export(args.checkpoint)
        data = load_mvtec_category(args.data_root, args.category)
        result, where = exported.evaluate(data, batch_size=args.batch_size), exported.engine
    else:
        from .detector import Detector

        detector = Detector.load(args.checkpoint, device=args.device)
        data = load_mvtec_category(args.data_root, args.category)
        result, where = detector.evaluate(data, batch_size=args.batch_size), detector.device
    rows = [
        ("category", result.category),
        ("image AUROC", _fmt(result.image_auroc)),
        ("pixel AUROC", _fmt(result.pixel_auroc) if result.pixel_auroc is not None else "n/a (no masks)"),
        ("AUPRO (FPR<=0.3)", _fmt(result.aupro) if result.aupro is not None else "n/a (no masks)"),
        ("test images", f"{result.n_test} ({result.n_anomalous} anomalous)"),
        ("ms / image", f"{result.ms_per_image:.1f} (batch {args.batch_size}, {where})"),
        ("threshold", _fmt(result.threshold)),
        ("F1-optimal threshold", f"{_fmt(result.f1_threshold)} (F1 {_fmt(result.f1, 3)})"),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    if result.per_defect:
        print()
        print(f"{'defect':<20} {'n':>3} {'image AUROC':>12} {'pixel AUROC':>12}")
        for row in result.per_defect:
            print(f"{row.defect_type:<20} {row.n:>3} {_fmt(row.image_auroc):>12} {_fmt(row.pixel_auroc):>12}")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result.summary(), indent=2))
    return 0


def _output_stems(paths: Sequence[Path]) -> list[str]:
    """One distinct file stem per input: ``name``, or ``folder_name`` when names repeat."""
    counts = Counter(p.stem for p in paths)
    stems: list[str] = []
    taken: set[str] = set()
    for path in paths:
        base = f"{path.parent.name}_{path.stem}" if counts[path.stem] > 1 else path.stem
        stem, n = base, 2
        while stem in taken:
            stem, n = f"{base}_{n}", n + 1
        taken.add(stem)
        stems.append(stem)
    return stems


def _cmd_predict(args: argparse.Namespace) -> int:
    from .data import read_image
    from .visualization import overlay_heatmap

    if args.checkpoint.is_dir():
        from .runtime import load_export

        detector: Scorer = load_export(args.checkpoint)
    else:
        from .detector import Detector

        detector = Detector.load(args.checkpoint, device=args.device)
    if detector.stats is None or detector.threshold is None:
        raise CainnflowError(f"{args.checkpoint.name} holds an untrained model (no calibration)")
    pixel_p50, pixel_max = detector.stats.pixel_p50, detector.stats.pixel_max
    args.out.mkdir(parents=True, exist_ok=True)
    failures = 0
    for path, stem in zip(args.images, _output_stems(args.images), strict=True):
        try:
            image = read_image(path)
        except CainnflowError as exc:
            print(f"{path}: error: {exc}", file=sys.stderr)
            failures += 1
            continue
        pred = detector.predict([image])
        amap = pred.maps[0]
        overlay = overlay_heatmap(
            image,
            amap,
            vmin=pixel_p50,
            vmax=max(detector.threshold, pixel_max),
            alpha=args.alpha,
            threshold=detector.threshold,
        )
        overlay.save(args.out / f"{stem}_overlay.png")
        np.save(args.out / f"{stem}_map.npy", amap.astype(np.float32), allow_pickle=False)
        verdict = "ANOMALOUS" if pred.is_anomalous[0] else "good"
        print(f"{path}\tscore {pred.scores[0]:.4f}\t{verdict}")
    return EXIT_ERROR if failures else 0


def add_sweep_parser(subparsers) -> argparse.ArgumentParser:
    """Adds the ``sweep`` subcommand to a parser's subparsers (also used by ``benchmarks/sweep.py``)."""
    from .registry import BACKBONES
    from .subnet import VARIANTS
    from .training import TrainConfig

    p = subparsers.add_parser(
        "sweep",
        help="train and evaluate every combination of settings (Ray tasks; resumable)",
        description=(
            "Every combination of categories x backbones x variants x steps x image sizes x seeds is "
            "trained and evaluated as a Ray task (a local Ray unless --address joins a cluster). "
            "Each finished trial appends a row to OUT/results.csv and writes OUT/checkpoints/KEY.safetensors; "
            "rerunning the same command skips finished trials. OUT/table.md holds the paper-format table."
        ),
    )
    p.add_argument(
        "--data-root", type=Path, required=True, help="MVTec-layout root (every worker must see it)"
    )
    p.add_argument("--categories", nargs="+", required=True)
    p.add_argument("--backbones", nargs="+", default=None, choices=sorted(BACKBONES), metavar="BACKBONE")
    p.add_argument("--variants", nargs="+", default=None, choices=VARIANTS)
    p.add_argument("--steps", type=int, nargs="+", default=None, help="coupling blocks per scale")
    p.add_argument("--image-sizes", type=int, nargs="+", default=None, help="default: each backbone's")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument(
        "--epochs", type=int, default=None, help="default: the library's step budget with early stopping"
    )
    p.add_argument("--lr", type=float, default=None, help=f"default: {TrainConfig.lr:g}")
    p.add_argument("--batch-size", type=int, default=None, help=f"default: {TrainConfig.batch_size}")
    p.add_argument("--weights", default="auto", help="backbone weights: auto, random (tests only), or a file")
    p.add_argument("--device", default="auto", choices=DEVICE_CHOICES)
    p.add_argument("--out", type=Path, required=True, help="folder for results.csv, table.md, checkpoints/")
    p.add_argument("--address", default=None, help="Ray cluster to join (auto, HOST:6379, ray://HOST:10001)")
    p.add_argument("--cpus-per-trial", type=float, default=1.0)
    p.add_argument("--gpus-per-trial", type=float, default=0.0, help="fractions share a GPU, e.g. 0.25")
    p.add_argument("--no-ray", action="store_true", help="run the trials one after another in this process")
    return p


def _print_sweep_progress(p: SweepProgress) -> None:
    if p.trial is None:
        print(
            f"sweep: {p.total} trials, {p.skipped} already finished, {p.total - p.skipped} to run", flush=True
        )
        return
    head = f"[{p.done}/{p.total}] {p.trial.label}"
    if p.error is not None:
        print(f"{head}: FAILED: {p.error}", flush=True)
        return
    r = p.result
    assert r is not None
    ms = "n/a" if r.ms_per_image is None else f"{r.ms_per_image:.1f}"
    print(
        f"{head}: image AUROC {_fmt(r.image_auroc)}  pixel AUROC {_fmt(r.pixel_auroc)}  AUPRO {_fmt(r.aupro)}"
        f"  train {r.train_s:.1f} s  {ms} ms/image  {r.device}@{r.host}",
        flush=True,
    )


def run_sweep_command(args: argparse.Namespace) -> int:
    """Runs ``python -m cainnflow sweep``; 0 when every trial finished, 2 when some failed."""
    from .sweep import RayUnavailableError, SweepGrid, run_sweep
    from .sweep.ray_backend import import_ray

    if args.no_ray and args.address:
        raise CainnflowError("--address joins a Ray cluster; it cannot be combined with --no-ray")
    if not args.no_ray:
        try:
            import_ray()
        except RayUnavailableError as exc:
            raise RayUnavailableError(f"{exc}; or run the trials serially with --no-ray") from exc
    grid = SweepGrid(
        categories=tuple(args.categories),
        backbones=tuple(args.backbones or ()),
        variants=tuple(args.variants or ()),
        steps=tuple(args.steps or ()),
        image_sizes=tuple(args.image_sizes or (None,)),
        seeds=tuple(args.seeds),
        epochs=args.epochs,
        lr=args.lr,
        batch_size=args.batch_size,
        weights=str(args.weights),
    )
    summary = run_sweep(
        grid,
        args.out,
        args.data_root,
        use_ray=not args.no_ray,
        address=args.address,
        cpus_per_trial=args.cpus_per_trial,
        gpus_per_trial=args.gpus_per_trial,
        device=args.device,
        on_progress=_print_sweep_progress,
    )
    print()
    print(summary.table, end="")
    print(
        f"\n{summary.ran} trials run, {summary.skipped} skipped (already finished), {len(summary.failed)} failed "
        f"in {summary.seconds:.1f} s; results in {summary.results_path}, table in {summary.table_path}"
    )
    return EXIT_ERROR if summary.failed else 0


def _cmd_export(args: argparse.Namespace) -> int:
    from .detector import Detector
    from .export import export_detector

    start = time.perf_counter()
    detector = Detector.load(args.checkpoint, device="cpu")
    quantization = None
    if args.precision == "int8":
        from .data import load_mvtec_category
        from .quantize import QuantizeOptions

        if args.data_root is None:
            raise CainnflowError("--precision int8 needs --data-root (it calibrates on the training images)")
        category = args.category or detector.record.category
        if not category:
            raise CainnflowError("the checkpoint does not say its category: give --category")
        quantization = QuantizeOptions(
            data=load_mvtec_category(args.data_root, category),
            max_auroc_drop=args.max_auroc_drop,
            max_image_auroc_drop=args.max_image_auroc_drop,
            max_aupro_drop=args.max_aupro_drop,
            n_synthetic=args.synthetic,
        )
    out = export_detector(
        detector,
        args.out,
        format=args.format,
        image_size=args.image_size,
        precision=args.precision,
        quantization=quantization,
    )
    files = sorted(p for p in out.iterdir() if p.is_file())
    size_mb = sum(p.stat().st_size for p in files) / 1e6
    print(
        f"exported {args.format} {args.precision} to {out} ({', '.join(p.name for p in files)}; {size_mb:.1f} MB) "
        f"in {time.perf_counter() - start:.1f} s; threshold {detector.threshold:.4g}"
    )
    if quantization is not None:
        record = json.loads((out / "export.json").read_text())["quantization"]
        measures = ", ".join(
            f"{k.replace('_', ' ')} {record['fp32'][k]:.4f} -> {record['int8'][k]:.4f}"
            for k in record["fp32"]
        )
        print(f"int8 on {record['accuracy_control']}: {measures}")
    return 0


COMMANDS = {
    "make-demo-data": _cmd_make_demo_data,
    "train": _cmd_train,
    "evaluate": _cmd_evaluate,
    "predict": _cmd_predict,
    "export": _cmd_export,
    "sweep": run_sweep_command,
}


def _export_run_args(argv: Sequence[str] | None) -> argparse.Namespace | None:
    """Arguments of ``evaluate`` / ``predict`` on an export folder, parsed without importing torch.

    None for every other command line (the full parser handles it).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in ("evaluate", "predict"):
        return None
    checkpoint = next((b for a, b in itertools.pairwise(argv) if a == "--checkpoint"), None)
    checkpoint = checkpoint or next((a.split("=", 1)[1] for a in argv if a.startswith("--checkpoint=")), None)
    if checkpoint is None or not Path(checkpoint).is_dir():
        return None
    parser = argparse.ArgumentParser(prog="python -m cainnflow")
    _add_scoring_commands(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line; returns the exit code."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    args = _export_run_args(argv)
    if args is None:
        args = _build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except CainnflowError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
