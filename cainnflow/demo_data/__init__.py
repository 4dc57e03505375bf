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

Modules: :mod:`.raster` (noise, lighting, blobs, curves, signed distances), :mod:`.scene`
(the scene record defects work on), :mod:`.textures` (carpet, metal, pill and their defects),
:mod:`.parts` and :mod:`.layouts` (the circuit board and blister pack, structural defects),
:mod:`.registry` (the one table of categories and defects), :mod:`.dataset` (rendering a
sample, writing the dataset).
"""

from .dataset import (
    COMPLETE_MARKER,
    TEST_SPLIT_MARKER,
    DemoSample,
    demo_dataset_ready,
    demo_test_split_ready,
    make_demo_dataset,
    render_demo_sample,
)
from .registry import DEMO_CATEGORIES, DEMO_DEFECTS

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
