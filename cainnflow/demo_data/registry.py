"""The demo categories: one registry of how each normal image is drawn and which defects it gets.

:data:`CATEGORIES` is the only list of categories and defects; :data:`DEMO_CATEGORIES` and
:data:`DEMO_DEFECTS` are read from it. The order of the defects is the order they are written
in; a defect's random stream depends on its name only (see ``render_demo_sample``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from . import layouts, textures
from .scene import DefectFn, Scene

__all__ = ["CATEGORIES", "DEMO_CATEGORIES", "DEMO_DEFECTS", "DemoCategory"]


@dataclass(frozen=True, eq=False)
class DemoCategory:
    """One demo category.

    Attributes:
        name: the category folder.
        kind: ``"texture"``, ``"surface"``, ``"object"`` or ``"layout"`` (structural defects).
        scene: draws a normal image, ``(rng, size) -> Scene``.
        defects: defect name → ``(rng, scene, contrast) -> (image, alpha)``, in writing order.
    """

    name: str
    kind: str
    scene: Callable[[np.random.Generator, int], Scene]
    defects: Mapping[str, DefectFn]


CATEGORIES: dict[str, DemoCategory] = {
    category.name: category
    for category in (
        DemoCategory(
            "carpet_weave",
            "texture",
            textures.carpet_weave,
            {
                "cut": textures.carpet_cut,
                "hole": textures.carpet_hole,
                "stain": textures.carpet_stain,
                "thread": textures.carpet_thread,
            },
        ),
        DemoCategory(
            "metal_plate",
            "surface",
            textures.metal_plate,
            {"dent": textures.metal_dent, "scratch": textures.metal_scratch, "stain": textures.metal_stain},
        ),
        DemoCategory(
            "pill_disc",
            "object",
            textures.pill_disc,
            {
                "chip": textures.pill_chip,
                "contamination": textures.pill_contamination,
                "crack": textures.pill_crack,
                "stain": textures.pill_stain,
            },
        ),
        DemoCategory(
            "circuit_board",
            "layout",
            layouts.circuit_board,
            {
                "missing": layouts.missing_part,
                "shifted": layouts.shifted_part,
                "rotated": layouts.turned_part,
                "extra": layouts.extra_part,
            },
        ),
        DemoCategory(
            "blister_pack",
            "layout",
            layouts.blister_pack,
            {
                "empty": layouts.missing_part,
                "shifted": layouts.shifted_part,
                "extra": layouts.extra_part,
                "wrong_pill": layouts.wrong_part,
            },
        ),
    )
}
DEMO_CATEGORIES: tuple[str, ...] = tuple(CATEGORIES)
DEMO_DEFECTS: dict[str, tuple[str, ...]] = {name: tuple(c.defects) for name, c in CATEGORIES.items()}
