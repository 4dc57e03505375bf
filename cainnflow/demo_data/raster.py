"""Raster primitives of the demo images: smooth noise, lighting, blobs, curves, signed distances.

Pure numpy / scipy on float32 arrays ``(S, S)`` or ``(S, S, 3)`` in [0, 1]; every random draw
comes from the caller's generator, in a fixed order (the demo bytes depend on it). The
synthetic anomalies of :mod:`cainnflow.synthetic` draw their blobs with :func:`blob_distance` too.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
from scipy import ndimage

REFERENCE_SIZE = 256.0  # geometric constants of the demo images are in pixels at this size
_BOX_FILTER_MIN_SIGMA = 4.0


def grid(size: int | tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Row and column coordinates, float32 ``(H, W)`` each, of a square side or an ``(H, W)`` shape."""
    height, width = (size, size) if isinstance(size, int) else size
    rows, cols = np.arange(height, dtype=np.float32), np.arange(width, dtype=np.float32)
    return rows[:, None] + np.zeros((1, width), np.float32), cols[None, :] + np.zeros((height, 1), np.float32)


def smooth_noise(
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


def lighting(rng: np.random.Generator, size: int, strength: float) -> np.ndarray:
    """Smooth multiplicative lighting field ``(S, S)`` around 1."""
    yy, xx = grid(size)
    angle = rng.uniform(0, 2 * math.pi)
    ramp = ((xx * math.cos(angle) + yy * math.sin(angle)) / size - 0.5) * rng.uniform(-1, 1)
    cy, cx = rng.uniform(0.3, 0.7, 2) * size
    vignette = ((yy - cy) ** 2 + (xx - cx) ** 2) / (size**2)
    return (1.0 + strength * (ramp - rng.uniform(0.3, 0.8) * vignette)).astype(np.float32)


def smoothstep(edge0: float, edge1: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - edge0) / (edge1 - edge0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def blob_distance(
    rng: np.random.Generator,
    shape: int | tuple[int, int],
    center: Sequence[float],
    radius: float,
    *,
    wobble: float,
    aspect: tuple[float, float],
    rotate: bool = False,
) -> np.ndarray:
    """Distance ``(H, W)`` from ``center`` in units of an irregular blob's radius (1 on its outline).

    The outline wobbles with three random harmonics (amplitudes up to ``wobble``), is
    stretched by a random aspect ratio drawn from ``aspect`` and, with ``rotate``, turned by a
    random angle. Draws, in this order: three (amplitude, phase) pairs, the ratio, the angle.
    """
    yy, xx = grid(shape)
    dy, dx = yy - center[0], xx - center[1]
    theta = np.arctan2(dy, dx)
    scale = np.ones_like(theta)
    for harmonic in (2, 3, 5):
        scale += rng.uniform(0.0, wobble) * np.cos(harmonic * theta + rng.uniform(0, 2 * math.pi))
    ratio = rng.uniform(*aspect)
    if rotate:
        angle = rng.uniform(0, math.pi)
        cos, sin = math.cos(angle), math.sin(angle)
        dy, dx = dy * cos + dx * sin, dx * cos - dy * sin
    return np.sqrt((dy * ratio) ** 2 + (dx / ratio) ** 2) / (radius * scale)


def blob_alpha(
    rng: np.random.Generator, size: int, center: tuple[float, float], radius: float, softness: float
) -> np.ndarray:
    """Irregular soft blob opacity ``(S, S)``: 1 inside, 0.5 on the boundary, soft edge of width ~``softness``·r."""
    dist = blob_distance(rng, size, center, radius, wobble=0.14, aspect=(0.7, 1.3))
    return 1.0 - smoothstep(1.0 - softness / 2, 1.0 + softness / 2, dist)


def polyline_alpha(size: int, points: np.ndarray, width: float) -> np.ndarray:
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


def random_curve(
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


def blend(image: np.ndarray, target: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    return image * (1.0 - alpha[..., None]) + target * alpha[..., None]


class Frame(NamedTuple):
    """Local coordinates of a part over its bounding box."""

    rows: slice
    cols: slice
    u: np.ndarray  # float32 (h, w) along the part's height axis
    v: np.ndarray  # float32 (h, w) along its width axis


def frame_at(size: int, cy: float, cx: float, angle: float, reach: float) -> Frame | None:
    y0, y1 = max(math.floor(cy - reach), 0), min(math.ceil(cy + reach) + 1, size)
    x0, x1 = max(math.floor(cx - reach), 0), min(math.ceil(cx + reach) + 1, size)
    if y1 <= y0 or x1 <= x0:
        return None
    dy = np.arange(y0, y1, dtype=np.float32)[:, None] - np.float32(cy)
    dx = np.arange(x0, x1, dtype=np.float32)[None, :] - np.float32(cx)
    cos, sin = np.float32(math.cos(angle)), np.float32(math.sin(angle))
    return Frame(slice(y0, y1), slice(x0, x1), dy * cos + dx * sin, dx * cos - dy * sin)


def box_sdf(u: np.ndarray, v: np.ndarray, half_h: float, half_w: float, radius: float = 0.0) -> np.ndarray:
    """Signed distance (pixels, negative inside) to a rounded rectangle centred at the origin."""
    radius = min(radius, half_h, half_w)
    qu, qv = np.abs(u) - half_h + radius, np.abs(v) - half_w + radius
    outside = np.sqrt(np.maximum(qu, 0.0) ** 2 + np.maximum(qv, 0.0) ** 2)
    return outside + np.minimum(np.maximum(qu, qv), 0.0) - radius


def disc_sdf(u: np.ndarray, v: np.ndarray, radius: float) -> np.ndarray:
    return np.sqrt(u * u + v * v) - radius


def coverage(sdf: np.ndarray) -> np.ndarray:
    """Antialiased coverage of the inside of a signed distance field."""
    return np.clip(0.5 - sdf, 0.0, 1.0)


def outline(sdf: np.ndarray, width: float) -> np.ndarray:
    """Antialiased coverage of a line of ``width`` pixels along the zero level of ``sdf``."""
    return np.clip(width / 2 + 0.5 - np.abs(sdf), 0.0, 1.0)


def fill(shape: tuple[int, ...], colour: Sequence[float]) -> np.ndarray:
    return np.broadcast_to(np.asarray(colour, np.float32), (*shape, 3)).copy()


def paint(canvas: np.ndarray, frame: Frame, colour: np.ndarray, alpha: np.ndarray) -> None:
    view = canvas[frame.rows, frame.cols]
    canvas[frame.rows, frame.cols] = blend(view, colour, alpha)
