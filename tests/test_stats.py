"""ScoreStats.from_dict: the one check of score statistics read from checkpoints and exports."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cainnflow.stats import ScoreStats

GOOD = ScoreStats.from_normals(np.array([0.4, 0.5, 0.6]), np.linspace(0, 1, 12).reshape(3, 2, 2)).to_dict()


def test_a_round_trip_keeps_every_field() -> None:
    assert ScoreStats.from_dict(GOOD).to_dict() == GOOD


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ({"image_mean": True}, "'image_mean' must be a finite number"),
        ({"pixel_p99": math.nan}, "'pixel_p99' must be a finite number"),
        ({"pixel_max": 1e300}, "of sane size"),
        ({"image_max": "0.5"}, "'image_max' must be a finite number"),
        ({"image_std": -0.1}, "impossible values"),
        ({"n_images": 0}, "impossible values"),
        ({"n_images": 2.5}, "impossible values"),
    ],
)
def test_bad_values_are_refused_in_one_line(edit: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ScoreStats.from_dict({**GOOD, **edit})


def test_missing_fields_and_non_objects_are_refused() -> None:
    with pytest.raises(ValueError, match="has no 'pixel_p50'"):
        ScoreStats.from_dict({k: v for k, v in GOOD.items() if k != "pixel_p50"})
    with pytest.raises(ValueError, match="must be an object"):
        ScoreStats.from_dict([1, 2])


def test_an_export_without_a_count_gets_the_given_one() -> None:
    without = {k: v for k, v in GOOD.items() if k != "n_images"}
    assert ScoreStats.from_dict(without, n_images=0).n_images == 0
    with pytest.raises(ValueError, match="has no 'n_images'"):
        ScoreStats.from_dict(without)
    assert ScoreStats.from_dict(GOOD, n_images=0).n_images == GOOD["n_images"]  # a recorded count wins
