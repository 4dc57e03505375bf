"""Flip augmentation: used where the good images show flips are harmless, refused where not."""

import numpy as np
import pytest
import torch

from cainnflow.augment import FLIPS, apply_flip, choose_flips, flip_shift, half_split_shift


def _features(images: torch.Tensor) -> torch.Tensor:
    """A stand-in for a coarse backbone stage: 4×4 average pooling keeps where things are."""
    return torch.nn.functional.avg_pool2d(images, 4)


def _texture(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, 32, 32, generator=g)


def _aligned_part(n: int, seed: int = 0) -> torch.Tensor:
    """A bright part always in the top-left corner, on a noisy background."""
    images = _texture(n, seed) * 0.2
    images[:, :, 2:12, 2:12] += 1.0
    return images


@pytest.mark.parametrize("make, expected", [(_texture, True), (_aligned_part, False)])
def test_flips_are_chosen_from_the_good_images(make, expected):
    images = make(24)
    feats = _features(images)
    flipped = {name: _features(apply_flip(images, name)) for name in FLIPS}
    decisions = choose_flips(feats, flipped)
    assert [d.name for d in decisions] == list(FLIPS)
    assert all(d.used is expected for d in decisions), decisions


def test_shift_measures_mean_map_change_in_units_of_spread():
    feats = torch.randn(200, 2, 4, 4, generator=torch.Generator().manual_seed(1))
    assert flip_shift(feats, feats) == 0.0
    shifted = feats + feats.std(0)  # every mean moves by one spread
    assert flip_shift(feats, shifted) == pytest.approx(1.0, rel=0.05)
    # The half-split noise of a mean over N images is ~ sqrt(2/N) spreads (·√(2/π) for |·|).
    assert half_split_shift(feats) == pytest.approx(np.sqrt(2 / 200) * np.sqrt(2 / np.pi), rel=0.3)


def test_too_few_images_are_never_augmented():
    images = _texture(3)
    decisions = choose_flips(_features(images), {"hflip": _features(apply_flip(images, "hflip"))})
    assert not any(d.used for d in decisions)


@pytest.mark.parametrize("make, expected", [(_texture, "coarse_top"), (_aligned_part, "max")])
def test_auto_pooling_scores_flip_invariant_images_by_the_coarse_scale(make, expected):
    from cainnflow.augment import auto_pooling

    images = make(24)
    feats = _features(images)
    decisions = choose_flips(feats, {name: _features(apply_flip(images, name)) for name in FLIPS})
    assert auto_pooling(decisions) == expected
    assert auto_pooling([]) == "max"
