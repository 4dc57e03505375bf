"""Rendering one demo sample and writing the dataset in the MVTec AD layout (deterministic)."""

from __future__ import annotations

import json
import os
import shutil
import zlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image

from ..errors import DataError
from .registry import CATEGORIES, DEMO_CATEGORIES
from .scene import MASK_ALPHA

COMPLETE_MARKER = ".complete"
TEST_SPLIT_MARKER = ".test_complete"  # the test split is written first (an app can show it early)
STARTED_MARKER = ".cainnflow_demo"
GENERATOR_VERSION = 3
GOOD = "good"
DEFAULT_IMAGE_SIZE = 256
DEFAULT_N_TRAIN = 60
MAX_WORKERS = 4
DEFAULT_N_TEST_GOOD = 12
DEFAULT_N_TEST_PER_DEFECT = 8
_UINT8_MAX = 255
_SPLIT_CODES = {"train": 0, "test": 1}
_README = """\
Synthetic anomaly-detection demo data
=====================================

Every image in this folder is synthetic: it was generated procedurally by cainnflow
(cainnflow.demo_data.make_demo_dataset, seed {seed}, generator version {version}).
It contains no real photographs. It may be used under the same license as cainnflow.

Layout follows MVTec AD: <category>/train/good, <category>/test/<good|defect>,
<category>/ground_truth/<defect>/<stem>_mask.png (0 = normal, 255 = defect).
"""


class DemoSample(NamedTuple):
    """One rendered demo image.

    Attributes:
        image: uint8 ``(S, S, 3)`` image (with the defect, if any).
        clean: uint8 ``(S, S, 3)`` the same image before the defect was applied.
        mask: bool ``(S, S)`` defect mask (all False for good images).
    """

    image: np.ndarray
    clean: np.ndarray
    mask: np.ndarray


_MIN_MASK_PIXELS = 4
_MAX_DEFECT_TRIES = 20


def _to_uint8(image: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(image * _UINT8_MAX), 0, _UINT8_MAX).astype(np.uint8)


def _check_category(category: str) -> None:
    if category not in CATEGORIES:
        raise DataError(f"unknown demo category {category!r} (available: {', '.join(DEMO_CATEGORIES)})")


def render_demo_sample(
    category: str,
    *,
    seed: int = 0,
    split: str = "train",
    defect: str = GOOD,
    index: int = 0,
    image_size: int = DEFAULT_IMAGE_SIZE,
    difficulty: float = 1.0,
) -> DemoSample:
    """Render one demo image deterministically (what :func:`make_demo_dataset` writes).

    Args:
        category: One of :data:`DEMO_CATEGORIES`.
        seed: Dataset seed.
        split: ``"train"`` or ``"test"``.
        defect: ``"good"`` or one of ``DEMO_DEFECTS[category]``.
        index: Image number within its folder.
        image_size: Side length ``S``.
        difficulty: Divides the defect contrast (> 1 subtler, < 1 more obvious).

    Returns:
        The image, its defect-free version and the mask.
    """
    _check_category(category)
    spec = CATEGORIES[category]
    if defect != GOOD and defect not in spec.defects:
        raise DataError(f"unknown defect {defect!r} for demo category {category}")
    if difficulty <= 0:
        raise ValueError(f"difficulty must be positive, got {difficulty}")
    defect_code = 0 if defect == GOOD else 1 + sorted(spec.defects).index(defect)
    rng = np.random.default_rng(
        [seed, zlib.crc32(category.encode()), _SPLIT_CODES[split], defect_code, index, image_size]
    )
    scene = spec.scene(rng, image_size)
    clean = _to_uint8(scene.image)
    if defect == GOOD:
        return DemoSample(image=clean, clean=clean, mask=np.zeros((image_size, image_size), bool))
    contrast = 1.0 / difficulty
    for _ in range(_MAX_DEFECT_TRIES):
        image, alpha = spec.defects[defect](rng, scene, contrast)
        mask = alpha >= MASK_ALPHA
        if mask.sum() >= _MIN_MASK_PIXELS:
            return DemoSample(image=_to_uint8(image), clean=clean, mask=mask)
    raise RuntimeError(f"could not place a {defect} defect on {category} image {index}")  # pragma: no cover


def _params(
    seed: int, image_size: int, n_train: int, n_test_good: int, n_test_per_defect: int, difficulty: float
) -> dict:
    return {
        "generator_version": GENERATOR_VERSION,
        "seed": seed,
        "image_size": image_size,
        "n_train": n_train,
        "n_test_good": n_test_good,
        "n_test_per_defect": n_test_per_defect,
        "difficulty": difficulty,
    }


def _read_marker(cat_dir: Path) -> dict | None:
    try:
        return json.loads((cat_dir / COMPLETE_MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _save_png(array: np.ndarray, path: Path, mode: str) -> None:
    Image.fromarray(array, mode=mode).save(path, format="PNG", compress_level=1)


def _write_sample(cat_dir: Path, category: str, common: dict, job: tuple[str, str, int]) -> None:
    split, defect, index = job
    sample = render_demo_sample(category, split=split, defect=defect, index=index, **common)
    folder = cat_dir / split / defect
    folder.mkdir(parents=True, exist_ok=True)
    stem = f"{index:03d}"
    _save_png(sample.image, folder / f"{stem}.png", "RGB")
    if defect != GOOD:
        gt_folder = cat_dir / "ground_truth" / defect
        gt_folder.mkdir(parents=True, exist_ok=True)
        _save_png(sample.mask.astype(np.uint8) * _UINT8_MAX, gt_folder / f"{stem}_mask.png", "L")


def _write_category(cat_dir: Path, category: str, params: dict, workers: int) -> None:
    if cat_dir.exists():
        if not (cat_dir / STARTED_MARKER).exists() and any(cat_dir.iterdir()):
            raise DataError(f"refusing to overwrite {cat_dir}: it exists and was not generated by cainnflow")
        shutil.rmtree(cat_dir)
    cat_dir.mkdir(parents=True)
    (cat_dir / STARTED_MARKER).write_text("generated by cainnflow.demo_data\n", encoding="utf-8")
    common = {"seed": params["seed"], "image_size": params["image_size"], "difficulty": params["difficulty"]}
    test_jobs: list[tuple[str, str, int]] = [("test", GOOD, i) for i in range(params["n_test_good"])]
    test_jobs += [
        ("test", d, i) for d in CATEGORIES[category].defects for i in range(params["n_test_per_defect"])
    ]
    train_jobs = [("train", GOOD, i) for i in range(params["n_train"])]
    # Every sample depends only on its own (split, defect, index): threads give the same bytes.
    # numpy, scipy and zlib release the GIL, so 2 threads nearly halve the time on 2 cores.
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for jobs, marker in ((test_jobs, TEST_SPLIT_MARKER), (train_jobs, None)):
            for _ in pool.map(lambda job: _write_sample(cat_dir, category, common, job), jobs):
                pass
            if marker:
                (cat_dir / marker).write_text("test split written\n", encoding="utf-8")
    (cat_dir / COMPLETE_MARKER).write_text(json.dumps(params, sort_keys=True), encoding="utf-8")


def make_demo_dataset(
    out_dir: str | Path,
    *,
    seed: int = 0,
    categories: Sequence[str] = DEMO_CATEGORIES,
    image_size: int = DEFAULT_IMAGE_SIZE,
    n_train: int = DEFAULT_N_TRAIN,
    n_test_good: int = DEFAULT_N_TEST_GOOD,
    n_test_per_defect: int = DEFAULT_N_TEST_PER_DEFECT,
    difficulty: float = 1.0,
    workers: int | None = None,
) -> Path:
    """Write the synthetic demo dataset in the MVTec AD layout (``out_dir/<category>/...``).

    Deterministic (same arguments → same bytes) and idempotent: a category whose
    ``.complete`` marker records the same parameters is skipped; a half-written one (no
    marker) or one made with other parameters is regenerated.

    Args:
        out_dir: Dataset root to write.
        seed: Random seed.
        categories: Which of :data:`DEMO_CATEGORIES` to write.
        image_size: Image side length in pixels.
        n_train: Good training images per category.
        n_test_good: Good test images per category.
        n_test_per_defect: Test images per defect type.
        difficulty: Divides the defect contrast (> 1 subtler, < 1 more obvious).
        workers: Threads rendering and writing images (default: the CPU count, at most
            :data:`MAX_WORKERS`); the bytes written do not depend on it.

    Returns:
        ``out_dir`` as a Path.

    Raises:
        DataError: unknown category, bad counts, or a foreign folder in the way.
    """
    out = Path(out_dir)
    for category in categories:
        _check_category(category)
    if n_train < 1 or n_test_good < 0 or n_test_per_defect < 0:
        raise DataError("n_train must be at least 1 and the test counts non-negative")
    if image_size < 32:
        raise DataError(f"image_size must be at least 32 pixels, got {image_size}")
    if difficulty <= 0:
        raise ValueError(f"difficulty must be positive, got {difficulty}")
    params = _params(seed, image_size, n_train, n_test_good, n_test_per_defect, float(difficulty))
    threads = max(1, min(MAX_WORKERS, workers or os.cpu_count() or 1))
    out.mkdir(parents=True, exist_ok=True)
    (out / "README.txt").write_text(_README.format(seed=seed, version=GENERATOR_VERSION), encoding="utf-8")
    for category in categories:
        cat_dir = out / category
        if _read_marker(cat_dir) == params:
            continue
        _write_category(cat_dir, category, params, threads)
    return out


def demo_test_split_ready(out_dir: str | Path, category: str) -> bool:
    """True when a demo category's test split is completely written (its training images may not be)."""
    cat_dir = Path(out_dir) / category
    return (cat_dir / TEST_SPLIT_MARKER).is_file() or _read_marker(cat_dir) is not None


def demo_dataset_ready(out_dir: str | Path, *, categories: Sequence[str] = DEMO_CATEGORIES) -> bool:
    """True when every requested demo category under ``out_dir`` was completely written."""
    out = Path(out_dir)
    return all(_read_marker(out / category) is not None for category in categories)
