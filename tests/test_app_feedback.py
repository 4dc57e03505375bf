"""Inspect's feedback loop, camera and folder watch, driven with Streamlit's AppTest (no browser)."""

from __future__ import annotations

import io
import os
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from app import hosting, keys
from app.feedback_job import RetrainJob
from cainnflow.detector import Detector
from cainnflow.feedback import DEFECTIVE, GOOD, FeedbackSet
from tests.app_support import ROOT, app_home, button, home, load_demo, navigation_not_pages_folder, open_app  # noqa: F401

DEMO_CHECKPOINT = ROOT / "assets" / "demo_carpet_weave.safetensors"
TRAIN_TIMEOUT_S = 180

needs_demo = pytest.mark.skipif(not DEMO_CHECKPOINT.exists(), reason="the demo checkpoint is missing")


def _image(seed: int, fmt: str = "PNG", size: int = 96) -> bytes:
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(buffer, format=fmt)
    return buffer.getvalue()


def _inspect(at: AppTest) -> AppTest:
    at.switch_page("pages/inspect.py").run()
    assert not at.exception, at.exception
    return at


def _threshold(at: AppTest) -> float:
    return at.session_state[keys.MODEL].detector.threshold


def _feedback(at: AppTest) -> FeedbackSet:
    return at.session_state[keys.FEEDBACK][1]


def _click(at: AppTest, label_start: str, index: int = 0) -> None:
    matches = [b for b in at.button if b.label.startswith(label_start)]
    assert len(matches) > index, [b.label for b in at.button]
    matches[index].click().run()
    assert not at.exception, at.exception


def _click_key(at: AppTest, key_start: str) -> None:
    """Clicks the one button whose key starts with ``key_start`` (every tab renders its buttons)."""
    matches = [b for b in at.button if (b.key or "").startswith(key_start)]
    assert len(matches) == 1, [b.key for b in at.button]
    matches[0].click().run()
    assert not at.exception, at.exception


def _batch_table(at: AppTest):
    return next(d.value for d in at.dataframe if "normalized (σ)" in d.value.columns)


def _detail_score(at: AppTest) -> float:
    return float(next(m.value for m in at.metric if m.label.startswith("Image score")))


def _pick_detail(at: AppTest, defect_type: str) -> None:
    box = at.selectbox(key=keys.K_DETAIL)
    box.select_index(next(i for i, o in enumerate(box.options) if f"({defect_type})" in o)).run()
    assert not at.exception, at.exception


@needs_demo
def test_marking_recalibrates_at_once_and_survives_a_reload() -> None:
    at = open_app()
    load_demo(at)
    _inspect(at)
    base = _threshold(at)
    _pick_detail(at, "hole")
    score = _detail_score(at)
    assert score >= base  # a flagged test image: call it a false alarm
    _click(at, "Mark good")
    after = _threshold(at)
    assert score < after < score + 1e-3  # just past the marked image, now good
    summary = next(m.value for m in at.markdown if m.value.startswith("Threshold"))
    assert f"{base:.4g} → {after:.4g}" in summary and "flipped" in summary
    assert any(b.value.endswith("good]") for b in at.markdown if "badge" in b.value)  # the verdict moved
    assert at.slider(key=f"{keys.K_INSPECT_THRESHOLD}{at.session_state[keys.MODEL].version}").value == after

    # A missed defect: the good test image, marked defective, pulls the threshold down to it.
    _pick_detail(at, "good")
    good_score = _detail_score(at)
    _click(at, "Mark defective")
    lowered = _threshold(at)
    assert lowered <= good_score < after
    marks = _feedback(at)
    assert marks.counts() == {GOOD: 1, DEFECTIVE: 1} and marks.base_threshold == base
    assert {i.source for i in marks.items} == {"dataset"}

    # The model's file records it; a reload (the same session token) brings it back.
    path = at.session_state[keys.MODEL].path
    record = Detector.load(path, device="cpu")
    assert FeedbackSet.from_dict(record.record.feedback) == marks and record.threshold == lowered
    again = _inspect(open_app(s=at.session_state[keys.TOKEN]))
    assert _feedback(again) == marks and _threshold(again) == lowered
    assert any(m.label == "Marked defective" and m.value == "1" for m in again.metric)

    # Forgetting everything gives the threshold before feedback back.
    _click(again, "Forget all feedback")
    assert _threshold(again) == base and len(_feedback(again)) == 0


@needs_demo
def test_a_batch_image_is_marked_and_the_table_follows_the_threshold() -> None:
    at = open_app()
    load_demo(at)
    _inspect(at)
    files = [(f"part{i}.png", _image(i), "image/png") for i in range(3)]
    at.file_uploader(key="inspect_batch_upload").set_value(files).run()
    _click(at, "Score 3 image(s)")
    table = _batch_table(at)
    worst = table.loc[table["score"].idxmax()]
    at.selectbox(key="inspect_batch_mark_pick").set_value(worst["image"]).run()
    _click_key(at, "feedback_good_batch_")
    assert _threshold(at) > worst["score"]
    assert (_batch_table(at)["verdict"] == "good").all()
    item = _feedback(at).items[0]
    assert (item.name, item.source, item.label) == (worst["image"], "batch", GOOD)
    assert any("in this batch flipped" in m.value or "in this batch changed" in m.value for m in at.markdown)


@needs_demo
def test_a_camera_picture_is_scored_and_can_be_marked() -> None:
    at = open_app()
    load_demo(at)
    _inspect(at)
    at.toggle(key="inspect_camera_on").set_value(True).run()
    at.camera_input(key=keys.K_CAMERA).set_value(("shot.jpg", _image(7, "JPEG", 320), "image/jpeg")).run()
    assert not at.exception, at.exception
    assert any(m.label.startswith("Image score") for m in at.metric)
    _click_key(at, "feedback_defective_camera_")
    assert _feedback(at).items[-1].source == "camera"
    at.camera_input(key=keys.K_CAMERA).set_value(("broken.jpg", b"not a jpeg", "image/jpeg")).run()
    assert not at.exception, at.exception
    assert any("cannot be scored" in e.value for e in at.error)


@needs_demo
def test_folder_watch_scores_only_new_images(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(hosting.HOSTED_ENV, raising=False)
    monkeypatch.delenv(hosting.DATA_ROOTS_ENV, raising=False)
    (tmp_path / "before.png").write_bytes(_image(1))
    at = open_app()
    load_demo(at)
    _inspect(at)
    at.text_input(key=keys.K_WATCH_FOLDER).set_value(str(tmp_path)).run()
    assert not at.exception, at.exception
    assert any("No new image yet" in c.value for c in at.caption)
    new = tmp_path / "new.png"
    new.write_bytes(_image(2))
    old = time.time() - 10
    os.utime(new, (old, old))  # written and settled
    _click(at, "Look now")
    log = at.session_state[keys.K_WATCH_LOG]
    assert [r["image"] for r in log.rows] == ["new.png"]
    assert any("**1** new image(s) scored" in m.value for m in at.markdown)
    _click(at, "Look now")
    assert len(at.session_state[keys.K_WATCH_LOG].rows) == 1  # scored once


@needs_demo
def test_folder_watch_is_not_offered_on_a_hosted_server(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(hosting.HOSTED_ENV, "1")
    at = open_app()
    load_demo(at)
    _inspect(at)
    assert not [t for t in at.text_input if t.key == keys.K_WATCH_FOLDER]
    assert any("only offered when the app runs locally" in c.value for c in at.caption)


def _train_tiny(at: AppTest) -> None:
    at.select_slider(key="train_size_tf_efficientnet_lite0").set_value(64)
    at.number_input(key="train_epochs").set_value(1)
    at.number_input(key="train_steps").set_value(1)
    at.run()
    button(at, "Train").click().run()
    _wait(at)


def _wait(at: AppTest) -> None:
    job = at.session_state[keys.TRAIN_JOB]
    job.join(TRAIN_TIMEOUT_S)
    assert job.snapshot().state == "done", job.snapshot().error
    at.run()  # adopts the model
    assert not at.exception, at.exception


def test_retraining_with_marked_good_images_records_them_in_the_new_model() -> None:
    at = open_app()
    _train_tiny(at)
    first = at.session_state[keys.MODEL]
    n_train = len(at.session_state[keys.DATA].data.train)
    _inspect(at)
    _click(at, "Mark good")
    marked = _feedback(at).items[0]
    _click(at, "Retrain with the 1 marked good image(s)")
    job = at.session_state[keys.TRAIN_JOB]
    assert isinstance(job, RetrainJob)
    assert len(job.data.train) == n_train + 1 and job.data.train[-1].path.name == f"{marked.sha256}.png"
    _wait(at)
    model = at.session_state[keys.MODEL]
    assert model is not first and model.origin.endswith("+ 1 marked good")
    record = FeedbackSet.from_dict(Detector.load(model.path, device="cpu").record.feedback)
    assert [i.sha256 for i in record.items] == [marked.sha256]
    assert record.base_threshold == model.detector.threshold  # its own threshold, as trained
    assert record.items[0].score != marked.score  # re-scored by the new model


def test_a_retrain_repeats_the_recorded_optimisation_settings() -> None:
    from app.feedback_job import recorded_train_config
    from cainnflow.training import TrainConfig

    # a record from before per-scale batches trained every scale on the whole batch
    old = recorded_train_config({"batch_size": 8, "lr": 1e-3, "seed": 3})
    assert (old.batch_size, old.lr, old.seed, old.positions_per_step) == (8, 1e-3, 3, None)
    new = recorded_train_config({"batch_size": 8, "positions_per_step": 4096})
    assert new.positions_per_step == 4096
    # hostile values fall back to the defaults instead of failing the retrain
    defaults = TrainConfig()
    assert recorded_train_config({"positions_per_step": -5}) == defaults
    assert recorded_train_config({"batch_size": 10**9}) == defaults
