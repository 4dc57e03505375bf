"""Tests for cainnflow/explain.py (tiny backbone, CPU, milliseconds)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cainnflow.latent import (
    LatentInjection,
    feature_difference_maps,
    normal_qq,
    perturbation_experiment,
    squared_norm_maps,
)
from cainnflow.metrics import misclassified_first
from cainnflow.model import CAINNFlow, CAINNFlowConfig
from cainnflow.subnet import VARIANTS, subnet_parameter_counts
from cainnflow.toy import (
    CouplingParams,
    affine_coupling,
    coupling_grid,
    inverse_affine_coupling,
    polygon_area,
)
from cainnflow.visualization import FeaturePCA


@pytest.fixture
def model(tiny_backbone) -> CAINNFlow:
    torch.manual_seed(0)
    m = CAINNFlow(tiny_backbone, CAINNFlowConfig(image_size=64, steps=1, sigma=1.0)).eval()
    # Give the zero-initialised last convolutions some weight so the flow is not the identity.
    with torch.no_grad():
        for p in m.flows.parameters():
            if p.is_floating_point():
                p.add_(0.01 * torch.randn_like(p))
    return m


def test_squared_norm_and_difference_maps() -> None:
    z = [torch.ones(2, 3, 4, 5), torch.zeros(2, 6, 2, 2)]
    maps = squared_norm_maps(z)
    assert maps[0].shape == (2, 4, 5) and np.allclose(maps[0], 3.0)
    assert np.allclose(maps[1], 0.0)
    diff = feature_difference_maps(z, [zi + 2.0 for zi in z])
    assert diff[1].shape == (2, 2, 2) and np.allclose(diff[1], 2.0)


def test_normal_qq_is_diagonal_for_normal_samples() -> None:
    values = torch.randn(50_000, generator=torch.Generator().manual_seed(0))
    theo, sample = normal_qq(values, n_points=50)
    assert theo.shape == sample.shape == (50,)
    assert np.max(np.abs(theo - sample)) < 0.1
    with pytest.raises(ValueError):
        normal_qq(np.array([]))


def test_feature_pca_same_space() -> None:
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(8, 6, 7))
    pca = FeaturePCA.fit(feats)
    rgb = pca.to_rgb(feats)
    assert rgb.shape == (6, 7, 3) and rgb.dtype == np.uint8
    assert pca.to_rgb(feats, size=21).shape == (21, 21, 3)
    # A change in one position leaves the colour of every other position unchanged.
    changed = feats.copy()
    changed[:, 0, 0] += 5.0
    rgb2 = pca.to_rgb(changed)
    assert np.array_equal(rgb2[1:], rgb[1:])
    assert FeaturePCA.fit(torch.as_tensor(feats[:2])).basis.shape == (2, 3)  # fewer channels than 3


def test_perturbation_lights_up_where_noise_goes(model: CAINNFlow, tiny_backbone) -> None:
    images = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    features = model.extract_features(images)
    model.fit_standardizers(features)
    h, w = model.feature_shapes[0][1:]
    injection = LatentInjection(scale=0, points=((3, 12),), amplitude=8.0, extent=1.0)
    result = perturbation_experiment(model, features, injection)
    assert result.map_original.shape == result.map_perturbed.shape == (1, 64, 64)
    assert not np.isnan(result.map_perturbed).any()
    # The other scale is untouched; the disturbed one differs most near the injected point.
    assert torch.equal(result.features_perturbed[1], features[1])
    diff0 = result.difference[0][0]
    assert diff0.shape == (h, w)
    assert np.unravel_index(np.argmax(diff0), diff0.shape) == pytest.approx((3, 12), abs=2)
    gain = result.map_perturbed[0] - result.map_original[0]
    r, c = np.unravel_index(np.argmax(gain), gain.shape)
    assert abs(r - 3 * 4 - 2) <= 8 and abs(c - 12 * 4 - 2) <= 8  # reduction 4 in the tiny backbone
    # The scores are the model's own (what its threshold judges), and the injection raised it.
    _, expected = model.score(result.z)
    np.testing.assert_allclose(result.score_original, expected.numpy(), atol=1e-6)
    assert result.score_perturbed[0] > result.score_original[0]
    # Reusing precomputed latents gives the same result.
    again = perturbation_experiment(model, features, injection, z=result.z)
    assert np.allclose(again.map_perturbed, result.map_perturbed, atol=1e-5)


def test_affine_coupling_inverse_and_determinant() -> None:
    params = CouplingParams(s0=0.3, s1=0.5, t0=-0.2, t1=0.7)
    pts = np.random.default_rng(0).normal(size=(100, 2))
    v, log_det = affine_coupling(pts, params)
    assert np.allclose(inverse_affine_coupling(v, params), pts)
    assert np.allclose(v[:, 0], pts[:, 0])
    # A tiny square around (x1, x2) changes area by exp(s(x1)).
    x1, x2, eps = 0.8, -0.4, 1e-3
    square = np.array([[x1, x2], [x1 + eps, x2], [x1 + eps, x2 + eps], [x1, x2 + eps]])
    ratio = polygon_area(affine_coupling(square, params)[0]) / polygon_area(square)
    assert ratio == pytest.approx(np.exp(params.s(np.array(x1))), rel=1e-2)
    assert log_det.shape == (100,)


def test_coupling_grid_shapes() -> None:
    before, after = coupling_grid(CouplingParams(s0=1.0), lines=5, resolution=10)
    assert len(before) == len(after) == 10
    assert all(line.shape == (10, 2) for line in after)
    # Pure scaling of x2 by e: horizontal line y = lim maps to y = e·lim.
    assert np.allclose(after[-1][:, 1], np.e * 2.0)


def test_subnet_parameter_counts() -> None:
    counts = subnet_parameter_counts(64)
    assert set(counts) == set(VARIANTS)
    assert all(v > 0 for v in counts.values())
    assert counts["CAC"] > counts["CC"]  # CBAM adds parameters
    assert counts["CA"] < counts["CC"]  # one convolution instead of two
    with pytest.raises(ValueError):
        subnet_parameter_counts(1)


def test_misclassified_first() -> None:
    labels = np.array([0, 0, 1, 1, 0])
    scores = np.array([0.1, 0.9, 0.2, 0.8, 0.45])
    order = misclassified_first(labels, scores, threshold=0.5)
    # Wrong: index 1 (good, 0.9, margin 0.4) and 2 (defect, 0.2, margin 0.3) → 1 then 2.
    assert order.tolist()[:2] == [1, 2]
    # Then right ones, closest to the threshold first: 4 (0.05), 3 (0.3), 0 (0.4).
    assert order.tolist()[2:] == [4, 3, 0]
