"""The layout categories (a populated circuit board, a blister pack) and their structural defects.

Objects with a fixed layout of parts. A scene is a base layer (board or card, pads, pockets)
plus a tuple of parts painted on top; a structural defect edits the parts (removes, moves,
turns, adds or swaps one) and paints again over the same base, noise and lighting, so only
the edited parts' pixels change. The mask is the footprint of the edited part, before and
after the edit. ``contrast`` (1 / difficulty) scales how far a part is shifted or turned; a
missing, extra or wrong part is what it is.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from .parts import Placement, footprint, jittered, object_frame, part_frame, placement, render_parts
from .raster import (
    REFERENCE_SIZE,
    Frame,
    blend,
    box_sdf,
    coverage,
    disc_sdf,
    fill,
    frame_at,
    lighting,
    outline,
    paint,
    polyline_alpha,
    smooth_noise,
    smoothstep,
)
from .scene import Layout, Part, Scene


class _Backdrop(NamedTuple):
    """What a layout object lies on: a grey level range, its texture, tint and the object's shadow."""

    gray: tuple[float, float]
    texture: float  # amplitude of its smooth noise
    grain: float  # sigma of that noise, reference pixels
    tint: tuple[float, float, float]
    shadow: float  # darkness of the object's drop shadow


_TABLE = _Backdrop((0.30, 0.36), 0.025, 8, (0.95, 0.97, 1.02), 0.45)
_CLOTH = _Backdrop((0.18, 0.23), 0.02, 3, (0.92, 0.95, 1.08), 0.4)


def _on_backdrop(
    rng: np.random.Generator,
    size: int,
    place: Placement,
    half: tuple[float, float],
    radius: float,
    backdrop: _Backdrop,
) -> tuple[np.ndarray, np.ndarray]:
    """The backdrop with a rounded rectangular object's drop shadow, and the object's signed distance.

    Returns:
        float32 ``(S, S, 3)`` canvas and ``(S, S)`` signed distance (pixels, negative inside)
        to the object of half extent ``half`` and corner ``radius`` (reference pixels).
    """
    s = place.scale
    gray = rng.uniform(*backdrop.gray) + backdrop.texture * smooth_noise(
        rng, (size, size), backdrop.grain * s
    )
    canvas = gray[..., None] * np.array(backdrop.tint, np.float32)
    full = object_frame(size, place)
    sdf = box_sdf(full.u, full.v, half[0] * s, half[1] * s, radius * s)
    shadow_sdf = box_sdf(full.u - 3 * s, full.v - 3 * s, half[0] * s, half[1] * s, radius * s)
    canvas = canvas * (1.0 - backdrop.shadow * (1.0 - smoothstep(-2 * s, 7 * s, shadow_sdf)))[..., None]
    return canvas, sdf


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


def _pads(size: int, part: Part, s: float) -> tuple[Frame | None, np.ndarray | None]:
    """Tinned pads and a silkscreen outline where a part belongs: (frame, (coverage pads, coverage silk))."""
    frame = part_frame(size, part, 5.0 * s)
    if frame is None:
        return None, None
    u, v, half_h, half_w = frame.u, frame.v, part.height / 2, part.width / 2
    if part.kind == "capacitor":
        pads = np.maximum(
            coverage(box_sdf(u, v - 0.45 * half_w, 3 * s, 2.5 * s)),
            coverage(box_sdf(u, v + 0.45 * half_w, 3 * s, 2.5 * s)),
        )
        silk = outline(disc_sdf(u, v, half_h + 3 * s), 1.2 * s)
    elif part.kind == "chip":
        pin_len = 6.0 * s
        pads = coverage(box_sdf(u, np.abs(v) - (half_w - pin_len / 2), half_h - 2 * s, pin_len / 2 + 0.5 * s))
        silk = outline(box_sdf(u, v, half_h + 3 * s, half_w - pin_len + 1 * s), 1.2 * s)
    else:
        end = 0.78 * half_w
        pads = coverage(box_sdf(u, np.abs(v) - end, half_h + 1 * s, half_w - end + 1 * s))
        silk = outline(box_sdf(u, v, half_h + 3 * s, half_w + 3 * s), 1.2 * s)
    return frame, np.stack([pads, silk])


def circuit_board(rng: np.random.Generator, size: int) -> Scene:
    s = size / REFERENCE_SIZE
    place = placement(rng, size)
    canvas, board_sdf = _on_backdrop(rng, size, place, _BOARD_HALF, 8, _TABLE)
    board = coverage(board_sdf)
    green = np.array([0.08, 0.34, 0.17], np.float32) * rng.uniform(0.96, 1.04, 3).astype(np.float32)
    mask_texture = (
        1.0 + 0.04 * smooth_noise(rng, (size, size), 1.5 * s) + 0.03 * smooth_noise(rng, (size, size), 12 * s)
    )
    canvas = blend(canvas, green * mask_texture[..., None], board)
    traces = np.zeros((size, size), np.float32)
    for trace in _BOARD_TRACES:
        points = np.array([place.point(y, x) for y, x in trace], np.float32)
        traces = np.maximum(traces, polyline_alpha(size, points, 3.0 * s))
    canvas = blend(canvas, green * 1.45, traces * board)
    ring, drill = (0.76, 0.63, 0.32), (0.10, 0.10, 0.10)
    for y, x in _BOARD_HOLES:
        cy, cx = place.point(y, x)
        frame = frame_at(size, cy, cx, 0.0, 10 * s)
        if frame is not None:
            paint(canvas, frame, fill(frame.u.shape, ring), coverage(disc_sdf(frame.u, frame.v, 8 * s)))
            paint(canvas, frame, fill(frame.u.shape, drill), coverage(disc_sdf(frame.u, frame.v, 4.5 * s)))
    designed = [place.part(*spec) for spec in _BOARD_PARTS]
    for part in designed:
        frame, cover = _pads(size, part, s)
        if frame is not None and cover is not None:
            paint(canvas, frame, fill(frame.u.shape, (0.80, 0.78, 0.72)), cover[0])
            paint(canvas, frame, fill(frame.u.shape, (0.90, 0.90, 0.86)), cover[1])
    layout = Layout(
        base=canvas.astype(np.float32),
        light=lighting(rng, size, 0.12),
        noise=0.012 * rng.standard_normal((size, size, 3), dtype=np.float32),
        parts=tuple(jittered(rng, part, s) for part in designed),
        spares=tuple(place.part(*spec) for spec in _BOARD_SPARES),
        substitutes=(),
        scale=s,
    )
    return Scene(image=render_parts(layout, layout.parts), region=board, layout=layout)


# Blister pack: a 3 × 4 grid of pockets, one round tablet in each.
_CARD_HALF = (86.0, 114.0)
_POCKET_PITCH = 52.0
_POCKET_RADIUS = 20.0
_TABLET_DIAMETER = 29.0
_POCKET_ROWS = (-1.0, 0.0, 1.0)
_POCKET_COLS = (-1.5, -0.5, 0.5, 1.5)


def blister_pack(rng: np.random.Generator, size: int) -> Scene:
    s = size / REFERENCE_SIZE
    place = placement(rng, size)
    canvas, card_sdf = _on_backdrop(rng, size, place, _CARD_HALF, 10, _CLOTH)
    card = coverage(card_sdf)
    brushed = smooth_noise(rng, (size, size), (0.8 * s, 25 * s))
    foil = (rng.uniform(0.70, 0.76) + 0.03 * brushed)[..., None] * np.array([0.99, 1.0, 1.02], np.float32)
    seal = outline(card_sdf + 5 * s, 1.5 * s)
    foil = foil * (1.0 - 0.12 * seal)[..., None]
    canvas = blend(canvas, foil, card)
    designed = []
    for row in _POCKET_ROWS:
        for col in _POCKET_COLS:
            y, x = row * _POCKET_PITCH, col * _POCKET_PITCH
            cy, cx = place.point(y, x)
            frame = frame_at(size, cy, cx, 0.0, (_POCKET_RADIUS + 3) * s)
            if frame is not None:
                r = _POCKET_RADIUS * s
                dome = coverage(disc_sdf(frame.u, frame.v, r))
                inside = fill(frame.u.shape, (0.60, 0.63, 0.68))
                inside *= (1.0 + 0.10 * (frame.u + frame.v) / r)[..., None]
                paint(canvas, frame, inside, dome)
                glint = outline(disc_sdf(frame.u, frame.v, 0.86 * r), 1.5 * s) * np.clip(
                    -(frame.u + frame.v) / r, 0, 1
                )
                paint(canvas, frame, fill(frame.u.shape, (0.97, 0.98, 1.0)), glint)
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
    layout = Layout(
        base=canvas.astype(np.float32),
        light=lighting(rng, size, 0.10),
        noise=0.012 * rng.standard_normal((size, size, 3), dtype=np.float32),
        parts=tuple(jittered(rng, part, s) for part in designed),
        spares=tuple(spares),
        substitutes=(
            Part("tablet", 0.0, 0.0, _TABLET_DIAMETER * s, _TABLET_DIAMETER * s, 0.0, style=1),
            Part("capsule", 0.0, 0.0, 34.0 * s, 15.0 * s, 0.0),
        ),
        scale=s,
    )
    return Scene(image=render_parts(layout, layout.parts), region=card, layout=layout)


_SHIFT_RANGE = (7.0, 14.0)  # reference pixels
_TURN_RANGE = (25.0, 90.0)  # degrees
_MIN_SHIFT = 2.0
_MIN_TURN = 6.0


def _layout_of(scene: Scene) -> Layout:
    assert scene.layout is not None
    return scene.layout


def _edited(scene: Scene, parts: list[Part], changed: Sequence[Part]) -> tuple[np.ndarray, np.ndarray]:
    layout = _layout_of(scene)
    size = scene.image.shape[0]
    alpha = np.zeros((size, size), np.float32)
    for part in changed:
        alpha = np.maximum(alpha, footprint(size, part, layout.scale))
    return render_parts(layout, parts), alpha


def missing_part(rng: np.random.Generator, scene: Scene, contrast: float) -> tuple[np.ndarray, np.ndarray]:
    parts = list(_layout_of(scene).parts)
    gone = parts.pop(int(rng.integers(len(parts))))
    return _edited(scene, parts, [gone])


def shifted_part(rng: np.random.Generator, scene: Scene, contrast: float) -> tuple[np.ndarray, np.ndarray]:
    layout = _layout_of(scene)
    parts = list(layout.parts)
    k = int(rng.integers(len(parts)))
    distance = max(rng.uniform(*_SHIFT_RANGE) * contrast, _MIN_SHIFT) * layout.scale
    direction = rng.uniform(0, 2 * math.pi)
    moved = parts[k].moved(distance * math.sin(direction), distance * math.cos(direction))
    old, parts[k] = parts[k], moved
    return _edited(scene, parts, [old, moved])


def turned_part(rng: np.random.Generator, scene: Scene, contrast: float) -> tuple[np.ndarray, np.ndarray]:
    layout = _layout_of(scene)
    parts = list(layout.parts)
    turnable = [i for i, p in enumerate(parts) if not math.isclose(p.height, p.width)]
    k = turnable[int(rng.integers(len(turnable)))]
    angle = max(rng.uniform(*_TURN_RANGE) * contrast, _MIN_TURN) * (1 if rng.random() < 0.5 else -1)
    turned = parts[k].moved(turn=math.radians(angle))
    old, parts[k] = parts[k], turned
    return _edited(scene, parts, [old, turned])


def extra_part(rng: np.random.Generator, scene: Scene, contrast: float) -> tuple[np.ndarray, np.ndarray]:
    layout = _layout_of(scene)
    spare = jittered(rng, layout.spares[int(rng.integers(len(layout.spares)))], layout.scale)
    spare = spare.moved(turn=rng.uniform(0, math.pi) if spare.kind == "tablet" else 0.0)
    return _edited(scene, [*layout.parts, spare], [spare])


def wrong_part(rng: np.random.Generator, scene: Scene, contrast: float) -> tuple[np.ndarray, np.ndarray]:
    layout = _layout_of(scene)
    parts = list(layout.parts)
    k = int(rng.integers(len(parts)))
    wrong = layout.substitutes[int(rng.integers(len(layout.substitutes)))]
    old = parts[k]
    parts[k] = wrong.moved(old.cy, old.cx, old.angle + rng.uniform(0, math.pi))
    return _edited(scene, parts, [old, parts[k]])
