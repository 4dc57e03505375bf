"""Cross-category table: every demo category (and optionally real ones) × named settings.

    python benchmarks/categories.py                                   # all demo categories, defaults
    python benchmarks/categories.py --settings default paper stages234 --mvtec bottle
    python benchmarks/categories.py --define "s2lr1e-3:steps=2,lr=1e-3" --settings default s2lr1e-3
    python benchmarks/categories.py --categories circuit_board --stages 2 3 4 --epochs 30
    python benchmarks/categories.py --synthetic 20                    # + synthetic-anomaly AUROC
    python benchmarks/categories.py --real-standard --runs 3          # + bottle, bottle-10, magnetic
                                                                      #   tile, magnetic tile-20; worst of 3
    python benchmarks/categories.py --categories --real ROOT:CATEGORY:20   # a real root's first 20 images

Prints image / pixel AUROC and AUPRO per (category, setting) and a markdown table that ends with
the worst row (the lowest value of each column over the categories; with ``--runs N``, each cell
is already the worst of N identical runs). With
``--synthetic N``, 20 % of each category's good training images are held out, the detector
trains on the rest, and N synthetic anomalies pasted into the held-out images are scored
against them (``cainnflow.synthetic``): the figure a settings search can use without the
test split, printed beside the test figures so the two can be compared.

Settings are presets in :data:`SETTINGS` (model and training overrides, or a whole ``fit``
function for settings that choose their own configuration); ``--define`` adds named ones from
the command line, and the pass-through options (``--stages``, ``--epochs``, ``--set k=v`` ...)
apply on top of every setting.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cainnflow  # noqa: F401, I001 - OpenMP settings before torch loads
import numpy as np
import torch
from PIL import Image

from benchmarks.common import DEFAULT_MVTEC_ROOT, DEFAULT_SHARED_DATA, fmt
from cainnflow.autoconfig import MIN_LEAD
from cainnflow.data import CategoryData, load_mvtec_category
from cainnflow.demo_data import DEMO_CATEGORIES, make_demo_dataset
from cainnflow.detector import Detector
from cainnflow.model import CAINNFlowConfig
from cainnflow.synthetic import evaluate_synthetic, make_synthetic_anomalies
from cainnflow.training import TrainConfig

FitFn = Callable[[CategoryData, CAINNFlowConfig, TrainConfig, str], Detector]


@dataclass(frozen=True)
class Setting:
    """A named way to train: overrides of the library defaults, or a whole fit function.

    Attributes:
        name: what the tables call it.
        model: ``CAINNFlowConfig`` field overrides.
        train: ``TrainConfig`` field overrides.
        note: one line on where the setting comes from.
        fit: ``(data, model config, train config, device) -> trained Detector``; None: the
            library's ``Detector.create(config).fit(data, train)``. A setting that picks its own
            configuration (an "auto" mode) plugs in here; it must not read ``data.test``.
    """

    name: str
    model: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    note: str = ""
    fit: FitFn | None = None


def _fit_auto(data: CategoryData, model: CAINNFlowConfig, train: TrainConfig, device: str) -> Detector:
    """``train --auto``: stages and smoothing chosen on synthetic anomalies in held-out goods."""
    from cainnflow.autoconfig import auto_configure

    test_free = replace(data, test=())  # auto-configuration never sees the test split
    detector, report = auto_configure(test_free, model, train, device=device)
    print(
        f"    auto chose stages {report.chosen.stages}, sigma {report.chosen.sigma:g}, {report.chosen.pooling} "
        f"(synthetic image {report.chosen.image_auroc:.3f}, pixel {report.chosen.pixel_auroc:.3f}"
        + (f", AUPRO {report.chosen.aupro:.3f}" if report.chosen.aupro is not None else "")
        + ("; kept the defaults)" if report.kept_defaults else ")"),
        flush=True,
    )
    leads = sorted(
        (c for c in report.candidates if c.lead_low is not None and c.lead_low > 0),
        key=lambda c: -c.objective,
    )
    if leads:
        print(
            f"    leads above zero at the 5 % bound (a change needs > {MIN_LEAD:g}; objective, bound): "
            + ", ".join(f"{c.stages} σ{c.sigma:g} {c.objective:.4f} {c.lead_low:+.4f}" for c in leads),
            flush=True,
        )
    return detector


SETTINGS: dict[str, Setting] = {
    s.name: s
    for s in (
        Setting("default", note="library defaults"),
        Setting(
            "paper",
            model={"steps": 2, "variant": "CAC", "subnet_relu": False},
            train={"lr": 5e-4},
            note="paper: CAC as Eq. 11 (no ReLU), 2 steps per scale, lr 5e-4 (its 750 epochs cut to the default)",
        ),
        Setting("eq11", model={"subnet_relu": False}, note="CAC exactly as the paper's Eq. 11 (no ReLU)"),
        Setting(
            "relu_gate",
            model={"attention_negative_slope": 0.0},
            note="CBAM's channel MLP with the paper's ReLU (the default before the leaky one)",
        ),
        Setting("stages234", model={"out_indices": (2, 3, 4)}, note="deeper backbone stages (2, 3, 4)"),
        Setting("long", train={"max_steps": 1000, "epochs": None}, note="a 1000-step budget"),
        Setting(
            "auto", note="train --auto: chosen on synthetic anomalies in held-out good images", fit=_fit_auto
        ),
    )
}


# --------------------------------------------------------------------------- option parsing

_MODEL_FIELDS = {f.name: f for f in fields(CAINNFlowConfig)}
_TRAIN_FIELDS = {f.name: f for f in fields(TrainConfig)}


def _parse_value(key: str, text: str) -> Any:
    if key == "out_indices":
        return tuple(int(part) for part in text.replace(" ", ",").split(",") if part)
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    return {"none": None, "true": True, "false": False}.get(text.lower(), text)


def parse_assignments(text: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """``"steps=2,lr=1e-3,stages=2 3 4"`` → (model overrides, train overrides)."""
    model: dict[str, Any] = {}
    train: dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in text.split(";" if ";" in text else ","))):
        key, sep, value = item.partition("=")
        key = key.strip().replace("-", "_")
        key = "out_indices" if key == "stages" else key
        if not sep:
            raise SystemExit(f"setting item {item!r} is not key=value")
        if key in _MODEL_FIELDS:
            model[key] = _parse_value(key, value.strip())
        elif key in _TRAIN_FIELDS:
            train[key] = _parse_value(key, value.strip())
        else:
            known = ", ".join([*_MODEL_FIELDS, *_TRAIN_FIELDS])
            raise SystemExit(f"unknown setting key {key!r} (known: {known})")
    return model, train


def add_setting_args(parser: argparse.ArgumentParser, default_settings: Sequence[str] = ("default",)) -> None:
    """Options shared by the benchmarks: presets, named definitions, pass-through overrides."""
    parser.add_argument(
        "--settings",
        nargs="+",
        default=list(default_settings),
        help=f"named settings to run (presets: {', '.join(SETTINGS)}; more with --define)",
    )
    parser.add_argument(
        "--define",
        action="append",
        default=[],
        metavar="NAME:K=V,K=V",
        help='a named setting, e.g. "deep:stages=2 3 4,epochs=30" (use ";" between items when a value has commas)',
    )
    parser.add_argument("--stages", type=int, nargs="+", default=None, help="backbone stages (out_indices)")
    parser.add_argument("--epochs", type=int, default=None, help="exact epochs instead of the step budget")
    parser.add_argument("--max-steps", type=int, default=None, help="optimizer-step budget")
    parser.add_argument("--steps", type=int, default=None, help="coupling steps per scale")
    parser.add_argument("--variant", default=None, help="CA, AC, CAC or CC")
    parser.add_argument("--image-size", type=int, default=None)
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--set", action="append", default=[], metavar="K=V", help="any config field")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=2)


def resolve_settings(args: argparse.Namespace) -> list[Setting]:
    """The settings to run, each with the command line's pass-through overrides applied."""
    known = dict(SETTINGS)
    for definition in args.define:
        name, sep, body = definition.partition(":")
        if not sep or not name.strip():
            raise SystemExit(f"--define needs NAME:K=V,...; got {definition!r}")
        model, train = parse_assignments(body)
        known[name.strip()] = Setting(name.strip(), model, train, note=f"--define {body}")
    model_over: dict[str, Any] = {}
    train_over: dict[str, Any] = {}
    for text in args.set:
        m, t = parse_assignments(text)
        model_over.update(m)
        train_over.update(t)
    for key, value in (("out_indices", args.stages), ("steps", args.steps), ("variant", args.variant)):
        if value is not None:
            model_over[key] = tuple(value) if key == "out_indices" else value
    if args.image_size is not None:
        model_over["image_size"] = args.image_size
    train_args = (("epochs", args.epochs), ("max_steps", args.max_steps), ("lr", args.lr))
    for key, value in (*train_args, ("batch_size", args.batch_size)):
        if value is not None:
            train_over[key] = value
    chosen = []
    for name in args.settings:
        if name not in known:
            raise SystemExit(f"unknown setting {name!r} (known: {', '.join(known)})")
        s = known[name]
        chosen.append(replace(s, model={**s.model, **model_over}, train={**s.train, **train_over}))
    return chosen


def configs(setting: Setting, seed: int = 0) -> tuple[CAINNFlowConfig, TrainConfig]:
    model = CAINNFlowConfig(**{"seed": seed, **setting.model})
    train = TrainConfig(**{"seed": seed, **setting.train})
    return model, train


def train_detector(setting: Setting, data: CategoryData, device: str, seed: int = 0) -> Detector:
    """Trains one detector the way ``setting`` says (on ``data.train`` only)."""
    model, train = configs(setting, seed)
    torch.manual_seed(seed)
    if setting.fit is not None:
        return setting.fit(data, model, train, device)
    detector = Detector.create(model, device=device)
    detector.fit(data, train)
    return detector


def describe(setting: Setting) -> str:
    parts = [f"{k}={v}" for k, v in {**setting.model, **setting.train}.items()]
    text = f"{setting.name}: {', '.join(parts) or 'library defaults'}"
    return text + (f"  ({setting.note})" if setting.note and parts else "")


# --------------------------------------------------------------------------- the table


def synthetic_check(
    setting: Setting, data: CategoryData, n_synthetic: int, device: str, seed: int
) -> tuple[Detector, float | None, float | None]:
    """Holds out 20 % of the good training images, trains on the rest, scores synthetic anomalies."""
    order = np.random.default_rng(seed).permutation(len(data.train))
    n_hold = max(4, round(0.2 * len(data.train)))
    held = [data.train[i] for i in sorted(order[:n_hold].tolist())]
    kept = tuple(data.train[i] for i in sorted(order[n_hold:].tolist()))
    detector = train_detector(setting, replace(data, train=kept), device, seed)
    images = [Image.open(s.path).convert("RGB") for s in held]
    half = len(images) // 2
    samples = make_synthetic_anomalies(images[:half], n_synthetic, seed=seed)
    result = evaluate_synthetic(detector, images[half:], samples)
    return detector, result.image_auroc, result.pixel_auroc


def run(setting: Setting, data: CategoryData, device: str, seed: int, n_synthetic: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    syn_img = syn_px = None
    if n_synthetic > 0:
        detector, syn_img, syn_px = synthetic_check(setting, data, n_synthetic, device, seed)
    else:
        detector = train_detector(setting, data, device, seed)
    train_s = time.perf_counter() - t0
    result = detector.evaluate(data)
    return {
        "category": data.name,
        "setting": setting.name,
        "seed": seed,
        "image_auroc": result.image_auroc,
        "pixel_auroc": result.pixel_auroc,
        "aupro": result.aupro,
        "synthetic_image_auroc": syn_img,
        "synthetic_pixel_auroc": syn_px,
        "train_s": train_s,
        "ms_per_image": result.ms_per_image,
        "per_defect": {row.defect_type: row.image_auroc for row in result.per_defect},
    }


def markdown(rows: list[dict[str, Any]], settings: Sequence[Setting], synthetic: bool) -> str:
    """One row per category (each cell the worst of its identical runs), then the worst row."""
    metrics = [("image_auroc", "img"), ("pixel_auroc", "px"), ("aupro", "AUPRO"), ("train_s", "train s")]
    if synthetic:
        metrics += [("synthetic_image_auroc", "syn img"), ("synthetic_pixel_auroc", "syn px")]
    head = ["category"] + [f"{s.name} {label}" for s in settings for _, label in metrics]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    categories = list(dict.fromkeys(r["category"] for r in rows))
    worst: dict[tuple[str, str], list[float]] = {}
    for category in categories:
        cells = [category]
        for s in settings:
            runs = [r for r in rows if r["category"] == category and r["setting"] == s.name]
            for key, _ in metrics:
                values = [r[key] for r in runs if r[key] is not None]
                if not values:
                    cells.append("—")
                    continue
                value = max(values) if key == "train_s" else min(values)
                worst.setdefault((s.name, key), []).append(value)
                cells.append(f"{value:.0f}" if key == "train_s" else fmt(value))
        lines.append("| " + " | ".join(cells) + " |")
    cells = ["**worst**"]
    for s in settings:
        for key, _ in metrics:
            values = worst.get((s.name, key))
            if not values:
                cells.append("—")
            elif key == "train_s":
                cells.append(f"{max(values):.0f}")
            else:
                cells.append(f"**{fmt(min(values))}**")
    lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def real_dataset(spec: str) -> CategoryData:
    """``ROOT:CATEGORY[:N]`` → the category, its training set cut to its first N good images."""
    parts = spec.rsplit(":", 2)
    if len(parts) == 3 and parts[2].isdigit():
        root, category, n = parts[0], parts[1], int(parts[2])
    else:
        (root, category), n = spec.rsplit(":", 1), None
    data = load_mvtec_category(root, category)
    if n is not None:
        data = replace(data, name=f"{data.name}-{n}", train=data.train[:n])
    return data


STANDARD_REAL = (
    "mvtec_ad:bottle",
    "mvtec_ad:bottle:10",
    "magnetic_tile:magnetic_tile",
    "magnetic_tile:magnetic_tile:20",
)
"""The real sets every change is judged on (paths under the shared data folder)."""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--categories", nargs="*", default=list(DEMO_CATEGORIES), help="demo categories (none: only --mvtec)"
    )
    p.add_argument("--mvtec", nargs="*", default=[], help="real MVTec categories to add, e.g. bottle")
    p.add_argument("--root", type=Path, default=DEFAULT_MVTEC_ROOT, help="MVTec AD root")
    p.add_argument(
        "--demo-root", type=Path, default=None, help="where the demo data is (default: a temp dir)"
    )
    p.add_argument("--demo-size", type=int, default=256, help="demo images' side length when generated")
    p.add_argument(
        "--real",
        action="append",
        default=[],
        metavar="ROOT:CATEGORY[:N]",
        help="a real category (first N good images)",
    )
    p.add_argument(
        "--real-standard",
        action="store_true",
        help="add bottle, bottle-10, magnetic tile and magnetic tile-20 from the shared data folder",
    )
    p.add_argument(
        "--data", type=Path, default=DEFAULT_SHARED_DATA, help="the shared data folder (--real-standard)"
    )
    p.add_argument("--runs", type=int, default=1, help="identical runs per cell (the table shows the worst)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--synthetic", type=int, default=0, metavar="N", help="also score N synthetic anomalies")
    p.add_argument("--json", type=Path, default=None)
    add_setting_args(p)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    settings = resolve_settings(args)
    for s in settings:
        print("#", describe(s))
    demo_root = args.demo_root or Path(tempfile.mkdtemp(prefix="cainnflow-demo-"))
    t0 = time.perf_counter()
    if args.categories:
        make_demo_dataset(demo_root, categories=args.categories, image_size=args.demo_size)
    print(
        f"# demo data: {len(args.categories)} categories in {time.perf_counter() - t0:.1f} s at {demo_root}"
    )
    datasets = [load_mvtec_category(demo_root, c) for c in args.categories]
    datasets += [load_mvtec_category(args.root, c) for c in args.mvtec]
    real = [*(f"{args.data / spec}" for spec in STANDARD_REAL if args.real_standard), *args.real]
    datasets += [real_dataset(spec) for spec in real]
    rows = []
    print(f"{'category':<14} {'setting':<12} {'seed':>4} | {'img':>6} {'pixel':>6} {'aupro':>6} | ", end="")
    print(f"{'syn img':>7} {'syn px':>6} | {'train s':>7} {'ms/img':>6}  per-defect image AUROC")
    for data in datasets:
        for setting in settings:
            for seed in [seed for seed in args.seeds for _ in range(args.runs)]:
                row = run(setting, data, args.device, seed, args.synthetic)
                rows.append(row)
                defects = " ".join(f"{k}={fmt(v, digits=1)}" for k, v in row["per_defect"].items())
                print(
                    f"{row['category']:<14} {row['setting']:<12} {seed:>4} | {fmt(row['image_auroc']):>6} "
                    f"{fmt(row['pixel_auroc']):>6} {fmt(row['aupro']):>6} | "
                    f"{fmt(row['synthetic_image_auroc']):>7} {fmt(row['synthetic_pixel_auroc']):>6} | "
                    f"{row['train_s']:>7.1f} {row['ms_per_image']:>6.1f}  {defects}",
                    flush=True,
                )
    print()
    print(markdown(rows, settings, args.synthetic > 0))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
