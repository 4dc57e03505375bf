"""Deterministic synthetic demo dataset in the MVTec AD layout.

Five categories, generated with vectorised numpy in a few seconds, so the CLI and the app
work with nothing downloaded:

* ``carpet_weave`` (texture): a plain weave with per-thread variation, fibre noise, random
  phase, slight rotation and lighting. Defects: ``cut``, ``hole``, ``stain``, ``thread``.
* ``metal_plate`` (textured surface): brushed metal with panel grooves, lighting gradients
  and grain. Defects: ``dent``, ``scratch``, ``stain``.
* ``pill_disc`` (object): a round scored pill on a dark background with position, rotation,
  size and lighting jitter. Defects: ``chip``, ``contamination``, ``crack``, ``stain``.
* ``circuit_board`` (object, fixed layout): a populated board (chip, capacitors, resistors,
  LED, connector on pads and silkscreen) with small pose jitter. Structural defects:
  ``missing`` (a part gone, its pads bare), ``shifted``, ``rotated``, ``extra`` (a part
  where none belongs).
* ``blister_pack`` (object, fixed layout): a 3 × 4 blister of round tablets. Structural and
  logical defects: ``empty`` (a pocket without its tablet), ``shifted``, ``extra`` (a tablet
  between the pockets), ``wrong_pill`` (another tablet or a capsule in a pocket).

The structural defects are about layout, not local texture; their mask is the edited part's
footprint before and after the edit (a shifted part: old and new place).

Defects are deliberately subtle (low-contrast texture changes, thin scratches, small areas);
``difficulty`` divides their contrast (in the structural categories: how far a part is
shifted or turned). Every defect image has an exact binary mask in
``ground_truth/<defect>/<stem>_mask.png`` (L mode, 0/255). Example::

    root = make_demo_dataset("demo_data")
    data = load_mvtec_category(root, "carpet_weave")
"""

from __future__ import annotations

import json
import math
import os
import shutil
import zlib
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
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
    "TEST_SPLIT_MARKER",
    "DemoSample",
    "demo_dataset_ready",
    "demo_test_split_ready",
    "make_demo_dataset",
    "render_demo_sample",
]

DEMO_CATEGORIES: tuple[str, ...] = (
    "carpet_weave",
    "metal_plate",
    "pill_disc",
    "circuit_board",
    "blister_pack",
)
DEMO_DEFECTS: dict[str, tuple[str, ...]] = {
    "carpet_weave": ("cut", "hole", "stain", "thread"),
    "metal_plate": ("dent", "scratch", "stain"),
    "pill_disc": ("chip", "contamination", "crack", "stain"),
    "circuit_board": ("missing", "shifted", "rotated", "extra"),
    "blister_pack": ("empty", "shifted", "extra", "wrong_pill"),
}

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
    layout: _Layout | None = None  # the parts of a structural scene


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


# --------------------------------------------------------------------------- structural scenes
#
# Objects with a fixed layout of parts (a populated circuit board, a blister pack). A scene is
# a base layer (board or card, pads, pockets) plus a tuple of parts painted on top; a
# structural defect edits the parts (removes, moves, turns, adds or swaps one) and paints
# again over the same base, noise and lighting, so only the edited parts' pixels change.
# The mask is the footprint of the edited part, before and after the edit.

_SHADOW_OFFSET = 2.0  # reference pixels, down-right
_SHADOW_DARKNESS = 0.35
_PART_JITTER = 0.6  # reference pixels of normal placement jitter
_PART_ANGLE_JITTER = 1.0  # degrees
_LAYOUT_SHIFT = 3.0  # reference pixels of normal whole-object translation
_LAYOUT_ANGLE = 1.5  # degrees of normal whole-object rotation


@dataclass(frozen=True)
class _Part:
    """One placed part: centre and extent in image pixels, angle in radians.

    ``height`` runs along the part's own u axis (image y at angle 0), ``width`` along v.
    """

    kind: str
    cy: float
    cx: float
    height: float
    width: float
    angle: float = 0.0
    style: int = 0

    def moved(self, dy: float = 0.0, dx: float = 0.0, turn: float = 0.0) -> _Part:
        return _Part(
            self.kind, self.cy + dy, self.cx + dx, self.height, self.width, self.angle + turn, self.style
        )


@dataclass(frozen=True)
class _Layout:
    """What a structural defect needs to repaint a scene."""

    base: np.ndarray  # float32 (S, S, 3): everything below the parts
    light: np.ndarray  # float32 (S, S) multiplicative lighting
    noise: np.ndarray  # float32 (S, S, 3) additive sensor noise
    parts: tuple[_Part, ...]
    spares: tuple[_Part, ...]  # parts an "extra" defect may add (free spots of the layout)
    substitutes: tuple[_Part, ...]  # wrong parts a swap may put in a part's place (centred at 0, 0)
    scale: float


class _Frame(NamedTuple):
    """Local coordinates of a part over its bounding box."""

    rows: slice
    cols: slice
    u: np.ndarray  # float32 (h, w) along the part's height axis
    v: np.ndarray  # float32 (h, w) along its width axis


def _frame(size: int, cy: float, cx: float, angle: float, reach: float) -> _Frame | None:
    y0, y1 = max(math.floor(cy - reach), 0), min(math.ceil(cy + reach) + 1, size)
    x0, x1 = max(math.floor(cx - reach), 0), min(math.ceil(cx + reach) + 1, size)
    if y1 <= y0 or x1 <= x0:
        return None
    dy = np.arange(y0, y1, dtype=np.float32)[:, None] - np.float32(cy)
    dx = np.arange(x0, x1, dtype=np.float32)[None, :] - np.float32(cx)
    cos, sin = np.float32(math.cos(angle)), np.float32(math.sin(angle))
    return _Frame(slice(y0, y1), slice(x0, x1), dy * cos + dx * sin, dx * cos - dy * sin)


def _box_sdf(u: np.ndarray, v: np.ndarray, half_h: float, half_w: float, radius: float = 0.0) -> np.ndarray:
    """Signed distance (pixels, negative inside) to a rounded rectangle centred at the origin."""
    radius = min(radius, half_h, half_w)
    qu, qv = np.abs(u) - half_h + radius, np.abs(v) - half_w + radius
    outside = np.sqrt(np.maximum(qu, 0.0) ** 2 + np.maximum(qv, 0.0) ** 2)
    return outside + np.minimum(np.maximum(qu, qv), 0.0) - radius


def _disc_sdf(u: np.ndarray, v: np.ndarray, radius: float) -> np.ndarray:
    return np.sqrt(u * u + v * v) - radius


def _cover(sdf: np.ndarray) -> np.ndarray:
    """Antialiased coverage of the inside of a signed distance field."""
    return np.clip(0.5 - sdf, 0.0, 1.0)


def _outline(sdf: np.ndarray, width: float) -> np.ndarray:
    """Antialiased coverage of a line of ``width`` pixels along the zero level of ``sdf``."""
    return np.clip(width / 2 + 0.5 - np.abs(sdf), 0.0, 1.0)


def _fill(shape: tuple[int, ...], colour: Sequence[float]) -> np.ndarray:
    return np.broadcast_to(np.asarray(colour, np.float32), (*shape, 3)).copy()


def _paint(canvas: np.ndarray, frame: _Frame, colour: np.ndarray, alpha: np.ndarray) -> None:
    view = canvas[frame.rows, frame.cols]
    canvas[frame.rows, frame.cols] = _blend(view, colour, alpha)


# Painters: (u, v, part, scale) -> (colour (h, w, 3), alpha (h, w)); u, v in pixels.
_Painter = Callable[[np.ndarray, np.ndarray, _Part, float], tuple[np.ndarray, np.ndarray]]


def _paint_chip(u: np.ndarray, v: np.ndarray, part: _Part, s: float) -> tuple[np.ndarray, np.ndarray]:
    """An integrated circuit: dark body, pins along both long sides, a pin-1 dot."""
    pin_len, pitch = 6.0 * s, 6.0 * s
    half_h, half_body = part.height / 2, part.width / 2 - pin_len
    body = _cover(_box_sdf(u, v, half_h, half_body, 1.5 * s))
    pin_rows = _cover(_box_sdf(u, v, half_h - 3 * s, part.width / 2))
    teeth = (np.mod(u + half_h, pitch) < pitch * 0.5).astype(np.float32)
    pins = np.maximum(pin_rows * teeth - body, 0.0)
    colour = _fill(u.shape, (0.13, 0.13, 0.14))
    colour *= (1.0 + 0.08 * np.clip(-u / max(half_h, 1.0), -1, 1))[..., None]
    dot = _cover(_disc_sdf(u + half_h - 6 * s, v + half_body - 6 * s, 2.5 * s))
    colour = _blend(colour, _fill(u.shape, (0.32, 0.32, 0.34)), dot)
    colour = _blend(colour, _fill(u.shape, (0.76, 0.76, 0.72)), pins)
    return colour, np.maximum(body, pins)


_BAND_COLOURS = ((0.55, 0.30, 0.10), (0.85, 0.10, 0.10), (0.95, 0.55, 0.10), (0.20, 0.20, 0.20))


def _paint_resistor(u: np.ndarray, v: np.ndarray, part: _Part, s: float) -> tuple[np.ndarray, np.ndarray]:
    """A through-hole style resistor along v: beige body, silver ends, colour bands (``style``)."""
    half_h, half_w = part.height / 2, part.width / 2
    alpha = _cover(_box_sdf(u, v, half_h, half_w, half_h * 0.8))
    colour = _fill(u.shape, (0.80, 0.71, 0.52))
    colour *= (1.0 - 0.25 * (u / max(half_h, 1.0)) ** 2)[..., None]
    ends = (np.abs(v) > half_w * 0.78).astype(np.float32)
    colour = _blend(colour, _fill(u.shape, (0.70, 0.70, 0.72)), ends)
    for k, position in enumerate((-0.42, -0.2, 0.02)):
        band = _cover(np.abs(v - position * half_w) - 1.2 * s)
        band_colour = _BAND_COLOURS[(part.style + k) % len(_BAND_COLOURS)]
        colour = _blend(colour, _fill(u.shape, band_colour), band)
    gold = _cover(np.abs(v - 0.45 * half_w) - 1.0 * s)
    return _blend(colour, _fill(u.shape, (0.80, 0.65, 0.25)), gold), alpha


def _paint_capacitor(u: np.ndarray, v: np.ndarray, part: _Part, s: float) -> tuple[np.ndarray, np.ndarray]:
    """An electrolytic capacitor from above: blue sleeve, polarity stripe, aluminium top with a vent."""
    radius = part.height / 2
    alpha = _cover(_disc_sdf(u, v, radius))
    colour = _fill(u.shape, (0.13, 0.18, 0.40))
    stripe = (v < -0.4 * radius).astype(np.float32)
    colour = _blend(colour, _fill(u.shape, (0.80, 0.82, 0.86)), stripe)
    top = _cover(_disc_sdf(u, v, 0.74 * radius))
    colour = _blend(colour, _fill(u.shape, (0.64, 0.65, 0.68)), top)
    vent = np.maximum(_cover(np.abs(u) - 0.7 * s), _cover(np.abs(v) - 0.7 * s)) * _cover(
        _disc_sdf(u, v, 0.55 * radius)
    )
    colour = _blend(colour, _fill(u.shape, (0.35, 0.36, 0.38)), vent)
    rim = (1.0 - 0.2 * np.clip((u + v) / max(radius, 1.0), -1, 1))[..., None]
    return colour * rim, alpha


def _paint_led(u: np.ndarray, v: np.ndarray, part: _Part, s: float) -> tuple[np.ndarray, np.ndarray]:
    """A red LED with a bright die and a cathode bar."""
    half_h, half_w = part.height / 2, part.width / 2
    alpha = _cover(_box_sdf(u, v, half_h, half_w, 1.5 * s))
    colour = _fill(u.shape, (0.78, 0.12, 0.10))
    die = _cover(_disc_sdf(u, v, 0.4 * half_h))
    colour = _blend(colour, _fill(u.shape, (1.0, 0.62, 0.50)), die)
    cathode = (v > half_w * 0.7).astype(np.float32)
    return _blend(colour, _fill(u.shape, (0.35, 0.06, 0.05)), cathode), alpha


def _paint_connector(u: np.ndarray, v: np.ndarray, part: _Part, s: float) -> tuple[np.ndarray, np.ndarray]:
    """A cream header with a row of four dark sockets and a key notch."""
    half_h, half_w = part.height / 2, part.width / 2
    alpha = _cover(_box_sdf(u, v, half_h, half_w, 1.0 * s))
    colour = _fill(u.shape, (0.88, 0.86, 0.77))
    pitch = part.width / 4
    centres = np.floor((v + half_w) / pitch) * pitch - half_w + pitch / 2
    holes = _cover(_box_sdf(u, v - centres, 0.35 * part.height, 0.3 * pitch))
    colour = _blend(colour, _fill(u.shape, (0.10, 0.10, 0.11)), holes)
    notch = _cover(_box_sdf(u - half_h, v, 1.5 * s, 3.0 * s))
    return _blend(colour, _fill(u.shape, (0.55, 0.54, 0.48)), notch), alpha


def _paint_tablet(u: np.ndarray, v: np.ndarray, part: _Part, s: float) -> tuple[np.ndarray, np.ndarray]:
    """A round tablet with a score line; ``style`` 1 is the wrong (orange) kind."""
    radius = part.height / 2
    alpha = _cover(_disc_sdf(u, v, radius))
    base = (0.95, 0.94, 0.90) if part.style == 0 else (0.95, 0.66, 0.30)
    colour = _fill(u.shape, base)
    colour *= (1.0 - 0.16 * (u * u + v * v) / radius**2 - 0.05 * (u + v) / radius)[..., None]
    score = np.exp(-0.5 * (u / (1.1 * s)) ** 2) * _cover(_disc_sdf(u, v, 0.85 * radius))
    return colour * (1.0 - 0.14 * score)[..., None], alpha


def _paint_capsule(u: np.ndarray, v: np.ndarray, part: _Part, s: float) -> tuple[np.ndarray, np.ndarray]:
    """A two-tone capsule along u."""
    half_h, half_w = part.height / 2, part.width / 2
    alpha = _cover(_box_sdf(u, v, half_h, half_w, half_w))
    colour = np.where((u < 0)[..., None], np.float32([0.85, 0.20, 0.18]), np.float32([0.95, 0.93, 0.88]))
    colour = colour * (1.0 - 0.22 * (v / half_w) ** 2)[..., None]
    return colour.astype(np.float32), alpha


_PAINTERS: dict[str, _Painter] = {
    "chip": _paint_chip,
    "resistor": _paint_resistor,
    "capacitor": _paint_capacitor,
    "led": _paint_led,
    "connector": _paint_connector,
    "tablet": _paint_tablet,
    "capsule": _paint_capsule,
}


def _part_frame(size: int, part: _Part, pad: float) -> _Frame | None:
    return _frame(size, part.cy, part.cx, part.angle, 0.5 * math.hypot(part.height, part.width) + pad)


def _footprint(size: int, part: _Part, scale: float) -> np.ndarray:
    """Opacity ``(S, S)`` of a part alone."""
    alpha = np.zeros((size, size), np.float32)
    frame = _part_frame(size, part, 2.0)
    if frame is not None:
        alpha[frame.rows, frame.cols] = _PAINTERS[part.kind](frame.u, frame.v, part, scale)[1]
    return alpha


def _render_parts(layout: _Layout, parts: Sequence[_Part]) -> np.ndarray:
    """The scene image with ``parts`` on its base layer: float32 ``(S, S, 3)``."""
    canvas = layout.base.copy()
    size, s = canvas.shape[0], layout.scale
    offset = _SHADOW_OFFSET * s
    for part in parts:
        painter = _PAINTERS[part.kind]
        frame = _part_frame(size, part, offset + 3.0 * s)
        if frame is None:
            continue
        # the shadow is the part's own opacity seen from a centre moved down-right
        cos, sin = math.cos(part.angle), math.sin(part.angle)
        su = frame.u - np.float32(offset * (cos + sin))
        sv = frame.v - np.float32(offset * (cos - sin))
        shadow = ndimage.uniform_filter(painter(su, sv, part, s)[1], max(round(2 * s), 1) * 2 + 1)
        _paint(canvas, frame, np.zeros((*shadow.shape, 3), np.float32), _SHADOW_DARKNESS * shadow)
        colour, alpha = painter(frame.u, frame.v, part, s)
        _paint(canvas, frame, colour, alpha)
    return (canvas * layout.light[..., None] + layout.noise).astype(np.float32)


class _Placement(NamedTuple):
    """The whole object's pose: reference coordinates (y, x) around the centre → pixels."""

    cy: float
    cx: float
    angle: float
    scale: float

    def point(self, y: float, x: float) -> tuple[float, float]:
        cos, sin = math.cos(self.angle), math.sin(self.angle)
        return (
            self.cy + self.scale * (y * cos + x * sin),
            self.cx + self.scale * (x * cos - y * sin),
        )

    def part(
        self, kind: str, y: float, x: float, height: float, width: float, angle: float = 0.0, style: int = 0
    ) -> _Part:
        py, px = self.point(y, x)
        return _Part(
            kind, py, px, height * self.scale, width * self.scale, self.angle + math.radians(angle), style
        )


def _placement(rng: np.random.Generator, size: int) -> _Placement:
    s = size / REFERENCE_SIZE
    dy, dx = rng.uniform(-_LAYOUT_SHIFT, _LAYOUT_SHIFT, 2) * s
    angle = math.radians(rng.uniform(-_LAYOUT_ANGLE, _LAYOUT_ANGLE))
    return _Placement(size / 2 + float(dy), size / 2 + float(dx), angle, s)


def _jittered(rng: np.random.Generator, part: _Part, scale: float) -> _Part:
    dy, dx = rng.uniform(-_PART_JITTER, _PART_JITTER, 2) * scale
    turn = math.radians(rng.uniform(-_PART_ANGLE_JITTER, _PART_ANGLE_JITTER))
    return part.moved(float(dy), float(dx), turn)


def _object_frame(size: int, place: _Placement) -> _Frame:
    """Local coordinates of the whole object over the whole image."""
    frame = _frame(size, place.cy, place.cx, place.angle, float(size))
    assert frame is not None
    return frame


# Circuit board layout, reference pixels around the board centre: (kind, y, x, height, width, angle°, style).
_BOARD_HALF = (92.0, 112.0)
_BOARD_PARTS: tuple[tuple[str, float, float, float, float, float, int], ...] = (
    ("chip", -12.0, -30.0, 56.0, 44.0, 0.0, 0),
    ("capacitor", -48.0, 52.0, 30.0, 30.0, 0.0, 0),
    ("capacitor", 40.0, 56.0, 24.0, 24.0, 0.0, 0),
    ("resistor", -62.0, -84.0, 10.0, 28.0, 0.0, 0),
    ("resistor", -10.0, 22.0, 10.0, 28.0, 90.0, 1),
    ("resistor", 62.0, -8.0, 10.0, 28.0, 0.0, 2),
    ("led", 30.0, -86.0, 10.0, 16.0, 0.0, 0),
    ("connector", 70.0, 64.0, 14.0, 40.0, 0.0, 0),
)
# Free spots where an extra part may turn up.
_BOARD_SPARES: tuple[tuple[str, float, float, float, float, float, int], ...] = (
    ("resistor", 30.0, -40.0, 10.0, 28.0, 0.0, 3),
    ("resistor", -70.0, 10.0, 10.0, 28.0, 0.0, 1),
    ("capacitor", 20.0, 83.0, 20.0, 20.0, 0.0, 0),
    ("resistor", 0.0, 88.0, 10.0, 28.0, 90.0, 2),
)
_BOARD_TRACES: tuple[tuple[tuple[float, float], ...], ...] = (
    ((-62.0, -70.0), (-62.0, -52.0), (-40.0, -52.0)),
    ((62.0, -22.0), (40.0, -22.0), (16.0, -22.0)),
    ((-24.0, 22.0), (-48.0, 22.0), (-48.0, 37.0)),
    ((4.0, 22.0), (40.0, 22.0), (40.0, 44.0)),
    ((30.0, -78.0), (30.0, -60.0), (10.0, -52.0)),
    ((62.0, 6.0), (70.0, 30.0), (70.0, 44.0)),
    ((-80.0, -100.0), (-80.0, -40.0), (-40.0, -30.0)),
)
_BOARD_HOLES = ((-80.0, -100.0), (-80.0, 100.0), (80.0, -100.0), (80.0, 100.0))


def _pads(size: int, part: _Part, s: float) -> tuple[_Frame | None, np.ndarray | None]:
    """Tinned pads and a silkscreen outline where a part belongs: (frame, (coverage pads, coverage silk))."""
    frame = _part_frame(size, part, 5.0 * s)
    if frame is None:
        return None, None
    u, v, half_h, half_w = frame.u, frame.v, part.height / 2, part.width / 2
    if part.kind == "capacitor":
        pads = np.maximum(
            _cover(_box_sdf(u, v - 0.45 * half_w, 3 * s, 2.5 * s)),
            _cover(_box_sdf(u, v + 0.45 * half_w, 3 * s, 2.5 * s)),
        )
        silk = _outline(_disc_sdf(u, v, half_h + 3 * s), 1.2 * s)
    elif part.kind == "chip":
        pin_len = 6.0 * s
        pads = _cover(_box_sdf(u, np.abs(v) - (half_w - pin_len / 2), half_h - 2 * s, pin_len / 2 + 0.5 * s))
        silk = _outline(_box_sdf(u, v, half_h + 3 * s, half_w - pin_len + 1 * s), 1.2 * s)
    else:
        end = 0.78 * half_w
        pads = _cover(_box_sdf(u, np.abs(v) - end, half_h + 1 * s, half_w - end + 1 * s))
        silk = _outline(_box_sdf(u, v, half_h + 3 * s, half_w + 3 * s), 1.2 * s)
    return frame, np.stack([pads, silk])


def _circuit_board(rng: np.random.Generator, size: int) -> _Scene:
    s = size / REFERENCE_SIZE
    place = _placement(rng, size)
    table = rng.uniform(0.30, 0.36) + 0.025 * _smooth_noise(rng, (size, size), 8 * s)
    canvas = table[..., None] * np.array([0.95, 0.97, 1.02], np.float32)
    full = _object_frame(size, place)
    board_sdf = _box_sdf(full.u, full.v, _BOARD_HALF[0] * s, _BOARD_HALF[1] * s, 8 * s)
    shadow_sdf = _box_sdf(full.u - 3 * s, full.v - 3 * s, _BOARD_HALF[0] * s, _BOARD_HALF[1] * s, 8 * s)
    canvas = canvas * (1.0 - 0.45 * (1.0 - _smoothstep(-2 * s, 7 * s, shadow_sdf)))[..., None]
    board = _cover(board_sdf)
    green = np.array([0.08, 0.34, 0.17], np.float32) * rng.uniform(0.96, 1.04, 3).astype(np.float32)
    mask_texture = (
        1.0
        + 0.04 * _smooth_noise(rng, (size, size), 1.5 * s)
        + 0.03 * _smooth_noise(rng, (size, size), 12 * s)
    )
    canvas = _blend(canvas, green * mask_texture[..., None], board)
    traces = np.zeros((size, size), np.float32)
    for trace in _BOARD_TRACES:
        points = np.array([place.point(y, x) for y, x in trace], np.float32)
        traces = np.maximum(traces, _polyline_alpha(size, points, 3.0 * s))
    canvas = _blend(canvas, green * 1.45, traces * board)
    ring, drill = (0.76, 0.63, 0.32), (0.10, 0.10, 0.10)
    for y, x in _BOARD_HOLES:
        cy, cx = place.point(y, x)
        frame = _frame(size, cy, cx, 0.0, 10 * s)
        if frame is not None:
            _paint(canvas, frame, _fill(frame.u.shape, ring), _cover(_disc_sdf(frame.u, frame.v, 8 * s)))
            _paint(canvas, frame, _fill(frame.u.shape, drill), _cover(_disc_sdf(frame.u, frame.v, 4.5 * s)))
    designed = [place.part(*spec) for spec in _BOARD_PARTS]
    for part in designed:
        frame, cover = _pads(size, part, s)
        if frame is not None and cover is not None:
            _paint(canvas, frame, _fill(frame.u.shape, (0.80, 0.78, 0.72)), cover[0])
            _paint(canvas, frame, _fill(frame.u.shape, (0.90, 0.90, 0.86)), cover[1])
    layout = _Layout(
        base=canvas.astype(np.float32),
        light=_lighting(rng, size, 0.12),
        noise=0.012 * rng.standard_normal((size, size, 3), dtype=np.float32),
        parts=tuple(_jittered(rng, part, s) for part in designed),
        spares=tuple(place.part(*spec) for spec in _BOARD_SPARES),
        substitutes=(),
        scale=s,
    )
    return _Scene(image=_render_parts(layout, layout.parts), region=board, layout=layout)


# Blister pack: a 3 × 4 grid of pockets, one round tablet in each.
_CARD_HALF = (86.0, 114.0)
_POCKET_PITCH = 52.0
_POCKET_RADIUS = 20.0
_TABLET_DIAMETER = 29.0
_POCKET_ROWS = (-1.0, 0.0, 1.0)
_POCKET_COLS = (-1.5, -0.5, 0.5, 1.5)


def _blister_pack(rng: np.random.Generator, size: int) -> _Scene:
    s = size / REFERENCE_SIZE
    place = _placement(rng, size)
    cloth = rng.uniform(0.18, 0.23) + 0.02 * _smooth_noise(rng, (size, size), 3 * s)
    canvas = cloth[..., None] * np.array([0.92, 0.95, 1.08], np.float32)
    full = _object_frame(size, place)
    card_sdf = _box_sdf(full.u, full.v, _CARD_HALF[0] * s, _CARD_HALF[1] * s, 10 * s)
    shadow_sdf = _box_sdf(full.u - 3 * s, full.v - 3 * s, _CARD_HALF[0] * s, _CARD_HALF[1] * s, 10 * s)
    canvas = canvas * (1.0 - 0.4 * (1.0 - _smoothstep(-2 * s, 7 * s, shadow_sdf)))[..., None]
    card = _cover(card_sdf)
    brushed = _smooth_noise(rng, (size, size), (0.8 * s, 25 * s))
    foil = (rng.uniform(0.70, 0.76) + 0.03 * brushed)[..., None] * np.array([0.99, 1.0, 1.02], np.float32)
    seal = _outline(card_sdf + 5 * s, 1.5 * s)
    foil = foil * (1.0 - 0.12 * seal)[..., None]
    canvas = _blend(canvas, foil, card)
    designed = []
    for row in _POCKET_ROWS:
        for col in _POCKET_COLS:
            y, x = row * _POCKET_PITCH, col * _POCKET_PITCH
            cy, cx = place.point(y, x)
            frame = _frame(size, cy, cx, 0.0, (_POCKET_RADIUS + 3) * s)
            if frame is not None:
                r = _POCKET_RADIUS * s
                dome = _cover(_disc_sdf(frame.u, frame.v, r))
                inside = _fill(frame.u.shape, (0.60, 0.63, 0.68))
                inside *= (1.0 + 0.10 * (frame.u + frame.v) / r)[..., None]
                _paint(canvas, frame, inside, dome)
                glint = _outline(_disc_sdf(frame.u, frame.v, 0.86 * r), 1.5 * s) * np.clip(
                    -(frame.u + frame.v) / r, 0, 1
                )
                _paint(canvas, frame, _fill(frame.u.shape, (0.97, 0.98, 1.0)), glint)
            designed.append(
                place.part("tablet", y, x, _TABLET_DIAMETER, _TABLET_DIAMETER, float(rng.uniform(0, 180)))
            )
    spares = [
        place.part(
            "tablet", row * _POCKET_PITCH, col * _POCKET_PITCH, _TABLET_DIAMETER, _TABLET_DIAMETER, 0.0
        )
        for row in (-0.5, 0.5)
        for col in (-1.0, 0.0, 1.0)
    ]
    layout = _Layout(
        base=canvas.astype(np.float32),
        light=_lighting(rng, size, 0.10),
        noise=0.012 * rng.standard_normal((size, size, 3), dtype=np.float32),
        parts=tuple(_jittered(rng, part, s) for part in designed),
        spares=tuple(spares),
        substitutes=(
            _Part("tablet", 0.0, 0.0, _TABLET_DIAMETER * s, _TABLET_DIAMETER * s, 0.0, style=1),
            _Part("capsule", 0.0, 0.0, 34.0 * s, 15.0 * s, 0.0),
        ),
        scale=s,
    )
    return _Scene(image=_render_parts(layout, layout.parts), region=card, layout=layout)


# --------------------------------------------------------------------------- structural defects
#
# ``contrast`` (1 / difficulty) scales how far a part is shifted or turned; a missing, extra
# or wrong part is what it is.

_SHIFT_RANGE = (7.0, 14.0)  # reference pixels
_TURN_RANGE = (25.0, 90.0)  # degrees
_MIN_SHIFT = 2.0
_MIN_TURN = 6.0


def _layout_of(scene: _Scene) -> _Layout:
    assert scene.layout is not None
    return scene.layout


def _edited(scene: _Scene, parts: list[_Part], changed: Sequence[_Part]) -> tuple[np.ndarray, np.ndarray]:
    layout = _layout_of(scene)
    size = scene.image.shape[0]
    alpha = np.zeros((size, size), np.float32)
    for part in changed:
        alpha = np.maximum(alpha, _footprint(size, part, layout.scale))
    return _render_parts(layout, parts), alpha


def _missing_part(rng: np.random.Generator, scene: _Scene, contrast: float) -> tuple[np.ndarray, np.ndarray]:
    parts = list(_layout_of(scene).parts)
    gone = parts.pop(int(rng.integers(len(parts))))
    return _edited(scene, parts, [gone])


def _shifted_part(rng: np.random.Generator, scene: _Scene, contrast: float) -> tuple[np.ndarray, np.ndarray]:
    layout = _layout_of(scene)
    parts = list(layout.parts)
    k = int(rng.integers(len(parts)))
    distance = max(rng.uniform(*_SHIFT_RANGE) * contrast, _MIN_SHIFT) * layout.scale
    direction = rng.uniform(0, 2 * math.pi)
    moved = parts[k].moved(distance * math.sin(direction), distance * math.cos(direction))
    old, parts[k] = parts[k], moved
    return _edited(scene, parts, [old, moved])


def _turned_part(rng: np.random.Generator, scene: _Scene, contrast: float) -> tuple[np.ndarray, np.ndarray]:
    layout = _layout_of(scene)
    parts = list(layout.parts)
    turnable = [i for i, p in enumerate(parts) if not math.isclose(p.height, p.width)]
    k = turnable[int(rng.integers(len(turnable)))]
    angle = max(rng.uniform(*_TURN_RANGE) * contrast, _MIN_TURN) * (1 if rng.random() < 0.5 else -1)
    turned = parts[k].moved(turn=math.radians(angle))
    old, parts[k] = parts[k], turned
    return _edited(scene, parts, [old, turned])


def _extra_part(rng: np.random.Generator, scene: _Scene, contrast: float) -> tuple[np.ndarray, np.ndarray]:
    layout = _layout_of(scene)
    spare = _jittered(rng, layout.spares[int(rng.integers(len(layout.spares)))], layout.scale)
    spare = spare.moved(turn=rng.uniform(0, math.pi) if spare.kind == "tablet" else 0.0)
    return _edited(scene, [*layout.parts, spare], [spare])


def _wrong_part(rng: np.random.Generator, scene: _Scene, contrast: float) -> tuple[np.ndarray, np.ndarray]:
    layout = _layout_of(scene)
    parts = list(layout.parts)
    k = int(rng.integers(len(parts)))
    wrong = layout.substitutes[int(rng.integers(len(layout.substitutes)))]
    old = parts[k]
    parts[k] = wrong.moved(old.cy, old.cx, old.angle + rng.uniform(0, math.pi))
    return _edited(scene, parts, [old, parts[k]])


_SCENES: dict[str, Callable[[np.random.Generator, int], _Scene]] = {
    "carpet_weave": _carpet,
    "metal_plate": _metal,
    "pill_disc": _pill,
    "circuit_board": _circuit_board,
    "blister_pack": _blister_pack,
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
    "circuit_board": {
        "missing": _missing_part,
        "shifted": _shifted_part,
        "rotated": _turned_part,
        "extra": _extra_part,
    },
    "blister_pack": {
        "empty": _missing_part,
        "shifted": _shifted_part,
        "extra": _extra_part,
        "wrong_pill": _wrong_part,
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
    test_jobs += [("test", d, i) for d in DEMO_DEFECTS[category] for i in range(params["n_test_per_defect"])]
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
