"""Synthetic anomalies: exact masks, determinism, every kind on odd sizes and gray images."""

import time

import numpy as np
import pytest
import torch
from PIL import Image

from cainnflow.data import load_mvtec_category
from cainnflow.demo_data import make_demo_dataset, render_demo_sample
from cainnflow.detector import Detector
from cainnflow.errors import DataError
from cainnflow.model import CAINNFlowConfig
from cainnflow.synthetic import (
    ALL_KINDS,
    SYNTHETIC_KINDS,
    evaluate_synthetic,
    make_synthetic_anomalies,
    synthesize,
)
from cainnflow.training import TrainConfig


def _demo_images(category="carpet_weave", n=3, size=96):
    return [Image.fromarray(render_demo_sample(category, index=i, image_size=size).image) for i in range(n)]


def _assert_exact_mask(original: Image.Image, sample) -> None:
    before = np.asarray(original.convert("RGB"), dtype=int)
    after = np.asarray(sample.image, dtype=int)
    assert after.shape == before.shape and sample.image.mode == "RGB"
    assert sample.mask.shape == before.shape[:2] and sample.mask.dtype == bool
    changed = np.abs(after - before).max(axis=-1) > 0
    assert sample.mask.any(), sample.kind
    assert not changed[~sample.mask].any(), sample.kind  # nothing outside the mask
    visible = np.abs(after - before).max(axis=-1) >= 3
    assert visible[sample.mask].mean() >= 0.5, sample.kind  # most of the mask visibly changed


@pytest.mark.parametrize("category", ["carpet_weave", "circuit_board", "pill_disc"])
def test_masks_match_changed_pixels(category):
    images = _demo_images(category)
    samples = make_synthetic_anomalies(images, n=2 * len(SYNTHETIC_KINDS), seed=3)
    assert [s.kind for s in samples] == list(SYNTHETIC_KINDS) * 2
    for sample in samples:
        _assert_exact_mask(images[sample.source], sample)
        assert 0.001 < sample.mask.mean() < 0.1


@pytest.mark.parametrize("kind", ALL_KINDS)
@pytest.mark.parametrize("shape", [(61, 47), (97, 130)])
def test_every_kind_on_odd_sizes_and_gray(kind, shape):
    height, width = shape
    base = render_demo_sample("pill_disc", index=0, image_size=max(shape)).image[:height, :width]
    colour = Image.fromarray(base)
    gray = colour.convert("L").convert("RGB")
    for image in (colour, gray, colour.convert("L")):
        for seed in range(3):
            sample = synthesize(image, kind, seed=seed)
            assert sample is not None and sample.kind == kind
            assert sample.image.size == (width, height)
            _assert_exact_mask(image, sample)


def test_deterministic_and_independent_of_n():
    images = _demo_images("metal_plate")
    a = make_synthetic_anomalies(images, n=6, seed=1)
    b = make_synthetic_anomalies(images, n=6, seed=1)
    short = make_synthetic_anomalies(images, n=3, seed=1)
    other = make_synthetic_anomalies(images, n=6, seed=2)
    for x, y in zip(a, b, strict=True):
        assert x.kind == y.kind and x.source == y.source
        assert np.array_equal(np.asarray(x.image), np.asarray(y.image))
        assert np.array_equal(x.mask, y.mask)
    for x, y in zip(a[:3], short, strict=True):
        assert np.array_equal(np.asarray(x.image), np.asarray(y.image))
    assert any(not np.array_equal(x.mask, y.mask) for x, y in zip(a, other, strict=True))


def test_kinds_subset_and_area():
    images = _demo_images()
    small = make_synthetic_anomalies(images, n=4, seed=0, kinds=["colour"], area=(0.002, 0.004))
    large = make_synthetic_anomalies(images, n=4, seed=0, kinds=["colour"], area=(0.05, 0.08))
    assert {s.kind for s in small} == {"colour"}
    assert max(s.mask.mean() for s in small) < min(s.mask.mean() for s in large)


def test_flat_images_and_bad_input():
    flat = Image.new("RGB", (64, 64), (120, 120, 120))
    assert synthesize(flat, "warp") is None  # nothing to warp on a flat image
    _assert_exact_mask(flat, synthesize(flat, "noise"))
    with pytest.raises(DataError, match="changes nothing"):
        make_synthetic_anomalies([flat], n=1, kinds=["erase"])
    images = _demo_images(n=1)
    with pytest.raises(DataError, match="unknown synthetic anomaly kind"):
        make_synthetic_anomalies(images, n=1, kinds=["smudge"])
    with pytest.raises(DataError, match="no good images"):
        make_synthetic_anomalies([], n=1)
    with pytest.raises(DataError, match="non-negative"):
        make_synthetic_anomalies(images, n=-1)
    with pytest.raises(DataError, match="at least"):
        make_synthetic_anomalies([Image.new("RGB", (8, 8))], n=1)
    with pytest.raises(DataError, match="not a PIL image"):
        make_synthetic_anomalies([np.zeros((32, 32, 3), np.uint8)], n=1)
    with pytest.raises(DataError, match="area"):
        make_synthetic_anomalies(images, n=1, area=(0.2, 0.1))
    assert make_synthetic_anomalies(images, n=0) == []


@pytest.mark.slow  # 15-40 s on 2 shared CPU cores
def test_detector_ranks_synthetic_anomalies_above_good_images(tmp_path):
    """Default backbone at 96 px, a short fit on good images only; held-out goods vs pasted anomalies."""
    start = time.perf_counter()
    root = make_demo_dataset(
        tmp_path, categories=("pill_disc",), image_size=96, n_train=36, n_test_good=0, n_test_per_defect=0
    )
    data = load_mvtec_category(root, "pill_disc")
    train = data.train[:24]
    held_out = [Image.open(s.path).convert("RGB") for s in data.train[24:]]
    torch.manual_seed(0)
    detector = Detector.create(CAINNFlowConfig(image_size=96), device="cpu")
    detector.fit(
        type(data)(name=data.name, root=data.root, train=train, test=()), TrainConfig(epochs=8, batch_size=8)
    )
    samples = make_synthetic_anomalies(held_out[:6], n=15, seed=0)
    result = evaluate_synthetic(detector, held_out[6:], samples)
    assert result.n_good == 6 and result.n_anomalous == 15
    assert result.image_auroc is not None and result.image_auroc > 0.8, result
    assert result.pixel_auroc is not None and result.pixel_auroc > 0.8, result
    print(f"synthetic check: {result} in {time.perf_counter() - start:.1f} s")
