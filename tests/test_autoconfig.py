"""Auto-configuration: chooses on synthetic anomalies in held-out good images, never reads test."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

import cainnflow.image_io as image_io
from cainnflow.autoconfig import auto_configure, candidate_settings
from cainnflow.checkpoint import read_checkpoint
from cainnflow.data import load_mvtec_category
from cainnflow.detector import Detector
from cainnflow.errors import DataError
from cainnflow.model import CAINNFlowConfig
from cainnflow.training import TrainConfig

CATEGORY = "carpet_weave"


@pytest.fixture(scope="module")
def demo(small_demo):
    return small_demo(n_train=12, n_test_good=2, n_test_per_defect=1, category=CATEGORY)


def test_candidates_are_runs_of_consecutive_stages():
    settings = candidate_settings((1, 2, 3, 4))
    runs = {run for run, _, _ in settings}
    assert runs == {(1, 2), (2, 3), (3, 4), (1, 2, 3), (2, 3, 4), (1, 2, 3, 4)}
    assert len(settings) == len(runs) * 3 * 2  # three sigmas, two image scores


def test_auto_configure_chooses_records_and_never_reads_test(demo, tmp_path, monkeypatch):
    data = load_mvtec_category(demo, CATEGORY)
    test_paths = {str(s.path) for s in data.test}
    opened: list[str] = []
    real_open = image_io._open_image

    def spy(source, display, what, max_side=None):
        opened.append(str(source))
        return real_open(source, display, what, max_side=max_side)

    monkeypatch.setattr(image_io, "_open_image", spy)
    progress: list[str] = []
    detector, report = auto_configure(
        data,
        CAINNFlowConfig(image_size=64),
        TrainConfig(max_steps=20, min_steps=20, batch_size=4),
        device="cpu",
        callback=lambda p: progress.append(p) if isinstance(p, str) else None,
    )
    assert not test_paths & set(opened), "auto-configuration read a test image"
    assert len(progress) >= 3
    assert (report.chosen.stages, report.chosen.sigma, report.chosen.pooling) in {
        (c.stages, c.sigma, c.pooling) for c in report.candidates
    }
    # The image score is the good images' own (flip evidence), not searched on synthetic anomalies.
    assert {c.pooling for c in report.candidates} == {detector.config.pooling}
    assert detector.config.pooling in ("coarse_top", "max")
    assert len(report.candidates) == len(candidate_settings((1, 2, 3, 4), [detector.config.pooling]))
    assert all(0.0 <= c.image_auroc <= 1.0 and 0.0 <= c.pixel_auroc <= 1.0 for c in report.candidates)
    assert (
        detector.config.out_indices == report.chosen.stages
        and detector.config.sigma == report.chosen.sigma
        and detector.config.pooling == report.chosen.pooling
    )
    assert report.n_holdout >= 2 and report.n_synthetic >= 12
    assert report.proposed_threshold is None or np.isfinite(report.proposed_threshold)
    # the evidence travels with the model
    _, doc = read_checkpoint(detector.save(tmp_path / "auto.safetensors"))
    assert doc["record"]["auto"]["chosen"]["stages"] == list(report.chosen.stages)
    loaded = Detector.load(tmp_path / "auto.safetensors")
    assert loaded.config == detector.config and loaded.record.auto == report == detector.record.auto


def test_auto_configure_needs_enough_good_images(demo):
    data = load_mvtec_category(demo, CATEGORY)
    with pytest.raises(DataError, match="at least"):
        auto_configure(replace(data, train=data.train[:4]), CAINNFlowConfig(image_size=64), device="cpu")
