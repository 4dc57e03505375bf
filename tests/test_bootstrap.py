"""Resampled AUROCs: binned pixel AUROC against scikit-learn, weighted image AUROC, stratified resamples."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from cainnflow.bootstrap import (
    pixel_histograms,
    resample_weights,
    weighted_aupro,
    weighted_image_auroc,
    weighted_pixel_auroc,
)
from cainnflow.metrics import aupro


def _maps(seed: int = 0):
    rng = np.random.default_rng(seed)
    maps = rng.normal(size=(24, 32, 32)).astype(np.float32)
    masks = np.zeros(maps.shape, bool)
    masks[12:, 8:16, 10:20] = True
    maps[masks] += 0.8
    maps[:, :4] = 0.25  # a block of tied values across good and defect images
    return maps, masks


@pytest.mark.parametrize("bins", [256, 4096])
def test_binned_pixel_auroc_is_within_one_bin_of_the_exact_value(bins):
    maps, masks = _maps()
    hist = pixel_histograms(maps, masks, bins=bins)
    assert hist.shape == (24, 2, bins) and hist.sum() == maps.size and hist[:, 1].sum() == masks.sum()
    binned = weighted_pixel_auroc(hist, np.ones((1, 24)))[0]
    assert abs(binned - roc_auc_score(masks.ravel(), maps.ravel())) < 1.0 / bins


def test_a_resample_is_the_auroc_of_the_images_it_repeats():
    maps, masks = _maps(1)
    labels = np.r_[np.zeros(12), np.ones(12)]
    scores = np.round(maps.reshape(24, -1).max(1), 1)  # rounded: ties between good and defective
    weights = resample_weights(labels, 5, seed=3)
    images = np.repeat(np.arange(24), weights[2].astype(int))
    assert weighted_image_auroc(labels, scores, weights)[2] == pytest.approx(
        roc_auc_score(labels[images], scores[images])
    )
    exact = roc_auc_score(masks[images].ravel(), maps[images].ravel())
    assert weighted_pixel_auroc(pixel_histograms(maps, masks), weights)[2] == pytest.approx(exact, abs=1e-3)


def test_resamples_keep_each_class_size_and_repeat_with_the_seed():
    labels = np.r_[np.zeros(3), np.ones(17)]
    weights = resample_weights(labels, 200, seed=0)
    assert weights.shape == (200, 20)
    assert (weights[:, :3].sum(1) == 3).all() and (weights[:, 3:].sum(1) == 17).all()
    assert np.array_equal(weights, resample_weights(labels, 200, seed=0))
    assert not np.array_equal(weights, resample_weights(labels, 200, seed=1))
    assert (weights[:, :3] == 3).any(axis=1).any()  # a resample can repeat one good image


def test_mismatched_maps_and_masks_are_refused():
    with pytest.raises(ValueError, match="must both be"):
        pixel_histograms(np.zeros((2, 8, 8)), np.zeros((2, 8, 9), bool))


def _one_region_maps(seed: int = 0):
    """Good images, then images with one rectangle each of varied size and contrast."""
    rng = np.random.default_rng(seed)
    maps = rng.normal(size=(30, 48, 48)).astype(np.float32)
    masks = np.zeros(maps.shape, bool)
    for i in range(10, 30):
        y, x = rng.integers(2, 34, size=2)
        h, w = rng.integers(2, 13, size=2)
        masks[i, y : y + h, x : x + w] = True
        maps[i][masks[i]] += rng.uniform(0.3, 3.0)
    return maps, masks


@pytest.mark.parametrize("fpr_limit", [0.05, 0.3, 1.0])
def test_binned_aupro_matches_the_exact_aupro_of_one_region_images(fpr_limit):
    maps, masks = _one_region_maps()
    binned = weighted_aupro(pixel_histograms(maps, masks), np.ones((1, 30)), fpr_limit)[0]
    assert binned == pytest.approx(aupro(masks, maps, fpr_limit), abs=2e-3)


def test_a_resampled_aupro_is_the_aupro_of_the_images_it_repeats():
    maps, masks = _one_region_maps(1)
    hist = pixel_histograms(maps, masks)
    weights = resample_weights(np.r_[np.zeros(10), np.ones(20)], 4, seed=2)
    values = weighted_aupro(hist, weights)
    for row, value in zip(weights, values, strict=True):
        index = np.repeat(np.arange(30), row.astype(int))
        assert value == pytest.approx(aupro(masks[index], maps[index]), abs=2e-3)
    # A better map (more contrast in the regions) scores higher on every resample.
    sharper = maps + 2.0 * masks
    assert np.all(weighted_aupro(pixel_histograms(sharper, masks), weights) > values)
    with pytest.raises(ValueError, match="fpr_limit"):
        weighted_aupro(hist, weights, 0.0)
