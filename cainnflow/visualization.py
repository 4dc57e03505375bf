"""Pure numpy / PIL helpers that turn maps and features into pictures.

Nothing here knows about Streamlit: the app and the command line both call these.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from matplotlib import colormaps
from PIL import Image
from scipy import ndimage

if TYPE_CHECKING:  # torch stays optional here: the export runtime draws overlays without it
    from torch import Tensor

__all__ = ["FeaturePCA", "colorize", "contour_mask", "overlay_heatmap", "to_uint8_image"]

DEFAULT_COLORMAP = "jet"
CONTOUR_COLOR = (255, 255, 255)
GT_CONTOUR_COLOR = (0, 255, 0)
PCA_COMPONENTS = 3
PCA_LOW_PERCENTILE, PCA_HIGH_PERCENTILE = 1.0, 99.0


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


@dataclass(frozen=True)
class FeaturePCA:
    """A fixed RGB colouring of feature maps: three principal components of one map.

    Fitting on an original feature map and applying to a disturbed or generated one shows
    both in the same colour space (same centre, axes and colour range).

    Attributes:
        mean: (C,) centre. basis: (C, 3) projection. low, high: (3,) colour range.
    """

    mean: np.ndarray
    basis: np.ndarray
    low: np.ndarray
    high: np.ndarray

    @classmethod
    def fit(cls, features: np.ndarray | Tensor) -> FeaturePCA:
        """Fits on one feature map (C, H, W)."""
        flat = _positions(features)
        mean = flat.mean(axis=0)
        _, _, vt = np.linalg.svd(flat - mean, full_matrices=False)
        basis = vt[:PCA_COMPONENTS].T
        if basis.shape[1] < PCA_COMPONENTS:
            basis = np.pad(basis, ((0, 0), (0, PCA_COMPONENTS - basis.shape[1])))
        proj = (flat - mean) @ basis
        low, high = np.percentile(proj, [PCA_LOW_PERCENTILE, PCA_HIGH_PERCENTILE], axis=0)
        return cls(mean, basis, low, high)

    def to_rgb(self, features: np.ndarray | Tensor, size: int | None = None) -> np.ndarray:
        """RGB uint8 (H, W, 3) (or (size, size, 3), nearest upsampling) of a map (C, H, W)."""
        _, h, w = features.shape
        proj = (_positions(features) - self.mean) @ self.basis
        rgb = np.clip((proj - self.low) / np.maximum(self.high - self.low, 1e-12), 0.0, 1.0)
        img = Image.fromarray((rgb.reshape(h, w, PCA_COMPONENTS) * 255).astype(np.uint8))
        if size is not None:
            img = img.resize((size, size), Image.Resampling.NEAREST)
        return np.asarray(img)


def _positions(features: np.ndarray | Tensor) -> np.ndarray:
    """(C, H, W) → (H·W, C) float64."""
    arr = features.detach().cpu().numpy() if hasattr(features, "detach") else np.asarray(features)
    if arr.ndim != 3:
        raise ValueError(f"expected a feature map (C, H, W), got shape {arr.shape}")
    return arr.reshape(arr.shape[0], -1).T.astype(np.float64)
