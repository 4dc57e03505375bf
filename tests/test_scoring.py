import numpy as np
import pytest
import torch

from cainnflow.scoring import ScoreStats, anomaly_map, gaussian_blur, image_scores, latent_energy_maps


def test_latent_nll_map_is_half_mean_square():
    z = torch.zeros(1, 4, 3, 3)
    z[0, :, 1, 2] = 2.0
    m = latent_energy_maps([z])[0]
    assert m.shape == (1, 3, 3)
    assert m[0, 1, 2].item() == pytest.approx(2.0)
    assert m.sum().item() == pytest.approx(2.0)


def test_anomaly_map_upsamples_and_localises():
    z_small = torch.zeros(2, 4, 8, 8)
    z_small[1, :, 2, 6] = 5.0
    z_big = torch.zeros(2, 4, 16, 16)
    maps = anomaly_map([z_big, z_small], 64, sigma=2.0)
    assert maps.shape == (2, 64, 64)
    assert maps[0].abs().max().item() == pytest.approx(0.0)
    peak = np.unravel_index(int(maps[1].argmax()), (64, 64))
    assert abs(peak[0] - (2 * 8 + 4)) <= 4 and abs(peak[1] - (6 * 8 + 4)) <= 4


def test_score_of_one_image_does_not_depend_on_batch():
    torch.manual_seed(0)
    z = [torch.randn(4, 3, 8, 8), torch.randn(4, 5, 4, 4)]
    full = image_scores(anomaly_map(z, 32, 2.0))
    single = image_scores(anomaly_map([zi[2:3] for zi in z], 32, 2.0))
    torch.testing.assert_close(full[2:3], single)


def test_gaussian_blur_preserves_mass_and_constant():
    x = torch.zeros(1, 31, 31)
    x[0, 15, 15] = 1.0
    y = gaussian_blur(x, 2.0)
    assert y.sum().item() == pytest.approx(1.0, abs=1e-5)
    assert y[0, 15, 15] < 1.0
    c = torch.full((1, 10, 10), 3.0)
    torch.testing.assert_close(gaussian_blur(c, 1.5), c)
    assert gaussian_blur(x, 0) is x


def test_pooling():
    maps = torch.zeros(1, 10, 10)
    maps[0, 0, 0] = 7.0
    assert image_scores(maps, "max").item() == 7.0
    assert image_scores(maps, "topk").item() == pytest.approx(7.0)  # top 1% of 100 = 1 pixel
    with pytest.raises(ValueError):
        image_scores(maps, "median")


def test_score_stats_round_trip():
    rng = np.random.default_rng(0)
    stats = ScoreStats.from_normals(rng.random(10), rng.random((10, 8, 8)))
    assert stats.pixel_p50 < stats.pixel_p99 <= stats.pixel_max
    assert ScoreStats.from_dict(stats.to_dict()) == stats
    z = stats.normalize_scores(np.array([stats.image_mean]))
    assert z[0] == pytest.approx(0.0)


def test_likelihood_combine_is_bounded_and_monotone():
    z_quiet = torch.zeros(1, 4, 8, 8)
    z_loud = torch.zeros(1, 4, 8, 8)
    z_loud[0, :, 3, 3] = 100.0  # an extreme outlier in one scale
    z_mild = torch.zeros(1, 4, 4, 4)
    z_mild[0, :, 2, 2] = 1.5
    lik = anomaly_map([z_loud, z_mild], 32, sigma=0, combine="likelihood")
    assert float(lik.max()) <= 1.0 and float(lik.min()) >= 0.0
    nll = anomaly_map([z_loud, z_mild], 32, sigma=0, combine="nll")
    # the same positions rank highest under both combinations
    assert int(lik.argmax()) == int(nll.argmax())
    assert float(anomaly_map([z_quiet], 32, sigma=0).max()) == 0.0
    with pytest.raises(ValueError):
        anomaly_map([z_quiet], 32, combine="median")


def test_coarse_score_is_the_coarsest_scales_maximum_and_ignores_fine_tails():
    from cainnflow.scoring import coarse_scales_map, score_latents

    fine = torch.zeros(2, 4, 16, 16)
    coarse = torch.zeros(2, 4, 4, 4)
    fine[0, :, 2:6, 2:6] = 6.0  # image 0: a fine-scale outlier only (a normal texture's tail)
    coarse[1, :, 2, 2] = 2.0  # image 1: a region the coarse scale finds unusual
    maps, scores = score_latents([fine, coarse], 32, sigma=1.0, pooling="coarse")
    assert maps.shape == (2, 32, 32)
    torch.testing.assert_close(maps, anomaly_map([fine, coarse], 32, 1.0))
    torch.testing.assert_close(scores, coarse_scales_map([fine, coarse], 32, 1.0).flatten(1).amax(1))
    torch.testing.assert_close(coarse_scales_map([fine, coarse], 32, 1.0), anomaly_map([coarse], 32, 1.0))
    assert scores[1] > scores[0]
    # The paper's max of the combined map ranks them the other way round.
    _, max_scores = score_latents([fine, coarse], 32, sigma=1.0, pooling="max")
    assert max_scores[0] > max_scores[1]
    with pytest.raises(ValueError, match="score_latents"):
        image_scores(maps, "coarse")


def test_coarse_top_score_is_the_mean_of_the_coarsest_scales_top_eighth():
    from cainnflow.scoring import COARSE_TOP_FRACTION, latent_energy_maps, score_latents, top_fraction_mean

    fine = torch.zeros(3, 4, 16, 16)
    coarse = torch.zeros(3, 4, 8, 8)
    fine[0, :, 2:6, 2:6] = 6.0  # image 0: a fine-scale outlier only (a normal texture's tail)
    coarse[1, :, 3, 3] = 3.0  # image 1: one coarse position, however unusual
    coarse[2, :, 2:5, 2:5] = 1.5  # image 2: a region that moves nine coarse positions
    maps, scores = score_latents([fine, coarse], 32, sigma=1.0, pooling="coarse_top")
    torch.testing.assert_close(maps, anomaly_map([fine, coarse], 32, 1.0))
    terms = -torch.expm1(-latent_energy_maps([coarse])[0])  # (3, 8, 8), the likelihood terms
    k = round(64 * COARSE_TOP_FRACTION)
    assert k == 8
    expected = terms.flatten(1).sort(dim=1, descending=True).values[:, :k].mean(1)
    torch.testing.assert_close(scores, expected)
    torch.testing.assert_close(top_fraction_mean(terms, COARSE_TOP_FRACTION), expected)
    assert float(scores[0]) == 0.0  # the fine scale does not enter the score
    assert scores[2] > scores[1] > scores[0]  # a region outranks one position's tail
    # A map with fewer positions than 1 / fraction still averages its single highest one.
    torch.testing.assert_close(
        top_fraction_mean(terms[:, :2, :2], COARSE_TOP_FRACTION), terms[:, :2, :2].flatten(1).amax(1)
    )
    with pytest.raises(ValueError, match="score_latents"):
        image_scores(maps, "coarse_top")


def test_checkpoints_without_pooling_keep_the_maps_maximum():
    from cainnflow.model import CAINNFlowConfig

    assert CAINNFlowConfig().pooling == "auto"  # resolved from the good images when training
    old = {k: v for k, v in CAINNFlowConfig().to_dict().items() if k != "pooling"}
    assert CAINNFlowConfig.from_dict(old).pooling == "max"


def test_the_coarsest_scale_weighs_less_in_aligned_parts_maps_and_the_score_reads_equal_weights():
    from cainnflow.scoring import (
        ALIGNED_COARSEST_WEIGHT,
        _upsampled_terms,
        auto_coarsest_weight,
        scale_weights,
        score_latents,
    )

    g = torch.Generator().manual_seed(3)
    z = [torch.randn(2, 4, s, s, generator=g) * 1.5 for s in (16, 8, 4)]
    assert scale_weights(z, 0.5) == [1.0, 1.0, 0.5]  # the coarsest, wherever it is in the list
    assert scale_weights(z[::-1], 0.5) == [0.5, 1.0, 1.0]
    assert scale_weights(z[:1], 0.0) == [1.0]  # a single scale is the map whatever its weight
    assert scale_weights([z[1], z[1].clone()], 0.5) == [1.0, 1.0]  # one resolution (a ViT's blocks)
    up = _upsampled_terms(z, 32, "likelihood")
    expected = gaussian_blur((up[0] + up[1] + 0.5 * up[2]) / 2.5, 2.0)
    torch.testing.assert_close(anomaly_map(z, 32, 2.0, coarsest_weight=0.5), expected)
    assert not torch.allclose(anomaly_map(z, 32, 2.0, coarsest_weight=0.5), anomaly_map(z, 32, 2.0))
    for pooling in ("max", "topk"):
        maps, scores = score_latents(z, 32, 2.0, pooling=pooling, coarsest_weight=0.5)
        torch.testing.assert_close(maps, expected)  # the shown map is weighted ...
        equal = image_scores(anomaly_map(z, 32, 2.0), pooling)
        torch.testing.assert_close(scores, equal)  # ... the decision keeps the coarse evidence
    # Textures' scores read the coarse terms; their maps keep equal weights (weight 1).
    assert auto_coarsest_weight("max") == auto_coarsest_weight("topk") == ALIGNED_COARSEST_WEIGHT < 1
    assert auto_coarsest_weight("coarse_top") == auto_coarsest_weight("coarse") == 1.0
