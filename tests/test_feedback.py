"""cainnflow.feedback: marked images, their record, and the threshold recalibrated from them."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cainnflow.feedback import (
    DEFECTIVE,
    GOOD,
    MAX_ITEMS,
    MAX_NAME_CHARS,
    FeedbackItem,
    FeedbackSet,
    content_hash,
    recalibrate,
    sanitize_name,
    verdict_flips,
)

ROOT = Path(__file__).resolve().parents[1]


def _item(i: int, label: str = GOOD, score: float = 0.5) -> FeedbackItem:
    return FeedbackItem.create(f"part {i}.png", f"image {i}".encode(), label, "upload", score=score)


def _generated_scores(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Validation normals around 0.3 and defects around 0.8, as a trained model gives them."""
    rng = np.random.default_rng(seed)
    return rng.normal(0.3, 0.05, 40), rng.normal(0.8, 0.05, 10)


# --------------------------------------------------------------------------- recalibration


def test_a_marked_false_alarm_raises_the_threshold_just_past_it() -> None:
    validation, _ = _generated_scores()
    base = float(np.percentile(validation, 99))
    false_alarms = [base + 0.05, base + 0.02]
    result = recalibrate(base, false_alarms, [], validation=validation)
    assert result.rule == "above_good" and result.after > max(false_alarms)
    assert result.after - max(false_alarms) < 1e-9  # no further than needed
    assert verdict_flips(false_alarms, base, result.after) == (2, 0)


def test_marked_good_images_below_the_threshold_leave_it_alone() -> None:
    result = recalibrate(0.5, [0.2, 0.3], [])
    assert result.after == 0.5 and result.rule == "unchanged" and not result.moved


def test_a_missed_defect_lowers_the_threshold_but_stays_above_the_normals() -> None:
    validation, _ = _generated_scores()
    base = 0.7
    missed = 0.55  # below the threshold: passed, but defective
    result = recalibrate(base, [], [missed], validation=validation)
    assert result.rule == "f1"
    assert validation.max() < result.after <= missed
    assert display_verdicts(validation, result.after).sum() == 0  # no normal flagged
    assert verdict_flips([missed], base, result.after) == (0, 1)


def test_a_caught_defect_alone_never_raises_the_threshold() -> None:
    validation, _ = _generated_scores()
    result = recalibrate(0.5, [], [0.95], validation=validation)
    assert result.after == 0.5 and result.rule == "unchanged"


def test_both_groups_put_the_threshold_between_them() -> None:
    validation, defects = _generated_scores()
    false_alarm = 0.6
    result = recalibrate(0.45, [false_alarm], defects, validation=validation)
    assert result.rule == "f1"
    assert false_alarm < result.after <= defects.min()
    assert result.after == pytest.approx((false_alarm + defects.min()) / 2)
    assert (result.n_good, result.n_defective, result.n_validation) == (1, 10, 40)


def test_overlapping_groups_get_the_f1_optimal_threshold() -> None:
    good, defective = [0.1, 0.2, 0.3, 0.9], [0.5, 0.6, 0.7]
    result = recalibrate(0.4, good, defective)
    assert 0.3 < result.after <= 0.5  # one good stays flagged: the best F1 trade


def test_without_normal_scores_defects_pull_the_threshold_to_the_lowest() -> None:
    result = recalibrate(0.7, [], [0.6, 0.65])
    assert result.after == 0.6 and result.rule == "below_defective"
    assert recalibrate(None, [], [0.6]).after == 0.6


def test_recalibration_refuses_non_finite_scores() -> None:
    with pytest.raises(ValueError, match="good scores must be finite"):
        recalibrate(0.5, [math.nan], [])
    with pytest.raises(ValueError, match="threshold must be a finite number"):
        recalibrate(math.inf, [0.1], [])
    with pytest.raises(ValueError, match="no threshold"):
        recalibrate(None, [], [])


def test_verdict_flips_count_both_ways() -> None:
    assert verdict_flips([0.1, 0.5, 0.7, 0.9], 0.6, 0.8) == (1, 0)
    assert verdict_flips([0.1, 0.5, 0.7, 0.9], 0.8, 0.4) == (0, 2)
    assert verdict_flips([0.1, 0.9], None, 0.5) == (0, 1)


def display_verdicts(scores: np.ndarray, threshold: float) -> np.ndarray:
    return np.asarray(scores) >= threshold


# --------------------------------------------------------------------------- the set and its record


def test_marking_again_replaces_and_unmarking_removes() -> None:
    marks = FeedbackSet().mark(_item(1), base_threshold=0.5).mark(_item(2, DEFECTIVE), base_threshold=0.9)
    assert marks.base_threshold == 0.5  # the first mark's threshold stays the base
    again = marks.mark(_item(1, DEFECTIVE, score=0.6))
    assert len(again) == 2 and again.get(content_hash(b"image 1")).label == DEFECTIVE
    assert again.counts() == {GOOD: 0, DEFECTIVE: 2}
    assert list(again.scores(DEFECTIVE)) == [0.5, 0.6]
    assert len(again.unmark(content_hash(b"image 2"))) == 1


def test_a_record_round_trips_through_json() -> None:
    import json

    marks = FeedbackSet().mark(_item(1), base_threshold=0.5).mark(_item(2, DEFECTIVE, 0.4))
    doc = json.loads(json.dumps(marks.to_dict()))
    assert FeedbackSet.from_dict(doc) == marks
    assert FeedbackSet.from_dict(FeedbackSet().to_dict()) == FeedbackSet()


def test_an_item_records_a_sanitised_name_a_hash_and_a_time() -> None:
    item = FeedbackItem.create("../../etc/x\x00y.png", b"bytes", GOOD, "batch", score=np.float32(0.25))
    assert item.name == "etc/x_y.png" and item.sha256 == content_hash(b"bytes")
    assert item.marked_at.endswith("Z") and item.score == 0.25


@pytest.mark.parametrize(
    "name",
    ["../x.png", "a/../b.png", "/etc/passwd", "C:\\x.png", "x\x00.png", "ok/./x.png", "", "é.png", "a" * 400],
)
def test_names_are_sanitised_once_and_for_all(name: str) -> None:
    clean = sanitize_name(name)
    assert clean and len(clean) <= MAX_NAME_CHARS and sanitize_name(clean) == clean
    assert ".." not in clean.split("/") and not clean.startswith("/") and "\\" not in clean


GOOD_ITEM = _item(1).to_dict()


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ([], "must be an object"),
        ({"version": 1, "items": []}, "must be an object with the keys"),
        ({"version": 2, "base_threshold": None, "items": []}, "version must be 1"),
        ({"version": True, "base_threshold": None, "items": []}, "version must be 1"),
        ({"version": 1, "base_threshold": "0.5", "items": []}, "base_threshold must be a finite number"),
        ({"version": 1, "base_threshold": math.nan, "items": []}, "base_threshold must be a finite number"),
        ({"version": 1, "base_threshold": None, "items": {}}, "items has the wrong type"),
        ({"version": 1, "base_threshold": None, "items": [7]}, r"items\[0\] must be an object"),
        ({"version": 1, "base_threshold": None, "items": [{**GOOD_ITEM, "extra": 1}]}, "with the keys"),
        (
            {"version": 1, "base_threshold": None, "items": [{**GOOD_ITEM, "label": "meh"}]},
            r"\.label must be one",
        ),
        (
            {"version": 1, "base_threshold": None, "items": [{**GOOD_ITEM, "source": "x"}]},
            r"\.source must be",
        ),
        ({"version": 1, "base_threshold": None, "items": [{**GOOD_ITEM, "score": True}]}, r"\.score must be"),
        ({"version": 1, "base_threshold": None, "items": [{**GOOD_ITEM, "score": 1e300}]}, "of sane size"),
        (
            {"version": 1, "base_threshold": None, "items": [{**GOOD_ITEM, "sha256": "ab"}]},
            "64 lowercase hex",
        ),
        (
            {"version": 1, "base_threshold": None, "items": [{**GOOD_ITEM, "name": "../x"}]},
            "sanitised file name",
        ),
        (
            {"version": 1, "base_threshold": None, "items": [{**GOOD_ITEM, "name": 5}]},
            r"\.name has the wrong",
        ),
        (
            {"version": 1, "base_threshold": None, "items": [{**GOOD_ITEM, "marked_at": "yesterday"}]},
            "UTC time",
        ),
        ({"version": 1, "base_threshold": None, "items": [GOOD_ITEM, GOOD_ITEM]}, "same image"),
        ({"version": 1, "base_threshold": None, "items": [GOOD_ITEM] * (MAX_ITEMS + 1)}, "more than"),
    ],
)
def test_a_hostile_record_is_refused_in_one_line(doc: object, message: str) -> None:
    with pytest.raises(ValueError, match=message) as caught:
        FeedbackSet.from_dict(doc)
    assert "\n" not in str(caught.value)


def test_bad_marks_are_refused() -> None:
    with pytest.raises(ValueError, match="label must be one of"):
        FeedbackItem.create("x.png", b"x", "fine", "upload", score=0.1)
    with pytest.raises(ValueError, match="score must be a finite number"):
        FeedbackItem.create("x.png", b"x", GOOD, "upload", score=math.nan)
    full = FeedbackSet(tuple(_item(i) for i in range(MAX_ITEMS)))
    with pytest.raises(ValueError, match=f"at most {MAX_ITEMS}"):
        full.mark(_item(MAX_ITEMS))
    assert len(full.mark(_item(3, DEFECTIVE))) == MAX_ITEMS  # re-marking one already there is fine


def test_the_feedback_module_needs_no_torch() -> None:
    code = "import sys, cainnflow.feedback\nassert 'torch' not in sys.modules\n"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
