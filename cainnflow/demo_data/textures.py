"""The texture and surface categories (carpet weave, brushed metal, a pill) and their local defects.

A scene function ``(rng, size) -> Scene`` draws a normal image; a defect function
``(rng, scene, contrast) -> (image, alpha)`` paints one defect on it (float ``(S, S, 3)`` and
its opacity ``(S, S)``).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from .raster import (
    REFERENCE_SIZE,
    blend,
    blob_alpha,
    grid,
    lighting,
    polyline_alpha,
    random_curve,
    smooth_noise,
    smoothstep,
)
from .scene import MASK_ALPHA, Scene, point_in_region, scaled

# --------------------------------------------------------------------------- normal scenes


def carpet_weave(rng: np.random.Generator, size: int) -> Scene:
    scale = size / REFERENCE_SIZE
    yy, xx = grid(size)
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
    fibre_u = smooth_noise(rng, (size, size), (0.6, 3.0 * scale))
    fibre_v = smooth_noise(rng, (size, size), (3.0 * scale, 0.6))
    height = np.where(
        over,
        np.sin(math.pi * fu) ** 0.8 * (1 + warp_var) + 0.10 * fibre_v,
        np.sin(math.pi * fv) ** 0.8 * (1 + weft_var) + 0.10 * fibre_u,
    ).astype(np.float32)
    base = np.array([0.62, 0.42, 0.30], np.float32) * rng.uniform(0.95, 1.05, 3).astype(np.float32)
    warp_tint = np.array([1.0, 1.0, 1.0], np.float32)
    weft_tint = np.array([0.97, 1.02, 1.03], np.float32)
    tint = np.where(over[..., None], warp_tint, weft_tint)
    light = lighting(rng, size, 0.12)
    image = base * tint * (0.45 + 0.55 * height[..., None]) * light[..., None]
    image += 0.02 * rng.standard_normal(image.shape, dtype=np.float32)
    return Scene(image=image.astype(np.float32), region=np.ones((size, size), np.float32))


def metal_plate(rng: np.random.Generator, size: int) -> Scene:
    scale = size / REFERENCE_SIZE
    yy, xx = grid(size)
    brushed = smooth_noise(rng, (size, size), (0.7 * scale, 30.0 * scale))
    grain = smooth_noise(rng, (size, size), 1.2 * scale)
    gray = rng.uniform(0.52, 0.60) + 0.05 * brushed + 0.015 * grain
    pitch = 96.0 * scale
    offset_y, offset_x = rng.uniform(0, pitch, 2)
    groove_y = np.abs(((yy + offset_y) % pitch) - pitch / 2) - (pitch / 2 - 1.5 * scale)
    groove_x = np.abs(((xx + offset_x) % pitch) - pitch / 2) - (pitch / 2 - 1.5 * scale)
    groove = np.clip(np.maximum(groove_y, groove_x) / (1.5 * scale), 0, 1)
    gray = gray * (1 - 0.25 * groove)
    tint = np.array([0.98, 1.0, 1.03], np.float32) * rng.uniform(0.98, 1.02, 3).astype(np.float32)
    light = lighting(rng, size, 0.2)
    image = gray[..., None] * tint * light[..., None]
    image += 0.015 * rng.standard_normal(image.shape, dtype=np.float32)
    return Scene(image=image.astype(np.float32), region=np.ones((size, size), np.float32))


def pill_disc(rng: np.random.Generator, size: int) -> Scene:
    scale = size / REFERENCE_SIZE
    yy, xx = grid(size)
    bg_gray = rng.uniform(0.16, 0.22) + 0.02 * smooth_noise(rng, (size, size), 6 * scale)
    background = bg_gray[..., None] * np.array([0.9, 0.95, 1.1], np.float32)
    background = background + 0.012 * rng.standard_normal(background.shape, dtype=np.float32)
    cy, cx = size / 2 + rng.uniform(-0.035, 0.035, 2) * size
    radius = 0.33 * size * rng.uniform(0.97, 1.03)
    dist = np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2)
    disc = 1.0 - smoothstep(radius - 1.0, radius + 1.0, dist)
    shadow_d = np.sqrt((yy - cy - 4 * scale) ** 2 + (xx - cx - 3 * scale) ** 2)
    shadow = 1.0 - 0.45 * (1.0 - smoothstep(radius - 2, radius + 8 * scale, shadow_d))
    background = background * shadow[..., None]
    r2 = (dist / radius) ** 2
    lx, ly = rng.uniform(-0.3, 0.3, 2)
    shade = 1.0 - 0.18 * r2 + 0.06 * ((xx - cx) * lx + (yy - cy) * ly) / radius
    speckle = smooth_noise(rng, (size, size), 0.8 * scale)
    mottling = smooth_noise(rng, (size, size), 5.0 * scale)
    colour = np.array([0.93, 0.90, 0.83], np.float32) * rng.uniform(0.97, 1.03, 3).astype(np.float32)
    pill = colour * (shade + 0.02 * speckle + 0.015 * mottling)[..., None]
    angle = math.radians(rng.uniform(-12, 12))
    across = (yy - cy) * math.cos(angle) - (xx - cx) * math.sin(angle)
    score_line = np.exp(-0.5 * (across / (1.3 * scale)) ** 2) * (dist < radius * 0.9)
    pill = pill * (1.0 - 0.14 * score_line)[..., None]
    light = lighting(rng, size, 0.08)[..., None]
    image = blend(background, pill, disc) * light
    region = (disc > MASK_ALPHA).astype(np.float32)
    return Scene(
        image=image.astype(np.float32),
        region=region,
        background=(background * light).astype(np.float32),
        center=(float(cy), float(cx)),
        radius=float(radius),
    )


# --------------------------------------------------------------------------- defects


def _stain(
    rng: np.random.Generator,
    scene: Scene,
    contrast: float,
    colour: tuple[float, float, float],
    strength: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Soft blob that shifts colour slightly and smooths / alters the local texture."""
    size, s = scene.image.shape[0], scaled(scene)
    radius = rng.uniform(10, 34) * s
    alpha = blob_alpha(rng, size, point_in_region(rng, scene, radius + 4), radius, softness=0.5)
    alpha *= scene.region
    smooth = ndimage.gaussian_filter(scene.image, (1.0 * s, 1.0 * s, 0))
    mottle = 1.0 + 0.12 * smooth_noise(rng, (size, size), 2 * s)[..., None]
    tinted = (0.5 * smooth + 0.5 * scene.image) * (1 - strength) + np.asarray(colour, np.float32) * strength
    return blend(scene.image, tinted * mottle, np.clip(alpha * contrast, 0, 1)), alpha


def _line(
    rng: np.random.Generator,
    scene: Scene,
    length: tuple[float, float],
    width: tuple[float, float],
    bend: float = 0.25,
    jitter: float = 0.0,
) -> np.ndarray:
    size, s = scene.image.shape[0], scaled(scene)
    curve = random_curve(rng, point_in_region(rng, scene, 40 * s), rng.uniform(*length) * s, bend, jitter * s)
    return polyline_alpha(size, curve, rng.uniform(*width) * s) * scene.region


def carpet_cut(rng: np.random.Generator, scene: Scene, contrast: float) -> tuple[np.ndarray, np.ndarray]:
    alpha = _line(rng, scene, (35, 90), (2.5, 4.0), jitter=0.6)
    frayed = scene.image * (0.5 + 0.1 * smooth_noise(rng, alpha.shape, 1.0)[..., None])
    return blend(scene.image, frayed, np.clip(alpha * contrast, 0, 1)), alpha


def carpet_hole(rng: np.random.Generator, scene: Scene, contrast: float) -> tuple[np.ndarray, np.ndarray]:
    size, s = scene.image.shape[0], scaled(scene)
    radius = rng.uniform(5, 16) * s
    alpha = blob_alpha(rng, size, point_in_region(rng, scene, radius + 4), radius, softness=0.3)
    backing = (
        np.array([0.16, 0.12, 0.10], np.float32) * (1 + 0.2 * smooth_noise(rng, alpha.shape, 1.0))[..., None]
    )
    return blend(scene.image, backing, np.clip(alpha * 0.85 * contrast, 0, 1)), alpha


def carpet_stain(rng: np.random.Generator, scene: Scene, contrast: float) -> tuple[np.ndarray, np.ndarray]:
    return _stain(rng, scene, contrast, (0.30, 0.20, 0.16), 0.45)


def carpet_thread(rng: np.random.Generator, scene: Scene, contrast: float) -> tuple[np.ndarray, np.ndarray]:
    alpha = _line(rng, scene, (40, 120), (1.8, 2.8), bend=0.5)
    colour = np.array([0.38, 0.42, 0.55], np.float32) * (0.9 + 0.2 * rng.random())
    return blend(
        scene.image, np.broadcast_to(colour, scene.image.shape), np.clip(alpha * 0.8 * contrast, 0, 1)
    ), alpha


def metal_scratch(rng: np.random.Generator, scene: Scene, contrast: float) -> tuple[np.ndarray, np.ndarray]:
    alpha = _line(rng, scene, (30, 130), (1.0, 2.2), bend=0.15)
    sign = 1.0 if rng.random() < 0.7 else -1.0
    target = scene.image + sign * rng.uniform(0.10, 0.18)
    return blend(scene.image, target, np.clip(alpha * contrast, 0, 1)), alpha


def metal_dent(rng: np.random.Generator, scene: Scene, contrast: float) -> tuple[np.ndarray, np.ndarray]:
    size, s = scene.image.shape[0], scaled(scene)
    radius = rng.uniform(9, 26) * s
    center = point_in_region(rng, scene, radius + 4)
    alpha = blob_alpha(rng, size, center, radius, softness=0.8)
    gy, gx = np.gradient(ndimage.gaussian_filter(alpha, 1.5 * s))
    angle = rng.uniform(0, 2 * math.pi)
    shading = (gy * math.sin(angle) + gx * math.cos(angle)) * radius * 0.12 - 0.03 * alpha
    return np.clip(scene.image + (shading * contrast)[..., None], 0, None), alpha


def metal_stain(rng: np.random.Generator, scene: Scene, contrast: float) -> tuple[np.ndarray, np.ndarray]:
    return _stain(rng, scene, contrast, (0.55, 0.38, 0.26), 0.35)


def pill_chip(rng: np.random.Generator, scene: Scene, contrast: float) -> tuple[np.ndarray, np.ndarray]:
    assert scene.background is not None
    size, s = scene.image.shape[0], scaled(scene)
    angle = rng.uniform(0, 2 * math.pi)
    chip_r = rng.uniform(10, 24) * s
    reach = scene.radius + chip_r * rng.uniform(-0.3, 0.3)
    center = (scene.center[0] + reach * math.sin(angle), scene.center[1] + reach * math.cos(angle))
    chip = blob_alpha(rng, size, center, chip_r, softness=0.15)
    alpha = chip * scene.region
    return blend(scene.image, scene.background, np.clip(alpha * 0.9 * contrast, 0, 1)), alpha


def pill_contamination(
    rng: np.random.Generator, scene: Scene, contrast: float
) -> tuple[np.ndarray, np.ndarray]:
    size, s = scene.image.shape[0], scaled(scene)
    radius = rng.uniform(3, 9) * s
    alpha = blob_alpha(rng, size, point_in_region(rng, scene, radius), radius, softness=0.4) * scene.region
    colour = np.array([[0.45, 0.32, 0.22], [0.35, 0.40, 0.55], [0.30, 0.30, 0.30]], np.float32)[
        rng.integers(3)
    ]
    return blend(
        scene.image, np.broadcast_to(colour, scene.image.shape), np.clip(alpha * 0.5 * contrast, 0, 1)
    ), alpha


def pill_crack(rng: np.random.Generator, scene: Scene, contrast: float) -> tuple[np.ndarray, np.ndarray]:
    alpha = _line(rng, scene, (20, 70), (1.0, 1.8), bend=0.3, jitter=0.9)
    return blend(scene.image, scene.image * 0.74, np.clip(alpha * contrast, 0, 1)), alpha


def pill_stain(rng: np.random.Generator, scene: Scene, contrast: float) -> tuple[np.ndarray, np.ndarray]:
    return _stain(rng, scene, contrast, (0.85, 0.68, 0.38), 0.35)
