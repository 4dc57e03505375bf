"""Detector: train, calibrate, score, evaluate, save and load (lite0, small images)."""

import shutil

import numpy as np
import pytest
import torch

from cainnflow.data import load_mvtec_category
from cainnflow.detector import Detector
from cainnflow.errors import CheckpointError, DataError
from cainnflow.model import CAINNFlowConfig
from cainnflow.training import TrainConfig

CATEGORY = "carpet_weave"
SIZE = 64


@pytest.fixture(scope="module")
def demo(small_demo):
    return small_demo(n_train=16, n_test_good=4, n_test_per_defect=2, category=CATEGORY)


@pytest.fixture(scope="module")
def trained(demo):
    torch.manual_seed(0)
    det = Detector.create(CAINNFlowConfig(image_size=SIZE), device="cpu")
    det.fit(load_mvtec_category(demo, CATEGORY), TrainConfig(epochs=2, batch_size=8))
    return det


def test_fit_calibrates(trained):
    assert trained.is_trained
    assert trained.threshold is not None and np.isfinite(trained.threshold)
    s = trained.stats
    assert s.n_images >= 1 and s.pixel_p50 <= s.pixel_p99 <= s.pixel_max
    assert trained.history.best_epoch in (1, 2)
    record = trained.record
    assert record.n_val >= 1 and record.n_train + record.n_val == 16
    assert record.threshold_origin == "validation_quantile" and record.timings.steps == trained.history.steps


def test_auto_pooling_is_decided_from_the_good_images_and_kept(trained, tmp_path):
    from cainnflow.augment import FlipDecision, auto_pooling
    from cainnflow.scoring import auto_coarsest_weight

    assert trained.config.pooling in ("coarse_top", "max")  # "auto" is resolved when training
    decisions = [FlipDecision(**d) for d in trained.history.flips]
    assert [d.name for d in decisions] == ["hflip", "vflip", "rot180"]
    assert trained.config.pooling == auto_pooling(decisions)
    # ... and with it the coarsest scale's map weight (half for aligned parts, 1 for textures).
    assert trained.config.coarsest_map_weight == auto_coarsest_weight(trained.config.pooling)
    loaded = Detector.load(trained.save(tmp_path / "p.safetensors"), device="cpu")
    assert loaded.config.pooling == trained.config.pooling
    assert loaded.config.coarsest_map_weight == trained.config.coarsest_map_weight
    assert [d["used"] for d in loaded.history.flips] == [d.used for d in decisions]


def test_save_load_round_trip_gives_same_scores(trained, demo, tmp_path):
    images = sorted((demo / CATEGORY / "test").rglob("*.png"))[:3]
    before = trained.predict(images)
    path = trained.save(tmp_path / "m.safetensors")
    loaded = Detector.load(path, device="cpu")
    after = loaded.predict(images)
    np.testing.assert_allclose(after.scores, before.scores, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(after.maps, before.maps, rtol=1e-5, atol=1e-5)
    assert loaded.threshold == trained.threshold and loaded.stats == trained.stats
    assert loaded.config == trained.config
    assert loaded.history.best_epoch == trained.history.best_epoch
    # the offline backbone is rebuilt from its package, not embedded
    assert loaded.backbone.weights_source == trained.backbone.weights_source
    assert Detector.load(trained.to_bytes()).threshold == trained.threshold


def test_score_does_not_depend_on_batch(trained, demo):
    images = sorted((demo / CATEGORY / "test").rglob("*.png"))[:4]
    together = trained.predict(images, batch_size=4).scores
    alone = np.array([trained.predict([p]).scores[0] for p in images])
    np.testing.assert_allclose(together, alone, rtol=1e-4, atol=1e-5)


def test_bad_image_is_a_clear_error(trained, tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(DataError, match=r"broken\.png"):
        trained.predict([bad])


def test_evaluate_without_masks_is_image_level_only(trained, demo, tmp_path):
    root = tmp_path / "nomask"
    shutil.copytree(demo / CATEGORY, root / CATEGORY)
    shutil.rmtree(root / CATEGORY / "ground_truth")
    data = load_mvtec_category(root, CATEGORY)
    assert not data.has_masks
    result = trained.evaluate(data)
    assert result.image_auroc is not None
    assert result.pixel_auroc is None and result.aupro is None and result.masks is None
    assert result.n_test == len(data.test) and result.n_anomalous == data.n_anomalous
    full = trained.evaluate(load_mvtec_category(demo, CATEGORY))
    assert full.pixel_auroc is not None and full.aupro is not None
    assert {row.defect_type for row in full.per_defect} == set(
        load_mvtec_category(demo, CATEGORY).defect_types
    )
    np.testing.assert_allclose(full.scores, result.scores)


def test_random_backbone_is_embedded_and_round_trips(demo, tmp_path):
    det = Detector.create(CAINNFlowConfig(image_size=SIZE), weights="random", device="cpu")
    det.fit(load_mvtec_category(demo, CATEGORY), TrainConfig(epochs=1, batch_size=8))
    path = det.save(tmp_path / "r.safetensors")
    loaded = Detector.load(path)
    assert "random" in loaded.backbone.weights_source
    x = torch.randn(2, 3, SIZE, SIZE)
    torch.testing.assert_close(loaded.score_batch(x)[1], det.score_batch(x)[1])


def test_mismatched_checkpoint_is_refused(trained, tmp_path):
    from cainnflow.checkpoint import read_checkpoint, write_checkpoint

    tensors, doc = read_checkpoint(trained.to_bytes())
    doc["model"]["steps"] = 3
    write_checkpoint(
        tmp_path / "x.safetensors",
        tensors,
        {k: v for k, v in doc.items() if k not in ("format", "format_version")},
    )
    with pytest.raises(CheckpointError, match="do not match"):
        Detector.load(tmp_path / "x.safetensors")


def test_initial_weights_follow_the_seed_not_what_ran_before():
    config = CAINNFlowConfig(image_size=64)
    first = Detector.create(config, weights="random", device="cpu")
    torch.randn(1000)  # an earlier training, another session's job...
    state = torch.get_rng_state()
    again = Detector.create(config, weights="random", device="cpu")
    assert torch.equal(torch.get_rng_state(), state), "creating a detector moved the caller's random state"
    other = Detector.create(CAINNFlowConfig(image_size=64, seed=1), weights="random", device="cpu")
    for name, value in first.model.state_dict().items():
        assert torch.equal(value, again.model.state_dict()[name]), name
    assert any(
        not torch.equal(value, other.model.flows.state_dict()[name])
        for name, value in first.model.flows.state_dict().items()
    )
