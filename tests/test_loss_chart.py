"""The Train page's loss chart is by optimiser step, with few round ticks (#19)."""

import pytest

from app.figures import LOSS_TICKS, loss_figure
from cainnflow.training import EpochRecord, TrainingHistory


def test_rounds_record_their_step_and_old_histories_get_one_from_the_epochs():
    new = TrainingHistory(epochs=[EpochRecord(5, -1.0, -1.1, 1.0, 20), EpochRecord(9, -1.2, None, 1.0, 36)])
    assert new.round_steps() == [20, 36]
    old = TrainingHistory.from_dict(
        {"epochs": [{"epoch": 17, "train_loss": -1.0, "val_loss": -1.1, "seconds": 1.0},
                    {"epoch": 34, "train_loss": -1.2, "val_loss": -1.3, "seconds": 1.0}],
         "steps": 306}
    )  # fmt: skip
    assert old.round_steps() == [153, 306]
    with pytest.raises(ValueError, match="step"):
        TrainingHistory.from_dict({"epochs": [{"epoch": 1, "train_loss": 0.0, "val_loss": None,
                                               "seconds": 1.0, "step": "9"}]})  # fmt: skip


def test_the_loss_chart_is_by_step_with_few_round_ticks():
    points = [(step, -0.01 * step, -0.009 * step if step % 40 == 0 else None) for step in range(20, 301, 20)]
    fig = loss_figure(points)
    assert fig.layout.xaxis.title.text == "step"
    assert fig.layout.xaxis.nticks == LOSS_TICKS <= 8 and fig.layout.xaxis.tickformat == "d"
    train, val = fig.data
    assert list(train.x) == list(range(20, 301, 20)) and list(val.x) == list(range(40, 301, 40))
