"""What the demo's drawing and defect functions share: a rendered scene, its parts and layout."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .raster import REFERENCE_SIZE

MASK_ALPHA = 0.5  # a pixel is in the mask when its defect opacity reaches this


@dataclass(frozen=True)
class Part:
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

    def moved(self, dy: float = 0.0, dx: float = 0.0, turn: float = 0.0) -> Part:
        return Part(
            self.kind, self.cy + dy, self.cx + dx, self.height, self.width, self.angle + turn, self.style
        )


@dataclass(frozen=True)
class Layout:
    """What a structural defect needs to repaint a scene."""

    base: np.ndarray  # float32 (S, S, 3): everything below the parts
    light: np.ndarray  # float32 (S, S) multiplicative lighting
    noise: np.ndarray  # float32 (S, S, 3) additive sensor noise
    parts: tuple[Part, ...]
    spares: tuple[Part, ...]  # parts an "extra" defect may add (free spots of the layout)
    substitutes: tuple[Part, ...]  # wrong parts a swap may put in a part's place (centred at 0, 0)
    scale: float


@dataclass(frozen=True)
class Scene:
    """A rendered normal image plus what defects need to know about it."""

    image: np.ndarray  # float32 (S, S, 3) in [0, 1]
    region: np.ndarray  # float32 (S, S) where defects may go (1 = surface / object)
    background: np.ndarray | None = None  # float32 (S, S, 3) behind an object
    center: tuple[float, float] = (0.0, 0.0)  # (y, x) of the object
    radius: float = 0.0
    layout: Layout | None = None  # the parts of a structural scene


# A defect takes (rng, scene, contrast) and returns (image float (S, S, 3), alpha (S, S)).
DefectFn = Callable[[np.random.Generator, Scene, float], tuple[np.ndarray, np.ndarray]]


def scaled(scene: Scene) -> float:
    return scene.image.shape[0] / REFERENCE_SIZE


def point_in_region(rng: np.random.Generator, scene: Scene, margin: float) -> tuple[float, float]:
    """A random (y, x) point on the scene's defect region, at least ``margin`` from the border."""
    size = scene.image.shape[0]
    if scene.radius > 0:
        r = scene.radius * math.sqrt(rng.uniform(0, 1)) * 0.75
        a = rng.uniform(0, 2 * math.pi)
        return scene.center[0] + r * math.sin(a), scene.center[1] + r * math.cos(a)
    low, high = margin, size - margin
    return float(rng.uniform(low, high)), float(rng.uniform(low, high))
