"""The Train / load and Inspect pages, driven with Streamlit's AppTest (no browser)."""

from __future__ import annotations

import io
import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from streamlit.testing.v1 import AppTest

from app import keys
from tests import app_support
from tests.app_support import APP, ROOT, app_home, button, home, navigation_not_pages_folder, open_app  # noqa: F401

DEMO_CHECKPOINT = ROOT / "assets" / "demo_carpet_weave.safetensors"
PAGES = ("pages/train.py", "pages/inspect.py", "pages/evaluate.py", "pages/latent.py", "pages/learn.py")
TRAIN_TIMEOUT_S = 90


def load_demo(at: AppTest) -> None:
    app_support.load_demo(at)
    assert any("demo checkpoint" in s.value for s in at.success), [e.value for e in at.error]


def png_bytes(seed: int = 0, size: int = 96) -> bytes:
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def session_folder(at: AppTest) -> Path:
    return Path(os.environ["CAINNFLOW_HOME"]) / "sessions" / at.session_state[keys.TOKEN]


def visit_all_pages(at: AppTest) -> None:
    for page in PAGES:
        if not (ROOT / page).exists():
            continue
        at.switch_page(page).run()
        assert not at.exception, f"{page}: {at.exception}"


@pytest.mark.parametrize("page", PAGES)
def test_page_opens_without_a_model(page: str) -> None:
    if not (ROOT / page).exists():
        pytest.skip(f"{page} is not written yet")
    at = open_app()
    at.switch_page(page).run()
    assert not at.exception, at.exception
    if page == "pages/inspect.py":
        assert any("No model yet" in i.value for i in at.info)


@pytest.mark.skipif(not DEMO_CHECKPOINT.exists(), reason="assets/demo_carpet_weave.safetensors is missing")
def test_demo_checkpoint_makes_every_page_work() -> None:
    at = open_app()
    load_demo(at)
    entry = at.session_state[keys.MODEL]
    assert entry.detector.is_trained and "demo checkpoint" in entry.origin
    assert at.session_state[keys.DATA].data.name == "carpet_weave"
    visit_all_pages(at)
    at.switch_page("pages/inspect.py").run()
    assert len(at.image) >= 2  # default test picks: detail view + gallery
    assert any("image(s) scored" in m.value for m in at.markdown)
    assert at.metric[0].label.startswith("Image score")


@pytest.mark.skipif(not DEMO_CHECKPOINT.exists(), reason="assets/demo_carpet_weave.safetensors is missing")
def test_bad_checkpoints_keep_the_current_model() -> None:
    at = open_app()
    load_demo(at)
    before = at.session_state[keys.MODEL]
    bad_files = {
        "garbage.safetensors": b"this is not a checkpoint at all",
        "pickle.safetensors": b"\x80\x04\x95" + b"\x00" * 64,
        "truncated.safetensors": DEMO_CHECKPOINT.read_bytes()[:4096],
    }
    for name, data in bad_files.items():
        at.file_uploader(key=keys.K_CKPT_UPLOAD).set_value((name, data, "application/octet-stream")).run()
        assert not at.exception, at.exception
        errors = [e.value for e in at.error]
        assert any(f"Could not load {name}" in e and "current model was kept" in e for e in errors), errors
        assert at.session_state[keys.MODEL] is before


@pytest.mark.skipif(not DEMO_CHECKPOINT.exists(), reason="assets/demo_carpet_weave.safetensors is missing")
def test_save_copies_never_overwrite_and_load_back() -> None:
    at = open_app()
    load_demo(at)
    folder = session_folder(at)
    names = []
    for typed in ("run.1", "run.2", "run.2"):
        at.text_input(key=keys.K_SAVE_NAME).set_value(typed).run()
        at.button(key="train_save").click().run()
        assert not at.exception, at.exception
        names.append(sorted(p.name for p in folder.glob("run*.safetensors")))
    assert names[-1] == ["run.1.safetensors", "run.2-2.safetensors", "run.2.safetensors"], names
    at.selectbox(key=keys.K_SAVED_CKPT).set_value("run.1.safetensors").run()
    at.button(key="train_load_saved").click().run()
    assert not at.exception, at.exception
    entry = at.session_state[keys.MODEL]
    assert entry.origin == "loaded run.1.safetensors" and entry.version == 2
    # The sidebar and the Current model panel show the loaded model in the same render.
    assert any("loaded run.1.safetensors" in m.value for m in at.sidebar.markdown)
    assert any("loaded run.1.safetensors" in m.value for m in at.main.markdown)


def test_train_tiny_model_then_inspect_uploads() -> None:
    at = open_app()  # the train page with the demo data (carpet_weave) chosen by default
    assert at.session_state[keys.DATA].source == "demo"
    at.select_slider(key="train_size_tf_efficientnet_lite0").set_value(64)
    at.number_input(key="train_epochs").set_value(1)
    at.number_input(key="train_steps").set_value(1)
    at.run()
    button(at, "Train").click().run()
    assert not at.exception, at.exception
    job = at.session_state[keys.TRAIN_JOB]
    assert job is not None
    deadline = time.monotonic() + TRAIN_TIMEOUT_S
    while job.snapshot().running and time.monotonic() < deadline:
        time.sleep(1.0)
    snap = job.snapshot()
    assert snap.state == "done", snap.error
    at.run()  # the next interaction adopts the model, exactly once
    assert not at.exception, at.exception
    entry = at.session_state[keys.MODEL]
    assert entry.path == job.saved_path and entry.origin == "trained on demo / carpet_weave"
    assert job.detector is None  # handed over: the server's job list no longer holds the model
    assert entry.path is not None and entry.path.parent == session_folder(at)  # saved automatically
    assert entry.detector.record.data.to_dict() == {
        "source": "demo",
        "root": "",
        "category": "carpet_weave",
        "test_good": "",
        "defect": "",
        "masks": "",
    }
    assert entry.detector.config.image_size == 64
    assert any("finished" in s.value for s in at.success)
    summary = next(t.value for t in at.table if "trained on" in t.value.index)
    assert summary.loc["trained on", "value"] == "demo / carpet_weave"
    at.run()
    assert at.session_state[keys.MODEL] is entry  # not adopted twice

    at.switch_page("pages/inspect.py").run()
    assert not at.exception, at.exception
    at.multiselect(key="inspect_pick_demo_" + at.session_state[keys.DATA].root + "_carpet_weave").set_value(
        []
    )
    at.file_uploader(key="inspect_uploads_0").set_value(
        [("upload.png", png_bytes(), "image/png"), ("broken.png", b"not an image", "image/png")]
    )
    at.run()
    assert not at.exception, at.exception
    assert any("broken.png" in w.value for w in at.warning)
    assert any("**1** image(s) scored" in m.value for m in at.markdown)
    assert len(at.image) == 3  # input, overlay and colour bar of the one readable upload
    # Moving a slider re-renders from the per-session cache (no new scoring).
    cache_size = len(at.session_state["cf_score_cache"])
    at.slider(key="inspect_alpha").set_value(0.8).run()
    assert not at.exception, at.exception
    assert len(at.session_state["cf_score_cache"]) == cache_size


def _start_training(at: AppTest, epochs: int) -> None:
    at.select_slider(key="train_size_tf_efficientnet_lite0").set_value(64)
    at.number_input(key="train_epochs").set_value(epochs)
    at.number_input(key="train_steps").set_value(1)
    at.run()
    button(at, "Train").click().run()
    assert not at.exception, at.exception


def _wait_finished(job) -> str:
    deadline = time.monotonic() + TRAIN_TIMEOUT_S
    while job.snapshot().running and time.monotonic() < deadline:
        time.sleep(0.5)
    return job.snapshot().state


def test_two_sessions_train_independently_and_cancel_works() -> None:
    first, second = open_app(), open_app()
    _start_training(first, epochs=500)  # the most the page allows: cancelled mid-way
    _start_training(second, epochs=1)
    job_first, job_second = first.session_state[keys.TRAIN_JOB], second.session_state[keys.TRAIN_JOB]
    assert job_first is not job_second

    # The first session visits another page while its flow trains; the job is there on return.
    first.switch_page("pages/learn.py").run()
    assert not first.exception, first.exception
    first.switch_page("pages/train.py").run()
    assert first.session_state[keys.TRAIN_JOB] is job_first and job_first.snapshot().running
    button(first, "Cancel training").click().run()
    assert not first.exception, first.exception
    assert _wait_finished(job_first) == "cancelled"
    assert len(job_first.snapshot().loss_points) < 500

    # The other session's training is untouched by that cancel and becomes its model.
    assert _wait_finished(job_second) == "done", job_second.snapshot().error
    second.run()
    assert second.session_state[keys.MODEL].path == job_second.saved_path is not None
    first.run()
    assert not first.exception, first.exception
    model_first = first.session_state[keys.MODEL]
    assert model_first is None or model_first.detector is not job_second.detector


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_training_error_is_one_line_in_the_page() -> None:
    at = open_app()
    at.selectbox(key=keys.DEVICE_CHOICE).set_value("cuda").run()
    assert any("cuda" in w.value.lower() for w in at.warning)  # said before training starts
    button(at, "Train").click().run()
    job = at.session_state[keys.TRAIN_JOB]
    job.join(TRAIN_TIMEOUT_S)
    at.run()
    assert not at.exception, at.exception
    errors = [e.value for e in at.error if e.value.startswith("Training failed")]
    assert len(errors) == 1 and "\n" not in errors[0] and "Traceback" not in errors[0], errors
    assert at.session_state[keys.MODEL] is None
