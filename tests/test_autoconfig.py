"""Auto-configuration: chooses on synthetic anomalies in held-out good images, never reads test."""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import cainnflow.autoconfig as autoconfig
import cainnflow.image_io as image_io
from cainnflow.auto_report import AutoReport
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


# --------------------------------------------------------------------------- the choice: a clear lead or the defaults


def _latents(n_good: int, n_bad: int, noise_in_fine: float, seed: int = 0):
    """Stages 1-4 of a 64-px model: the defect is in the coarse stages; the fine ones carry noise."""
    rng = np.random.default_rng(seed)
    n = n_good + n_bad
    labels = np.r_[np.zeros(n_good), np.ones(n_bad)].astype(int)
    masks = np.zeros((n, 64, 64), bool)
    masks[n_good:, 16:48, 16:48] = True
    latents = []
    for side, noise in ((16, noise_in_fine), (8, noise_in_fine), (4, 0.3), (2, 0.3)):
        z = 1.0 + noise * np.abs(rng.normal(size=(n, 1, side, side)))
        z[n_good:, :, side // 4 : 3 * side // 4, side // 4 : 3 * side // 4] += 0.6
        latents.append(torch.from_numpy(z.astype(np.float32)))
    return latents, labels, masks


def _detector():
    return SimpleNamespace(
        config=SimpleNamespace(image_size=64, combine="likelihood"),
        model=SimpleNamespace(coarsest_map_weight=1.0),
    )


def _choose(noise_in_fine: float, default=((1, 2, 3, 4), 4.0, "max"), n=30):
    latents, labels, masks = _latents(n, n, noise_in_fine)
    stages = (1, 2, 3, 4)
    settings = candidate_settings(stages, ["max"])
    results = autoconfig._score_candidates(_detector(), latents, stages, labels, masks, settings, seed=0)
    return autoconfig._choose(results, default)


def test_a_setting_that_leads_clearly_replaces_the_defaults():
    chosen, candidates = _choose(noise_in_fine=3.0)  # the fine stages drown the defect in noise
    default = next(c for c in candidates if c.stages == (1, 2, 3, 4) and c.sigma == 4.0)
    assert chosen is not default and chosen.lead_low > 0 and chosen.objective > default.objective
    assert default.lead_low is None
    # AUPRO is measured for every setting (reported beside the objective, not part of it).
    assert all(0.0 <= c.aupro <= 1.0 for c in candidates)
    assert all(c.objective == pytest.approx((c.image_auroc + c.pixel_auroc) / 2) for c in candidates)
    assert chosen.aupro > default.aupro  # the noisy fine stages blur the defect's region too
    assert chosen.objective == max(
        c.objective for c in candidates if c.lead_low is not None and c.lead_low > 0
    )


def test_a_lead_within_the_luck_of_the_held_out_images_keeps_the_defaults():
    default = ((1, 2, 3, 4), 4.0, "max")
    rng = np.random.default_rng(0)
    base = 0.9 + 0.01 * rng.normal(size=401)
    lucky = base + np.where(
        rng.random(401) < 0.7, 0.03, -0.02
    )  # ahead on the sample, behind in 30 % of resamples
    lucky[0] = base[0] + 0.03
    steady = base + 0.004  # a small lead in every resample
    results = [
        autoconfig.Scored(default, 0.9, 0.9, 0.9, base),
        autoconfig.Scored(((2, 3), 4.0, "max"), 0.95, 0.95, 0.95, lucky),
        autoconfig.Scored(((1, 2, 3), 4.0, "max"), 0.9, 0.91, 0.9, steady),
    ]
    chosen, candidates = autoconfig._choose(results, default)
    assert (chosen.stages, chosen.lead_low) == ((1, 2, 3), pytest.approx(0.004))
    assert candidates[1].lead_low < 0 < candidates[2].lead_low and candidates[0].lead_low is None
    chosen, candidates = autoconfig._choose(results[:2], default)
    assert chosen.stages == (1, 2, 3, 4) and chosen.lead_low is None
    assert max(c.objective for c in candidates) > chosen.objective  # the lucky one scored higher
    assert AutoReport(chosen, tuple(candidates), 10, 12, 6, ("noise",), None, 1.0).kept_defaults


def test_a_clear_lead_too_small_to_matter_keeps_the_defaults():
    default = ((1, 2, 3, 4), 4.0, "max")
    base = 0.95 + 0.01 * np.random.default_rng(1).normal(size=401)
    results = [
        autoconfig.Scored(default, 0.95, 0.95, 0.95, base),
        # ahead in every resample, but by half of MIN_LEAD (bottle's synthetic case)
        autoconfig.Scored(((2, 3), 4.0, "max"), 0.96, 0.95, 0.95, base + autoconfig.MIN_LEAD / 2),
    ]
    chosen, candidates = autoconfig._choose(results, default)
    assert candidates[1].lead_low == pytest.approx(autoconfig.MIN_LEAD / 2)
    assert (chosen.stages, chosen.lead_low) == ((1, 2, 3, 4), None)
    results[1] = results[1]._replace(objectives=base + 2 * autoconfig.MIN_LEAD)
    chosen, _ = autoconfig._choose(results, default)
    assert chosen.stages == (2, 3)


def test_without_the_default_among_the_settings_the_best_is_chosen():
    chosen, candidates = _choose(noise_in_fine=3.0, default=((1, 2, 3, 4), 3.0, "max"))
    assert chosen.objective == max(c.objective for c in candidates)
    assert all(c.lead_low is None for c in candidates)
