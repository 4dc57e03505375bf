"""visualization: colour maps, outlines, overlays and PCA colouring (pure numpy / PIL)."""

import numpy as np
import pytest
from PIL import Image

from cainnflow.visualization import (
    CONTOUR_COLOR,
    GT_CONTOUR_COLOR,
    FeaturePCA,
    colorize,
    contour_mask,
    overlay_heatmap,
    to_uint8_image,
)


def test_colorize_uses_the_fixed_range():
    values = np.array([[-1.0, 0.0, 0.5, 1.0, 2.0]])
    rgb = colorize(values, vmin=0.0, vmax=1.0, cmap="gray")
    assert rgb.shape == (1, 5, 3) and rgb.dtype == np.uint8
    # clipped below and above the range, monotone inside it
    assert (rgb[0, 0] == rgb[0, 1]).all() and (rgb[0, 3] == rgb[0, 4]).all()
    assert rgb[0, 1, 0] < rgb[0, 2, 0] < rgb[0, 3, 0]
    # a constant map does not divide by zero
    assert colorize(np.ones((2, 2)), 1.0, 1.0).shape == (2, 2, 3)


def test_contour_mask_is_the_outline_only():
    mask = np.zeros((9, 9), bool)
    mask[2:7, 2:7] = True
    outline = contour_mask(mask)
    assert outline[2, 2] and outline[2, 4] and not outline[4, 4]
    assert (outline <= mask).all() and outline.sum() == 16
    assert not contour_mask(np.zeros((4, 4))).any()


def test_overlay_blends_and_outlines():
    image = Image.new("RGB", (8, 8), (0, 0, 0))
    amap = np.zeros((16, 16), np.float32)
    amap[4:12, 4:12] = 1.0
    gt = np.zeros((16, 16), bool)
    gt[0:3, 0:3] = True
    out = np.asarray(overlay_heatmap(image, amap, vmin=0, vmax=1, alpha=0.5, threshold=0.5, gt_mask=gt))
    assert out.shape == (16, 16, 3)
    assert tuple(out[4, 4]) == CONTOUR_COLOR  # predicted region outlined
    assert tuple(out[0, 0]) == GT_CONTOUR_COLOR  # ground truth outlined
    plain = np.asarray(overlay_heatmap(image, amap, vmin=0, vmax=1, alpha=0.0))
    assert (plain == 0).all()  # alpha 0 shows the image only


def test_to_uint8_image_resizes_to_h_w():
    arr = to_uint8_image(Image.new("L", (10, 20), 128), (4, 6))
    assert arr.shape == (4, 6, 3) and arr.dtype == np.uint8 and (arr == 128).all()


def test_feature_pca_orders_components_and_refuses_bad_shapes():
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(5, 6, 6))
    feats[0] *= 10  # the first channel dominates the first component
    pca = FeaturePCA.fit(feats)
    assert abs(pca.basis[0, 0]) > 0.9
    rgb = pca.to_rgb(feats, size=12)
    assert rgb.shape == (12, 12, 3) and rgb.dtype == np.uint8
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        FeaturePCA.fit(np.zeros((3, 4)))
