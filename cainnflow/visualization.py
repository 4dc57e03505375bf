"""Pure numpy / PIL helpers that turn maps and features into pictures.

Nothing here knows about Streamlit: the app and the command line both call these.
"""

from __future__ import annotations

import numpy as np
from matplotlib import colormaps
from PIL import Image
from scipy import ndimage

__all__ = ["colorize", "contour_mask", "overlay_heatmap", "pca_rgb", "to_uint8_image"]

DEFAULT_COLORMAP = "jet"
CONTOUR_COLOR = (255, 255, 255)
GT_CONTOUR_COLOR = (0, 255, 0)


def colorize(values: np.ndarray, vmin: float, vmax: float, cmap: str = DEFAULT_COLORMAP) -> np.ndarray:
    """Maps values (H, W) to RGB uint8 (H, W, 3) with a fixed range ``[vmin, vmax]``."""
    span = max(vmax - vmin, 1e-12)
    normed = np.clip((np.asarray(values, dtype=np.float32) - vmin) / span, 0.0, 1.0)
    rgba = colormaps[cmap](normed)
    return (rgba[..., :3] * 255).astype(np.uint8)


def to_uint8_image(image: Image.Image, size: int | tuple[int, int]) -> np.ndarray:
    """Resizes an image to ``size`` and returns RGB uint8 (H, W, 3)."""
    wh = (size, size) if isinstance(size, int) else (size[1], size[0])
    return np.asarray(image.convert("RGB").resize(wh, Image.Resampling.BILINEAR))


def contour_mask(mask: np.ndarray, width: int = 1) -> np.ndarray:
    """The outline (H, W) bool of a binary region mask (H, W)."""
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        return mask
    eroded = ndimage.binary_erosion(mask, iterations=width, border_value=0)
    return mask & ~eroded


def overlay_heatmap(
    image: Image.Image | np.ndarray,
    amap: np.ndarray,
    *,
    vmin: float,
    vmax: float,
    alpha: float = 0.5,
    threshold: float | None = None,
    gt_mask: np.ndarray | None = None,
    cmap: str = DEFAULT_COLORMAP,
) -> Image.Image:
    """Blends an anomaly map over the image, with optional outlines.

    Args:
        image: the input image (any size; resized to the map) or RGB uint8 (H, W, 3).
        amap: anomaly map (H, W).
        vmin, vmax: fixed colour range (from the model's normal statistics, not this image).
        alpha: heatmap opacity in [0, 1].
        threshold: if given, the region ``amap >= threshold`` is outlined in white.
        gt_mask: if given, the ground-truth region (H, W) is outlined in green.
    """
    h, w = amap.shape
    base = to_uint8_image(image, (h, w)) if isinstance(image, Image.Image) else np.asarray(image, np.uint8)
    heat = colorize(amap, vmin, vmax, cmap)
    out = (1 - alpha) * base.astype(np.float32) + alpha * heat.astype(np.float32)
    out = out.clip(0, 255).astype(np.uint8)
    if threshold is not None:
        out[contour_mask(amap >= threshold, width=2)] = CONTOUR_COLOR
    if gt_mask is not None:
        out[contour_mask(np.asarray(gt_mask, bool), width=1)] = GT_CONTOUR_COLOR
    return Image.fromarray(out)


def pca_rgb(features: np.ndarray, size: int | None = None, basis: np.ndarray | None = None) -> np.ndarray:
    """Projects a feature map (C, H, W) on its first three principal components as RGB.

    Args:
        features: (C, H, W) array.
        size: optional output side in pixels (nearest-neighbour upsampling).
        basis: optional (C, 3) projection to reuse (to compare two maps in one colour space).

    Returns:
        RGB uint8 (H, W, 3) (or (size, size, 3)).
    """
    c, h, w = features.shape
    flat = features.reshape(c, -1).T.astype(np.float64)
    centred = flat - flat.mean(axis=0, keepdims=True)
    if basis is None:
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        basis = vt[:3].T
        if basis.shape[1] < 3:
            basis = np.pad(basis, ((0, 0), (0, 3 - basis.shape[1])))
    proj = centred @ basis
    lo, hi = np.percentile(proj, [1, 99], axis=0)
    rgb = np.clip((proj - lo) / np.maximum(hi - lo, 1e-12), 0, 1).reshape(h, w, 3)
    img = Image.fromarray((rgb * 255).astype(np.uint8))
    if size is not None:
        img = img.resize((size, size), Image.Resampling.NEAREST)
    return np.asarray(img)
