"""Deterministic synthetic demo dataset in the MVTec AD layout.

Three categories, generated with vectorised numpy in a few seconds, so the CLI and the app
work with nothing downloaded:

* ``carpet_weave`` (texture): a plain weave with per-thread variation, fibre noise, random
  phase, slight rotation and lighting. Defects: ``cut``, ``hole``, ``stain``, ``thread``.
* ``metal_plate`` (textured surface): brushed metal with panel grooves, lighting gradients
  and grain. Defects: ``dent``, ``scratch``, ``stain``.
* ``pill_disc`` (object): a round scored pill on a dark background with position, rotation,
  size and lighting jitter. Defects: ``chip``, ``contamination``, ``crack``, ``stain``.

Defects are deliberately subtle (low-contrast texture changes, thin scratches, small areas);
``difficulty`` divides their contrast. Every defect image has an exact binary mask in
``ground_truth/<defect>/<stem>_mask.png`` (L mode, 0/255). Example::

    root = make_demo_dataset("demo_data")
    data = load_mvtec_category(root, "carpet_weave")
"""

from __future__ import annotations

import json
import math
import shutil
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image
from scipy import ndimage

from cainnflow.errors import DataError

__all__ = [
    "COMPLETE_MARKER",
    "DEMO_CATEGORIES",
    "DEMO_DEFECTS",
    "DemoSample",
    "demo_dataset_ready",
    "make_demo_dataset",
    "render_demo_sample",
]

DEMO_CATEGORIES: tuple[str, ...] = ("carpet_weave", "metal_plate", "pill_disc")
DEMO_DEFECTS: dict[str, tuple[str, ...]] = {
    "carpet_weave": ("cut", "hole", "stain", "thread"),
    "metal_plate": ("dent", "scratch", "stain"),
    "pill_disc": ("chip", "contamination", "crack", "stain"),
}

COMPLETE_MARKER = ".complete"
STARTED_MARKER = ".cainnflow_demo"
GENERATOR_VERSION = 3
GOOD = "good"

DEFAULT_IMAGE_SIZE = 256
DEFAULT_N_TRAIN = 60
DEFAULT_N_TEST_GOOD = 12
DEFAULT_N_TEST_PER_DEFECT = 8
REFERENCE_SIZE = 256.0  # geometric constants below are in pixels at this size

_BOX_FILTER_MIN_SIGMA = 4.0
_MASK_ALPHA = 0.5  # a pixel is in the mask when its defect opacity reaches this
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


@dataclass(frozen=True)
class _Scene:
    """A rendered normal image plus what defects need to know about it."""

    image: np.ndarray  # float32 (S, S, 3) in [0, 1]
    region: np.ndarray  # float32 (S, S) where defects may go (1 = surface / object)
    background: np.ndarray | None = None  # float32 (S, S, 3) behind an object
    center: tuple[float, float] = (0.0, 0.0)  # (y, x) of the object
    radius: float = 0.0


# --------------------------------------------------------------------------- primitives


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    axis = np.arange(size, dtype=np.float32)
    return axis[:, None] + np.zeros((1, size), np.float32), axis[None, :] + np.zeros((size, 1), np.float32)


def _smooth_noise(
    rng: np.random.Generator, shape: tuple[int, int], sigma: float | tuple[float, float]
) -> np.ndarray:
    """Gaussian-filtered white noise scaled to unit standard deviation, float32 ``shape``.

    Axes with a large sigma use three box-filter passes (a close, much faster approximation).
    """
    noise = rng.standard_normal(shape, dtype=np.float32)
    sigmas = (sigma, sigma) if isinstance(sigma, int | float) else sigma
    for axis, axis_sigma in enumerate(sigmas):
        if axis_sigma >= _BOX_FILTER_MIN_SIGMA:
            width = max(round(math.sqrt(4.0 * axis_sigma**2 + 1.0)), 1)  # 3 boxes ≈ Gaussian
            for _ in range(3):
                noise = ndimage.uniform_filter1d(noise, width, axis=axis, mode="wrap")
        else:
            noise = ndimage.gaussian_filter1d(noise, axis_sigma, axis=axis, mode="wrap", truncate=3.0)
    return noise / max(float(noise.std()), 1e-6)


def _lighting(rng: np.random.Generator, size: int, strength: float) -> np.ndarray:
    """Smooth multiplicative lighting field ``(S, S)`` around 1."""
    yy, xx = _grid(size)
    angle = rng.uniform(0, 2 * math.pi)
    ramp = ((xx * math.cos(angle) + yy * math.sin(angle)) / size - 0.5) * rng.uniform(-1, 1)
    cy, cx = rng.uniform(0.3, 0.7, 2) * size
    vignette = ((yy - cy) ** 2 + (xx - cx) ** 2) / (size**2)
    return (1.0 + strength * (ramp - rng.uniform(0.3, 0.8) * vignette)).astype(np.float32)


def _smoothstep(edge0: float, edge1: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - edge0) / (edge1 - edge0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _blob_alpha(
    rng: np.random.Generator, size: int, center: tuple[float, float], radius: float, softness: float
) -> np.ndarray:
    """Irregular soft blob opacity ``(S, S)``: 1 inside, 0.5 on the boundary, soft edge of width ~``softness``·r."""
    yy, xx = _grid(size)
    dy, dx = yy - center[0], xx - center[1]
    theta = np.arctan2(dy, dx)
    wobble = np.ones_like(theta)
    for harmonic in (2, 3, 5):
        wobble += rng.uniform(0.0, 0.14) * np.cos(harmonic * theta + rng.uniform(0, 2 * math.pi))
    aspect = rng.uniform(0.7, 1.3)
    dist = np.sqrt((dy * aspect) ** 2 + (dx / aspect) ** 2) / (radius * wobble)
    return 1.0 - _smoothstep(1.0 - softness / 2, 1.0 + softness / 2, dist)


def _polyline_alpha(size: int, points: np.ndarray, width: float) -> np.ndarray:
    """Antialiased opacity ``(S, S)`` of a polyline ``(K, 2)`` of (y, x) points with a given width."""
    alpha = np.zeros((size, size), np.float32)
    pad = width + 2.0
    y0, x0 = np.floor(points.min(axis=0) - pad).astype(int).clip(0, size)
    y1, x1 = np.ceil(points.max(axis=0) + pad + 1).astype(int).clip(0, size)
    if y1 <= y0 or x1 <= x0:
        return alpha
    py, px = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    pix = np.stack([py.ravel(), px.ravel()], axis=1)[:, None, :]  # (P, 1, 2)
    a, b = points[:-1][None], points[1:][None]  # (1, K-1, 2)
    ab = b - a
    t = np.clip(((pix - a) * ab).sum(-1) / np.maximum((ab * ab).sum(-1), 1e-6), 0.0, 1.0)
    dist = np.sqrt((((a + t[..., None] * ab) - pix) ** 2).sum(-1)).min(axis=1)
    alpha[y0:y1, x0:x1] = np.clip(width / 2 + 0.5 - dist, 0.0, 1.0).reshape(py.shape)
    return alpha


def _random_curve(
    rng: np.random.Generator,
    start: tuple[float, float],
    length: float,
    bend: float,
    jitter: float,
    n_points: int = 24,
) -> np.ndarray:
    """Points ``(n_points, 2)`` of a bent (quadratic Bezier) curve with optional jagged jitter."""
    angle = rng.uniform(0, 2 * math.pi)
    p0 = np.asarray(start, np.float32)
    direction = np.array([math.sin(angle), math.cos(angle)], np.float32)
    normal = np.array([direction[1], -direction[0]], np.float32)
    p2 = p0 + direction * length
    p1 = (p0 + p2) / 2 + normal * length * rng.uniform(-bend, bend)
    t = np.linspace(0.0, 1.0, n_points, dtype=np.float32)[:, None]
    curve = (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t**2 * p2
    if jitter > 0:
        curve += normal * np.cumsum(rng.normal(0, jitter, (n_points, 1)), axis=0).astype(np.float32)
    return curve


def _blend(image: np.ndarray, target: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    return image * (1.0 - alpha[..., None]) + target * alpha[..., None]


def _point_in_region(rng: np.random.Generator, scene: _Scene, margin: float) -> tuple[float, float]:
    """A random (y, x) point on the scene's defect region, at least ``margin`` from the border."""
    size = scene.image.shape[0]
    if scene.radius > 0:
        r = scene.radius * math.sqrt(rng.uniform(0, 1)) * 0.75
        a = rng.uniform(0, 2 * math.pi)
        return scene.center[0] + r * math.sin(a), scene.center[1] + r * math.cos(a)
    low, high = margin, size - margin
    return float(rng.uniform(low, high)), float(rng.uniform(low, high))


# --------------------------------------------------------------------------- normal scenes


def _carpet(rng: np.random.Generator, size: int) -> _Scene:
    scale = size / REFERENCE_SIZE
    yy, xx = _grid(size)
    period = 9.0 * scale * rng.uniform(0.96, 1.04)
    angle = math.radians(rng.uniform(-3.0, 3.0))
    u = xx * math.cos(angle) + yy * math.sin(angle) + rng.uniform(0, 2 * period)
    v = -xx * math.sin(angle) + yy * math.cos(angle) + rng.uniform(0, 2 * period)
    cu, cv = np.floor(u / period).astype(np.int64), np.floor(v / period).astype(np.int64)
    fu, fv = u / period - cu, v / period - cv
    over = (cu + cv) % 2 == 0
    n_threads = int(size / period) + 8
    warp_var = rng.normal(0, 0.06, n_threads * 2).astype(np.float32)[(cu % (n_threads * 2))]
    weft_var = rng.normal(0, 0.06, n_threads * 2).astype(np.float32)[(cv % (n_threads * 2))]
    fibre_u = _smooth_noise(rng, (size, size), (0.6, 3.0 * scale))
    fibre_v = _smooth_noise(rng, (size, size), (3.0 * scale, 0.6))
    height = np.where(
        over,
        np.sin(math.pi * fu) ** 0.8 * (1 + warp_var) + 0.10 * fibre_v,
        np.sin(math.pi * fv) ** 0.8 * (1 + weft_var) + 0.10 * fibre_u,
    ).astype(np.float32)
    base = np.array([0.62, 0.42, 0.30], np.float32) * rng.uniform(0.95, 1.05, 3).astype(np.float32)
    warp_tint = np.array([1.0, 1.0, 1.0], np.float32)
    weft_tint = np.array([0.97, 1.02, 1.03], np.float32)
    tint = np.where(over[..., None], warp_tint, weft_tint)
    light = _lighting(rng, size, 0.12)
    image = base * tint * (0.45 + 0.55 * height[..., None]) * light[..., None]
    image += 0.02 * rng.standard_normal(image.shape, dtype=np.float32)
    return _Scene(image=image.astype(np.float32), region=np.ones((size, size), np.float32))


def _metal(rng: np.random.Generator, size: int) -> _Scene:
    scale = size / REFERENCE_SIZE
    yy, xx = _grid(size)
    brushed = _smooth_noise(rng, (size, size), (0.7 * scale, 30.0 * scale))
    grain = _smooth_noise(rng, (size, size), 1.2 * scale)
    gray = rng.uniform(0.52, 0.60) + 0.05 * brushed + 0.015 * grain
    pitch = 96.0 * scale
    offset_y, offset_x = rng.uniform(0, pitch, 2)
    groove_y = np.abs(((yy + offset_y) % pitch) - pitch / 2) - (pitch / 2 - 1.5 * scale)
    groove_x = np.abs(((xx + offset_x) % pitch) - pitch / 2) - (pitch / 2 - 1.5 * scale)
    groove = np.clip(np.maximum(groove_y, groove_x) / (1.5 * scale), 0, 1)
    gray = gray * (1 - 0.25 * groove)
    tint = np.array([0.98, 1.0, 1.03], np.float32) * rng.uniform(0.98, 1.02, 3).astype(np.float32)
    light = _lighting(rng, size, 0.2)
    image = gray[..., None] * tint * light[..., None]
    image += 0.015 * rng.standard_normal(image.shape, dtype=np.float32)
    return _Scene(image=image.astype(np.float32), region=np.ones((size, size), np.float32))


def _pill(rng: np.random.Generator, size: int) -> _Scene:
    scale = size / REFERENCE_SIZE
    yy, xx = _grid(size)
    bg_gray = rng.uniform(0.16, 0.22) + 0.02 * _smooth_noise(rng, (size, size), 6 * scale)
    background = bg_gray[..., None] * np.array([0.9, 0.95, 1.1], np.float32)
    background = background + 0.012 * rng.standard_normal(background.shape, dtype=np.float32)
    cy, cx = size / 2 + rng.uniform(-0.035, 0.035, 2) * size
    radius = 0.33 * size * rng.uniform(0.97, 1.03)
    dist = np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2)
    disc = 1.0 - _smoothstep(radius - 1.0, radius + 1.0, dist)
    shadow_d = np.sqrt((yy - cy - 4 * scale) ** 2 + (xx - cx - 3 * scale) ** 2)
    shadow = 1.0 - 0.45 * (1.0 - _smoothstep(radius - 2, radius + 8 * scale, shadow_d))
    background = background * shadow[..., None]
    r2 = (dist / radius) ** 2
    lx, ly = rng.uniform(-0.3, 0.3, 2)
    shade = 1.0 - 0.18 * r2 + 0.06 * ((xx - cx) * lx + (yy - cy) * ly) / radius
    speckle = _smooth_noise(rng, (size, size), 0.8 * scale)
    mottling = _smooth_noise(rng, (size, size), 5.0 * scale)
    colour = np.array([0.93, 0.90, 0.83], np.float32) * rng.uniform(0.97, 1.03, 3).astype(np.float32)
    pill = colour * (shade + 0.02 * speckle + 0.015 * mottling)[..., None]
    angle = math.radians(rng.uniform(-12, 12))
    across = (yy - cy) * math.cos(angle) - (xx - cx) * math.sin(angle)
    score_line = np.exp(-0.5 * (across / (1.3 * scale)) ** 2) * (dist < radius * 0.9)
    pill = pill * (1.0 - 0.14 * score_line)[..., None]
    light = _lighting(rng, size, 0.08)[..., None]
    image = _blend(background, pill, disc) * light
    region = (disc > _MASK_ALPHA).astype(np.float32)
    return _Scene(
        image=image.astype(np.float32),
        region=region,
        background=(background * light).astype(np.float32),
        center=(float(cy), float(cx)),
        radius=float(radius),
    )


# --------------------------------------------------------------------------- defects

# A defect takes (rng, scene, contrast) and returns (image float (S, S, 3), alpha (S, S)).
_DefectFn = Callable[[np.random.Generator, _Scene, float], tuple[np.ndarray, np.ndarray]]


def _scaled(scene: _Scene) -> float:
    return scene.image.shape[0] / REFERENCE_SIZE


def _stain(
    rng: np.random.Generator,
    scene: _Scene,
    contrast: float,
    colour: tuple[float, float, float],
    strength: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Soft blob that shifts colour slightly and smooths / alters the local texture."""
    size, s = scene.image.shape[0], _scaled(scene)
    radius = rng.uniform(10, 34) * s
    alpha = _blob_alpha(rng, size, _point_in_region(rng, scene, radius + 4), radius, softness=0.5)
    alpha *= scene.region
    smooth = ndimage.gaussian_filter(scene.image, (1.0 * s, 1.0 * s, 0))
    mottle = 1.0 + 0.12 * _smooth_noise(rng, (size, size), 2 * s)[..., None]
    tinted = (0.5 * smooth + 0.5 * scene.image) * (1 - strength) + np.asarray(colour, np.float32) * strength
    return _blend(scene.image, tinted * mottle, np.clip(alpha * contrast, 0, 1)), alpha


def _line(
    rng: np.random.Generator,
    scene: _Scene,
    length: tuple[float, float],
    width: tuple[float, float],
    bend: float = 0.25,
    jitter: float = 0.0,
) -> np.ndarray:
    size, s = scene.image.shape[0], _scaled(scene)
    curve = _random_curve(
        rng, _point_in_region(rng, scene, 40 * s), rng.uniform(*length) * s, bend, jitter * s
    )
    return _polyline_alpha(size, curve, rng.uniform(*width) * s) * scene.region


def _carpet_cut(rng: np.random.Generator, scene: _Scene, contrast: float) -> tuple[np.ndarray, np.ndarray]:
    alpha = _line(rng, scene, (35, 90), (2.5, 4.0), jitter=0.6)
    frayed = scene.image * (0.5 + 0.1 * _smooth_noise(rng, alpha.shape, 1.0)[..., None])
    return _blend(scene.image, frayed, np.clip(alpha * contrast, 0, 1)), alpha


def _carpet_hole(rng: np.random.Generator, scene: _Scene, contrast: float) -> tuple[np.ndarray, np.ndarray]:
    size, s = scene.image.shape[0], _scaled(scene)
    radius = rng.uniform(5, 16) * s
    alpha = _blob_alpha(rng, size, _point_in_region(rng, scene, radius + 4), radius, softness=0.3)
    backing = (
        np.array([0.16, 0.12, 0.10], np.float32) * (1 + 0.2 * _smooth_noise(rng, alpha.shape, 1.0))[..., None]
    )
    return _blend(scene.image, backing, np.clip(alpha * 0.85 * contrast, 0, 1)), alpha


def _carpet_stain(rng: np.random.Generator, scene: _Scene, contrast: float) -> tuple[np.ndarray, np.ndarray]:
    return _stain(rng, scene, contrast, (0.30, 0.20, 0.16), 0.45)


def _carpet_thread(rng: np.random.Generator, scene: _Scene, contrast: float) -> tuple[np.ndarray, np.ndarray]:
    alpha = _line(rng, scene, (40, 120), (1.8, 2.8), bend=0.5)
    colour = np.array([0.38, 0.42, 0.55], np.float32) * (0.9 + 0.2 * rng.random())
    return _blend(
        scene.image, np.broadcast_to(colour, scene.image.shape), np.clip(alpha * 0.8 * contrast, 0, 1)
    ), alpha


def _metal_scratch(rng: np.random.Generator, scene: _Scene, contrast: float) -> tuple[np.ndarray, np.ndarray]:
    alpha = _line(rng, scene, (30, 130), (1.0, 2.2), bend=0.15)
    sign = 1.0 if rng.random() < 0.7 else -1.0
    target = scene.image + sign * rng.uniform(0.10, 0.18)
    return _blend(scene.image, target, np.clip(alpha * contrast, 0, 1)), alpha


def _metal_dent(rng: np.random.Generator, scene: _Scene, contrast: float) -> tuple[np.ndarray, np.ndarray]:
    size, s = scene.image.shape[0], _scaled(scene)
    radius = rng.uniform(9, 26) * s
    center = _point_in_region(rng, scene, radius + 4)
    alpha = _blob_alpha(rng, size, center, radius, softness=0.8)
    gy, gx = np.gradient(ndimage.gaussian_filter(alpha, 1.5 * s))
    angle = rng.uniform(0, 2 * math.pi)
    shading = (gy * math.sin(angle) + gx * math.cos(angle)) * radius * 0.12 - 0.03 * alpha
    return np.clip(scene.image + (shading * contrast)[..., None], 0, None), alpha


def _metal_stain(rng: np.random.Generator, scene: _Scene, contrast: float) -> tuple[np.ndarray, np.ndarray]:
    return _stain(rng, scene, contrast, (0.55, 0.38, 0.26), 0.35)


def _pill_chip(rng: np.random.Generator, scene: _Scene, contrast: float) -> tuple[np.ndarray, np.ndarray]:
    assert scene.background is not None
    size, s = scene.image.shape[0], _scaled(scene)
    angle = rng.uniform(0, 2 * math.pi)
    chip_r = rng.uniform(10, 24) * s
    reach = scene.radius + chip_r * rng.uniform(-0.3, 0.3)
    center = (scene.center[0] + reach * math.sin(angle), scene.center[1] + reach * math.cos(angle))
    chip = _blob_alpha(rng, size, center, chip_r, softness=0.15)
    alpha = chip * scene.region
    return _blend(scene.image, scene.background, np.clip(alpha * 0.9 * contrast, 0, 1)), alpha


def _pill_contamination(
    rng: np.random.Generator, scene: _Scene, contrast: float
) -> tuple[np.ndarray, np.ndarray]:
    size, s = scene.image.shape[0], _scaled(scene)
    radius = rng.uniform(3, 9) * s
    alpha = _blob_alpha(rng, size, _point_in_region(rng, scene, radius), radius, softness=0.4) * scene.region
    colour = np.array([[0.45, 0.32, 0.22], [0.35, 0.40, 0.55], [0.30, 0.30, 0.30]], np.float32)[
        rng.integers(3)
    ]
    return _blend(
        scene.image, np.broadcast_to(colour, scene.image.shape), np.clip(alpha * 0.5 * contrast, 0, 1)
    ), alpha


def _pill_crack(rng: np.random.Generator, scene: _Scene, contrast: float) -> tuple[np.ndarray, np.ndarray]:
    alpha = _line(rng, scene, (20, 70), (1.0, 1.8), bend=0.3, jitter=0.9)
    return _blend(scene.image, scene.image * 0.74, np.clip(alpha * contrast, 0, 1)), alpha


def _pill_stain(rng: np.random.Generator, scene: _Scene, contrast: float) -> tuple[np.ndarray, np.ndarray]:
    return _stain(rng, scene, contrast, (0.85, 0.68, 0.38), 0.35)


_SCENES: dict[str, Callable[[np.random.Generator, int], _Scene]] = {
    "carpet_weave": _carpet,
    "metal_plate": _metal,
    "pill_disc": _pill,
}
_DEFECTS: dict[str, dict[str, _DefectFn]] = {
    "carpet_weave": {
        "cut": _carpet_cut,
        "hole": _carpet_hole,
        "stain": _carpet_stain,
        "thread": _carpet_thread,
    },
    "metal_plate": {"dent": _metal_dent, "scratch": _metal_scratch, "stain": _metal_stain},
    "pill_disc": {
        "chip": _pill_chip,
        "contamination": _pill_contamination,
        "crack": _pill_crack,
        "stain": _pill_stain,
    },
}
_MIN_MASK_PIXELS = 4
_MAX_DEFECT_TRIES = 20


# --------------------------------------------------------------------------- public API


def _to_uint8(image: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(image * _UINT8_MAX), 0, _UINT8_MAX).astype(np.uint8)


def _check_category(category: str) -> None:
    if category not in _SCENES:
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
    if defect != GOOD and defect not in _DEFECTS[category]:
        raise DataError(f"unknown defect {defect!r} for demo category {category}")
    if difficulty <= 0:
        raise ValueError(f"difficulty must be positive, got {difficulty}")
    defect_code = 0 if defect == GOOD else 1 + sorted(_DEFECTS[category]).index(defect)
    rng = np.random.default_rng(
        [seed, zlib.crc32(category.encode()), _SPLIT_CODES[split], defect_code, index, image_size]
    )
    scene = _SCENES[category](rng, image_size)
    clean = _to_uint8(scene.image)
    if defect == GOOD:
        return DemoSample(image=clean, clean=clean, mask=np.zeros((image_size, image_size), bool))
    contrast = 1.0 / difficulty
    for _ in range(_MAX_DEFECT_TRIES):
        image, alpha = _DEFECTS[category][defect](rng, scene, contrast)
        mask = alpha >= _MASK_ALPHA
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


def _write_category(cat_dir: Path, category: str, params: dict) -> None:
    if cat_dir.exists():
        if not (cat_dir / STARTED_MARKER).exists() and any(cat_dir.iterdir()):
            raise DataError(f"refusing to overwrite {cat_dir}: it exists and was not generated by cainnflow")
        shutil.rmtree(cat_dir)
    cat_dir.mkdir(parents=True)
    (cat_dir / STARTED_MARKER).write_text("generated by cainnflow.demo_data\n", encoding="utf-8")
    common = {"seed": params["seed"], "image_size": params["image_size"], "difficulty": params["difficulty"]}
    jobs: list[tuple[str, str, int]] = [("train", GOOD, i) for i in range(params["n_train"])]
    jobs += [("test", GOOD, i) for i in range(params["n_test_good"])]
    jobs += [("test", d, i) for d in DEMO_DEFECTS[category] for i in range(params["n_test_per_defect"])]
    for split, defect, index in jobs:
        sample = render_demo_sample(category, split=split, defect=defect, index=index, **common)
        folder = cat_dir / split / defect
        folder.mkdir(parents=True, exist_ok=True)
        stem = f"{index:03d}"
        _save_png(sample.image, folder / f"{stem}.png", "RGB")
        if defect != GOOD:
            gt_folder = cat_dir / "ground_truth" / defect
            gt_folder.mkdir(parents=True, exist_ok=True)
            _save_png(sample.mask.astype(np.uint8) * _UINT8_MAX, gt_folder / f"{stem}_mask.png", "L")
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
    out.mkdir(parents=True, exist_ok=True)
    (out / "README.txt").write_text(_README.format(seed=seed, version=GENERATOR_VERSION), encoding="utf-8")
    for category in categories:
        cat_dir = out / category
        if _read_marker(cat_dir) == params:
            continue
        _write_category(cat_dir, category, params)
    return out


def demo_dataset_ready(out_dir: str | Path, *, categories: Sequence[str] = DEMO_CATEGORIES) -> bool:
    """True when every requested demo category under ``out_dir`` was completely written."""
    out = Path(out_dir)
    return all(_read_marker(out / category) is not None for category in categories)
