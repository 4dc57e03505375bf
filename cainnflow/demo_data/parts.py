"""Parts of the layout categories: painters per kind, shadows, placement of a whole object.

A painter ``(u, v, part, scale) -> (colour, alpha)`` draws one part in its own coordinates;
:func:`render_parts` paints a tuple of parts over a layout's base layer, lighting and noise.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np
from scipy import ndimage

from .raster import REFERENCE_SIZE, Frame, blend, box_sdf, coverage, disc_sdf, fill, frame_at, paint
from .scene import Layout, Part

_SHADOW_OFFSET = 2.0  # reference pixels, down-right
_SHADOW_DARKNESS = 0.35
_PART_JITTER = 0.6  # reference pixels of normal placement jitter
_PART_ANGLE_JITTER = 1.0  # degrees
_LAYOUT_SHIFT = 3.0  # reference pixels of normal whole-object translation
_LAYOUT_ANGLE = 1.5  # degrees of normal whole-object rotation

# Painters: (u, v, part, scale) -> (colour (h, w, 3), alpha (h, w)); u, v in pixels.
_Painter = Callable[[np.ndarray, np.ndarray, Part, float], tuple[np.ndarray, np.ndarray]]


def _paint_chip(u: np.ndarray, v: np.ndarray, part: Part, s: float) -> tuple[np.ndarray, np.ndarray]:
    """An integrated circuit: dark body, pins along both long sides, a pin-1 dot."""
    pin_len, pitch = 6.0 * s, 6.0 * s
    half_h, half_body = part.height / 2, part.width / 2 - pin_len
    body = coverage(box_sdf(u, v, half_h, half_body, 1.5 * s))
    pin_rows = coverage(box_sdf(u, v, half_h - 3 * s, part.width / 2))
    teeth = (np.mod(u + half_h, pitch) < pitch * 0.5).astype(np.float32)
    pins = np.maximum(pin_rows * teeth - body, 0.0)
    colour = fill(u.shape, (0.13, 0.13, 0.14))
    colour *= (1.0 + 0.08 * np.clip(-u / max(half_h, 1.0), -1, 1))[..., None]
    dot = coverage(disc_sdf(u + half_h - 6 * s, v + half_body - 6 * s, 2.5 * s))
    colour = blend(colour, fill(u.shape, (0.32, 0.32, 0.34)), dot)
    colour = blend(colour, fill(u.shape, (0.76, 0.76, 0.72)), pins)
    return colour, np.maximum(body, pins)


_BAND_COLOURS = ((0.55, 0.30, 0.10), (0.85, 0.10, 0.10), (0.95, 0.55, 0.10), (0.20, 0.20, 0.20))


def _paint_resistor(u: np.ndarray, v: np.ndarray, part: Part, s: float) -> tuple[np.ndarray, np.ndarray]:
    """A through-hole style resistor along v: beige body, silver ends, colour bands (``style``)."""
    half_h, half_w = part.height / 2, part.width / 2
    alpha = coverage(box_sdf(u, v, half_h, half_w, half_h * 0.8))
    colour = fill(u.shape, (0.80, 0.71, 0.52))
    colour *= (1.0 - 0.25 * (u / max(half_h, 1.0)) ** 2)[..., None]
    ends = (np.abs(v) > half_w * 0.78).astype(np.float32)
    colour = blend(colour, fill(u.shape, (0.70, 0.70, 0.72)), ends)
    for k, position in enumerate((-0.42, -0.2, 0.02)):
        band = coverage(np.abs(v - position * half_w) - 1.2 * s)
        band_colour = _BAND_COLOURS[(part.style + k) % len(_BAND_COLOURS)]
        colour = blend(colour, fill(u.shape, band_colour), band)
    gold = coverage(np.abs(v - 0.45 * half_w) - 1.0 * s)
    return blend(colour, fill(u.shape, (0.80, 0.65, 0.25)), gold), alpha


def _paint_capacitor(u: np.ndarray, v: np.ndarray, part: Part, s: float) -> tuple[np.ndarray, np.ndarray]:
    """An electrolytic capacitor from above: blue sleeve, polarity stripe, aluminium top with a vent."""
    radius = part.height / 2
    alpha = coverage(disc_sdf(u, v, radius))
    colour = fill(u.shape, (0.13, 0.18, 0.40))
    stripe = (v < -0.4 * radius).astype(np.float32)
    colour = blend(colour, fill(u.shape, (0.80, 0.82, 0.86)), stripe)
    top = coverage(disc_sdf(u, v, 0.74 * radius))
    colour = blend(colour, fill(u.shape, (0.64, 0.65, 0.68)), top)
    vent = np.maximum(coverage(np.abs(u) - 0.7 * s), coverage(np.abs(v) - 0.7 * s)) * coverage(
        disc_sdf(u, v, 0.55 * radius)
    )
    colour = blend(colour, fill(u.shape, (0.35, 0.36, 0.38)), vent)
    rim = (1.0 - 0.2 * np.clip((u + v) / max(radius, 1.0), -1, 1))[..., None]
    return colour * rim, alpha


def _paint_led(u: np.ndarray, v: np.ndarray, part: Part, s: float) -> tuple[np.ndarray, np.ndarray]:
    """A red LED with a bright die and a cathode bar."""
    half_h, half_w = part.height / 2, part.width / 2
    alpha = coverage(box_sdf(u, v, half_h, half_w, 1.5 * s))
    colour = fill(u.shape, (0.78, 0.12, 0.10))
    die = coverage(disc_sdf(u, v, 0.4 * half_h))
    colour = blend(colour, fill(u.shape, (1.0, 0.62, 0.50)), die)
    cathode = (v > half_w * 0.7).astype(np.float32)
    return blend(colour, fill(u.shape, (0.35, 0.06, 0.05)), cathode), alpha


def _paint_connector(u: np.ndarray, v: np.ndarray, part: Part, s: float) -> tuple[np.ndarray, np.ndarray]:
    """A cream header with a row of four dark sockets and a key notch."""
    half_h, half_w = part.height / 2, part.width / 2
    alpha = coverage(box_sdf(u, v, half_h, half_w, 1.0 * s))
    colour = fill(u.shape, (0.88, 0.86, 0.77))
    pitch = part.width / 4
    centres = np.floor((v + half_w) / pitch) * pitch - half_w + pitch / 2
    holes = coverage(box_sdf(u, v - centres, 0.35 * part.height, 0.3 * pitch))
    colour = blend(colour, fill(u.shape, (0.10, 0.10, 0.11)), holes)
    notch = coverage(box_sdf(u - half_h, v, 1.5 * s, 3.0 * s))
    return blend(colour, fill(u.shape, (0.55, 0.54, 0.48)), notch), alpha


def _paint_tablet(u: np.ndarray, v: np.ndarray, part: Part, s: float) -> tuple[np.ndarray, np.ndarray]:
    """A round tablet with a score line; ``style`` 1 is the wrong (orange) kind."""
    radius = part.height / 2
    alpha = coverage(disc_sdf(u, v, radius))
    base = (0.95, 0.94, 0.90) if part.style == 0 else (0.95, 0.66, 0.30)
    colour = fill(u.shape, base)
    colour *= (1.0 - 0.16 * (u * u + v * v) / radius**2 - 0.05 * (u + v) / radius)[..., None]
    score = np.exp(-0.5 * (u / (1.1 * s)) ** 2) * coverage(disc_sdf(u, v, 0.85 * radius))
    return colour * (1.0 - 0.14 * score)[..., None], alpha


def _paint_capsule(u: np.ndarray, v: np.ndarray, part: Part, s: float) -> tuple[np.ndarray, np.ndarray]:
    """A two-tone capsule along u."""
    half_h, half_w = part.height / 2, part.width / 2
    alpha = coverage(box_sdf(u, v, half_h, half_w, half_w))
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


def part_frame(size: int, part: Part, pad: float) -> Frame | None:
    return frame_at(size, part.cy, part.cx, part.angle, 0.5 * math.hypot(part.height, part.width) + pad)


def footprint(size: int, part: Part, scale: float) -> np.ndarray:
    """Opacity ``(S, S)`` of a part alone."""
    alpha = np.zeros((size, size), np.float32)
    frame = part_frame(size, part, 2.0)
    if frame is not None:
        alpha[frame.rows, frame.cols] = _PAINTERS[part.kind](frame.u, frame.v, part, scale)[1]
    return alpha


def render_parts(layout: Layout, parts: Sequence[Part]) -> np.ndarray:
    """The scene image with ``parts`` on its base layer: float32 ``(S, S, 3)``."""
    canvas = layout.base.copy()
    size, s = canvas.shape[0], layout.scale
    offset = _SHADOW_OFFSET * s
    for part in parts:
        painter = _PAINTERS[part.kind]
        frame = part_frame(size, part, offset + 3.0 * s)
        if frame is None:
            continue
        # the shadow is the part's own opacity seen from a centre moved down-right
        cos, sin = math.cos(part.angle), math.sin(part.angle)
        su = frame.u - np.float32(offset * (cos + sin))
        sv = frame.v - np.float32(offset * (cos - sin))
        shadow = ndimage.uniform_filter(painter(su, sv, part, s)[1], max(round(2 * s), 1) * 2 + 1)
        paint(canvas, frame, np.zeros((*shadow.shape, 3), np.float32), _SHADOW_DARKNESS * shadow)
        colour, alpha = painter(frame.u, frame.v, part, s)
        paint(canvas, frame, colour, alpha)
    return (canvas * layout.light[..., None] + layout.noise).astype(np.float32)


class Placement(NamedTuple):
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
    ) -> Part:
        py, px = self.point(y, x)
        return Part(
            kind, py, px, height * self.scale, width * self.scale, self.angle + math.radians(angle), style
        )


def placement(rng: np.random.Generator, size: int) -> Placement:
    s = size / REFERENCE_SIZE
    dy, dx = rng.uniform(-_LAYOUT_SHIFT, _LAYOUT_SHIFT, 2) * s
    angle = math.radians(rng.uniform(-_LAYOUT_ANGLE, _LAYOUT_ANGLE))
    return Placement(size / 2 + float(dy), size / 2 + float(dx), angle, s)


def jittered(rng: np.random.Generator, part: Part, scale: float) -> Part:
    dy, dx = rng.uniform(-_PART_JITTER, _PART_JITTER, 2) * scale
    turn = math.radians(rng.uniform(-_PART_ANGLE_JITTER, _PART_ANGLE_JITTER))
    return part.moved(float(dy), float(dx), turn)


def object_frame(size: int, place: Placement) -> Frame:
    """Local coordinates of the whole object over the whole image."""
    frame = frame_at(size, place.cy, place.cx, place.angle, float(size))
    assert frame is not None
    return frame
