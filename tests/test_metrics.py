"""Tests for cainnflow.metrics against hand-computed cases."""

import numpy as np
import pytest

from cainnflow.errors import DataError
from cainnflow.metrics import (
    aupro,
    confusion_at,
    f1_optimal_threshold,
    image_auroc,
    percentile_threshold,
    pixel_auroc,
    pixel_roc_curve_points,
    pr_curve_points,
    pro_curve_points,
    roc_curve_points,
)

LABELS = np.array([0, 0, 1, 1])
SCORES = np.array([0.1, 0.4, 0.35, 0.8])


def test_image_auroc_hand_computed():
    # pairs (pos, neg): (.35,.1) ok, (.35,.4) wrong, (.8,.1) ok, (.8,.4) ok -> 3/4
    assert image_auroc(LABELS, SCORES) == pytest.approx(0.75)
    assert image_auroc([0, 1], [0.5, 0.5]) == pytest.approx(0.5)
    assert image_auroc([0, 0], [0.1, 0.2]) is None
    assert image_auroc([1, 1], [0.1, 0.2]) is None


def test_input_validation():
    with pytest.raises(ValueError):
        image_auroc([0, 1, 1], [0.1, 0.2])
    with pytest.raises(ValueError):
        image_auroc([0, 2], [0.1, 0.2])
    with pytest.raises(ValueError):
        image_auroc([0, 1], [0.1, np.nan])


def test_curves():
    roc = roc_curve_points(LABELS, SCORES)
    assert roc is not None
    assert roc.fpr[0] == 0 and roc.fpr[-1] == 1 and roc.tpr[-1] == 1
    area = float(np.sum(np.diff(roc.fpr) * (roc.tpr[1:] + roc.tpr[:-1]) / 2))
    assert area == pytest.approx(0.75)
    pr = pr_curve_points(LABELS, SCORES)
    assert pr is not None and pr.precision.shape[0] == pr.thresholds.shape[0] + 1
    assert roc_curve_points([0, 0], [1, 2]) is None
    assert pr_curve_points([0, 0], [1, 2]) is None


def test_f1_optimal_threshold():
    threshold, f1 = f1_optimal_threshold(LABELS, SCORES)
    # >= .35 -> tp 2, fp 1 -> P 2/3, R 1 -> F1 0.8 (>= .8 gives P 1, R .5 -> 0.667)
    assert threshold == pytest.approx(0.35)
    assert f1 == pytest.approx(0.8)
    threshold, f1 = f1_optimal_threshold([0, 0, 1, 1], [0.1, 0.2, 0.7, 0.9])
    assert f1 == pytest.approx(1.0) and threshold == pytest.approx(0.7)
    with pytest.raises(DataError):
        f1_optimal_threshold([0, 0], [0.1, 0.2])


def test_confusion_at():
    stats = confusion_at(LABELS, SCORES, 0.35)
    assert (stats.tp, stats.fp, stats.tn, stats.fn) == (2, 1, 1, 0)
    assert stats.precision == pytest.approx(2 / 3)
    assert stats.recall == pytest.approx(1.0)
    assert stats.f1 == pytest.approx(0.8)
    assert stats.accuracy == pytest.approx(0.75)
    assert stats.fpr == pytest.approx(0.5)
    none = confusion_at(LABELS, SCORES, 10.0)
    assert (none.tp, none.fp, none.tn, none.fn) == (0, 0, 2, 2)
    assert none.precision == 0.0 and none.f1 == 0.0


def test_percentile_threshold():
    assert percentile_threshold(np.arange(101.0), 99.0) == pytest.approx(99.0)
    assert percentile_threshold([3.0]) == pytest.approx(3.0)
    with pytest.raises(DataError):
        percentile_threshold([])
    with pytest.raises(ValueError):
        percentile_threshold([1.0], 101)


def _two_region_case() -> np.ndarray:
    masks = np.zeros((2, 8, 8), bool)
    masks[0, 1:3, 1:3] = True  # region A, 4 px
    masks[0, 5:7, 5:7] = True  # region B, 4 px
    return masks


def test_pixel_auroc():
    masks = _two_region_case()
    assert pixel_auroc(masks, masks.astype(float)) == pytest.approx(1.0)
    assert pixel_auroc(masks, 1.0 - masks) == pytest.approx(0.0)
    assert pixel_auroc(np.zeros((1, 4, 4), bool), np.zeros((1, 4, 4))) is None
    # an image without ground truth is excluded: its high scores on "good" pixels do not count
    maps = masks.astype(float)
    maps[1] = 5.0
    assert pixel_auroc(masks, maps) < 1.0
    assert pixel_auroc(masks, maps, has_mask=[True, False]) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        pixel_auroc(masks, maps[:1])


def test_pixel_roc_curve_subsampled():
    rng = np.random.default_rng(0)
    masks = rng.random((3, 32, 32)) > 0.8
    maps = rng.random((3, 32, 32)) + masks
    curve = pixel_roc_curve_points(masks, maps, max_points=50)
    assert curve is not None and 2 <= curve.fpr.size <= 50
    assert curve.fpr[0] == 0 and curve.fpr[-1] == 1 and curve.tpr[-1] == 1


def test_aupro_perfect_and_wrong():
    masks = _two_region_case()
    assert aupro(masks, masks.astype(float)) == pytest.approx(1.0)
    assert aupro(masks, 1.0 - masks) == pytest.approx(0.0)
    assert aupro(np.zeros((1, 4, 4), bool), np.zeros((1, 4, 4))) is None


def test_aupro_hand_computed():
    masks = _two_region_case()  # 8 defect px in 2 regions, 120 good px
    maps = np.zeros(masks.shape)
    maps[0, 1:3, 1:3] = 3.0  # region A found first: PRO 0.5 at FPR 0
    maps[1, 0, 0 : 12 // 2] = 2.0  # 6 good px next -> FPR 6/120 = 0.05
    maps[0, 5:7, 5:7] = 1.0  # then region B: PRO 1.0 at FPR 0.05
    # curve (0,0) (0,.5) (.05,.5) (.05,1) (1,1); area to 0.3 = .05*.5 + .25*1 = .275
    assert aupro(masks, maps, fpr_limit=0.3) == pytest.approx(0.275 / 0.3)
    fpr, pro = pro_curve_points(masks, maps)
    assert fpr[0] == 0 and pro[0] == 0 and fpr[-1] == pytest.approx(1) and pro[-1] == pytest.approx(1)
    # partial region overlap: half of region B above threshold counts 0.5 for that region
    maps2 = np.zeros(masks.shape)
    maps2[0, 1:3, 1:3] = 2.0
    maps2[0, 5, 5:7] = 2.0
    # at FPR 0: PRO = (1 + 0.5) / 2 = 0.75, then the rest ties with all good pixels at FPR 1
    fpr_limit = 0.5
    expected = 0.5 * (0.75 + (0.75 + fpr_limit * 0.25)) * fpr_limit / fpr_limit
    assert aupro(masks, maps2, fpr_limit=fpr_limit) == pytest.approx(expected)


def test_aupro_regions_weigh_equally():
    masks = np.zeros((1, 20, 20), bool)
    masks[0, 0:10, 0:10] = True  # big region, 100 px
    masks[0, 15, 15] = True  # tiny region, 1 px
    maps_big = masks.astype(float)
    maps_big[0, 15, 15] = 0.0  # misses only the tiny region
    value = aupro(masks, maps_big, fpr_limit=0.3)
    # PRO is 0.5 until the tiny region is reached together with all good pixels (FPR 1)
    assert 0.5 < value < 0.6


def test_aupro_random_map_and_memory_sane():
    rng = np.random.default_rng(1)
    masks = np.zeros((20, 128, 128), bool)
    masks[:10, 30:60, 40:80] = True
    value = aupro(masks, rng.random(masks.shape).astype(np.float32))
    assert value == pytest.approx(0.15, abs=0.02)  # PRO ≈ FPR -> mean over [0, .3] is .15


def test_headline_metrics_on_a_perfect_map():
    masks = _two_region_case()
    assert image_auroc([1, 0], [0.9, 0.1]) == pytest.approx(1.0)
    assert pixel_auroc(masks, masks.astype(float)) == pytest.approx(1.0)
    assert aupro(masks, masks.astype(float)) == pytest.approx(1.0)
