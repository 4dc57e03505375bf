"""Comparing models at their own thresholds (cainnflow.evaluation.comparison_figures), hand-computed."""

import numpy as np
import pytest

from cainnflow.evaluation import EvaluationResult, comparison_figures

LABELS = np.array([0, 0, 0, 1, 1])
SCORES = np.array([0.1, 0.4, 0.6, 0.5, 0.9])


def _result(labels: np.ndarray, scores: np.ndarray, threshold: float) -> EvaluationResult:
    n = len(labels)
    return EvaluationResult(
        category="c",
        image_auroc=0.83,
        pixel_auroc=None,
        aupro=None,
        n_test=n,
        n_anomalous=int(labels.sum()),
        ms_per_image=1.0,
        threshold=threshold,
        f1_threshold=0.5,
        f1=0.8,
        images=[],
        scores=scores.astype(float),
        labels=labels,
        maps=np.zeros((n, 2, 2), np.float32),
        masks=None,
        has_mask=np.zeros(n, bool),
    )


def test_figures_at_the_models_own_threshold():
    # at 0.5: predicted anomalous 0.6 (good), 0.5, 0.9 -> tp 2, fp 1, tn 2, fn 0
    figures = comparison_figures(_result(LABELS, SCORES, threshold=0.5))
    assert (figures.tp, figures.fp, figures.tn, figures.fn) == (2, 1, 2, 0)
    assert figures.threshold == 0.5
    assert figures.precision == pytest.approx(2 / 3)
    assert figures.recall == pytest.approx(1.0)
    assert figures.fpr == pytest.approx(1 / 3)
    assert figures.f1 == pytest.approx(0.8)
    assert figures.image_auroc == 0.83 and figures.pixel_auroc is None and figures.best_f1 == 0.8


def test_a_given_threshold_overrides_the_evaluated_one():
    # at 0.7 (a threshold saved after the evaluation): only 0.9 -> tp 1, fp 0, tn 3, fn 1
    figures = comparison_figures(_result(LABELS, SCORES, threshold=0.5), threshold=0.7)
    assert (figures.tp, figures.fp, figures.tn, figures.fn) == (1, 0, 3, 1)
    assert figures.precision == 1.0 and figures.recall == 0.5 and figures.fpr == 0.0
    assert figures.f1 == pytest.approx(2 / 3)


def test_undefined_rates_are_none_not_zero():
    # Nothing predicted anomalous: precision undefined; F1 with it.
    figures = comparison_figures(_result(LABELS, SCORES, threshold=5.0))
    assert figures.precision is None and figures.f1 is None
    assert figures.recall == 0.0 and figures.fpr == 0.0
    # Only good test images: recall undefined.
    good = comparison_figures(_result(np.zeros(3, int), np.array([0.1, 0.2, 0.3]), threshold=0.25))
    assert good.recall is None and good.f1 is None and good.fpr == pytest.approx(1 / 3)
