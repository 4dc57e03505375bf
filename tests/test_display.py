"""The model summary reads right: the best epoch is out of the epochs trained, not of the validations."""

from pathlib import Path

import pytest

from cainnflow.detector import Detector
from cainnflow.training import EpochRecord, TrainingHistory

DEMO = Path(__file__).resolve().parents[1] / "assets"


def test_best_epoch_is_counted_in_epochs_not_validation_rounds():
    from app import display

    checkpoint = next(DEMO.glob("*.safetensors"))
    detector = Detector.load(checkpoint, device="cpu")
    # A step budget validates every few epochs: two rounds closing epochs 17 and 34.
    detector.history = TrainingHistory(
        epochs=[EpochRecord(17, -1.0, -1.1, 1.0), EpochRecord(34, -1.2, -1.3, 1.0)],
        best_epoch=34,
        best_val_loss=-1.3,
        steps=400,
    )
    rows = dict(display.model_summary_rows(detector))
    assert rows["best epoch"].startswith("epoch 34 of 34 (400 steps)")


@pytest.mark.parametrize(
    "pooling, words",
    [
        ("coarse", "the maximum of its coarse scales' map"),
        ("coarse_top", "the mean of the most unlikely eighth of its coarsest scale's positions"),
        ("max", "the maximum of its anomaly map"),
        ("auto", "the maximum of its anomaly map"),  # an untrained "auto" model scores as "max"
    ],
)
def test_the_score_tooltip_says_what_the_score_is(pooling, words):
    from types import SimpleNamespace

    from app import display

    text = display.score_help(SimpleNamespace(config=SimpleNamespace(pooling=pooling)))
    assert text == f"This model scores an image by {words}."


def test_the_score_tooltip_of_a_weighted_map_says_the_score_reads_equal_weights():
    from types import SimpleNamespace

    from app import display

    config = SimpleNamespace(pooling="max", coarsest_map_weight=0.5)
    text = display.score_help(SimpleNamespace(config=config))
    assert text.startswith("This model scores an image by the maximum of its scales' equal-weight map.")
    assert "coarsest scale by 0.5" in text
    texture = SimpleNamespace(pooling="coarse_top", coarsest_map_weight=1.0)
    assert "heatmap" not in display.score_help(SimpleNamespace(config=texture))
