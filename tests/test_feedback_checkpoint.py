"""Operator feedback in a checkpoint's record: it round-trips, and a malformed one is refused."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from cainnflow.checkpoint import read_checkpoint, write_checkpoint
from cainnflow.detector import Detector
from cainnflow.errors import CheckpointError
from cainnflow.feedback import DEFECTIVE, GOOD, FeedbackItem, FeedbackSet

ROOT = Path(__file__).resolve().parents[1]
DEMO_CHECKPOINT = ROOT / "assets" / "demo_carpet_weave.safetensors"

pytestmark = pytest.mark.skipif(not DEMO_CHECKPOINT.exists(), reason="the demo checkpoint is missing")


@pytest.fixture(scope="module")
def detector() -> Detector:
    return Detector.load(DEMO_CHECKPOINT, device="cpu")


def _marks() -> FeedbackSet:
    good = FeedbackItem.create("batch/a.png", b"a", GOOD, "batch", score=0.7)
    bad = FeedbackItem.create("camera.jpg", b"b", DEFECTIVE, "camera", score=0.4)
    return FeedbackSet().mark(good, base_threshold=0.65).mark(bad)


def test_feedback_round_trips_through_a_checkpoint(detector: Detector, tmp_path: Path) -> None:
    marks = _marks()
    before = detector.record
    detector.record = replace(before, feedback=marks.to_dict())
    try:
        path = detector.save(tmp_path / "with_feedback.safetensors")
    finally:
        detector.record = before
    loaded = Detector.load(path, device="cpu")
    assert FeedbackSet.from_dict(loaded.record.feedback) == marks


def _with_feedback(detector: Detector, tmp_path: Path, feedback: object) -> Path:
    tensors, doc = read_checkpoint(detector.to_bytes())
    doc["record"] = {**doc["record"], "feedback": feedback}
    body = {k: v for k, v in doc.items() if k not in ("format", "format_version")}
    return write_checkpoint(tmp_path / "hostile.safetensors", tensors, body)


@pytest.mark.parametrize(
    ("feedback", "message"),
    [
        ("yes", "record.feedback must be an object"),
        (
            {"version": 1, "base_threshold": None, "items": [{"name": "x"}]},
            r"record.feedback items\[0\] must be",
        ),
        ({**_marks().to_dict(), "base_threshold": "high"}, "record.feedback base_threshold must be a finite"),
        (
            {**_marks().to_dict(), "items": [{**_marks().to_dict()["items"][0], "name": "../../etc/passwd"}]},
            "sanitised file name",
        ),
    ],
)
def test_a_malformed_feedback_record_is_refused_in_one_line(
    detector: Detector, tmp_path: Path, feedback: object, message: str
) -> None:
    path = _with_feedback(detector, tmp_path, feedback)
    with pytest.raises(CheckpointError, match=message) as caught:
        Detector.load(path, device="cpu")
    assert "\n" not in str(caught.value)
