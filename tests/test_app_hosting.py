"""The app where strangers use it: hostile checkpoints, server paths, uploads, sessions, jobs.

Unit tests of :mod:`app.hosting` first (fast), then AppTest runs of the whole app.
"""

from __future__ import annotations

import io
import os
import stat
import time
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from app import hosting, inspect_view, jobs, keys, loaders
from cainnflow.errors import DataError
from tests.app_support import (  # noqa: F401 - fixtures
    APP,
    ROOT,
    app_home,
    button,
    home,
    hostile_corpus,
    load_demo,
    navigation_not_pages_folder,
    open_app,
)

DEMO_CHECKPOINT = ROOT / "assets" / "demo_carpet_weave.safetensors"
TRAIN_TIMEOUT_S = 120
MAX_RSS_GROWTH_MIB = 150
needs_demo = pytest.mark.skipif(not DEMO_CHECKPOINT.exists(), reason="the demo checkpoint is missing")


def png(seed: int, size: int = 64, mode: str = "RGB") -> bytes:
    rng = np.random.default_rng(seed)
    shape = (size, size, 3) if mode == "RGB" else (size, size)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def zip_bytes(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    pytest.skip("no /proc/self/status on this system")


# --------------------------------------------------------------------------- hosting unit tests


def test_zip_extracts_safely(tmp_path: Path) -> None:
    written = hosting.extract_zip(
        zip_bytes({"a/b.png": png(0), "__MACOSX/x": b"x", "c.png": png(1)}), tmp_path
    )
    assert sorted(p.relative_to(tmp_path).as_posix() for p in written) == ["a/b.png", "c.png"]


@pytest.mark.parametrize("name", ["../evil.png", "/abs/evil.png", "a/../../evil.png"])
def test_zip_with_unsafe_names_is_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(DataError, match="unsafe member name"):
        hosting.extract_zip(zip_bytes({"ok.png": png(0), name: png(1)}), tmp_path / "out")
    assert not (tmp_path / "out").exists() and not (tmp_path / "evil.png").exists()


def test_zip_limits_are_checked_before_extracting(tmp_path: Path) -> None:
    many = zip_bytes({f"{i}.txt": b"x" for i in range(11)})
    with pytest.raises(DataError, match="11 entries"):
        hosting.extract_zip(many, tmp_path, hosting.ZipLimits(max_members=10))
    buffer = io.BytesIO()  # a small zip that unpacks large (a zip bomb in miniature)
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("zeros.bin", b"\0" * 5_000_000)
    assert len(buffer.getvalue()) < 50_000
    with pytest.raises(DataError, match="unpacks to"):
        hosting.extract_zip(buffer.getvalue(), tmp_path, hosting.ZipLimits(max_total_bytes=1_000_000))
    assert not any(tmp_path.iterdir())


def test_zip_with_a_symlink_is_refused(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        link = zipfile.ZipInfo("link")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        archive.writestr(link, "/etc/passwd")
    with pytest.raises(DataError, match="symbolic link"):
        hosting.extract_zip(buffer.getvalue(), tmp_path)


def test_uploads_are_downscaled_on_decode_and_huge_ones_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    big = io.BytesIO()
    Image.new("RGB", (3000, 1500), (10, 200, 30)).save(big, format="JPEG")
    small = Image.open(io.BytesIO(hosting.decode_upload(big.getvalue(), "big.jpg")))
    assert max(small.size) == hosting.KEEP_SIDE and small.size[0] == 2 * small.size[1]
    tiny = png(0, 32)
    assert hosting.decode_upload(tiny, "tiny.png") == tiny  # small images are kept as they are
    monkeypatch.setattr(hosting, "MAX_UPLOAD_PIXELS", 1000)
    with pytest.raises(DataError, match="more than this app accepts"):
        hosting.decode_upload(tiny, "tiny.png")
    with pytest.raises(DataError, match=r"not\.png"):
        hosting.decode_upload(b"no image", "not.png")


def test_allowed_roots_refuse_outside_paths_without_revealing_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(hosting.DATA_ROOTS_ENV, raising=False)
    monkeypatch.delenv(hosting.HOSTED_ENV, raising=False)
    assert hosting.allowed_roots(tmp_path) is None  # local app: anywhere
    assert hosting.allowed_path("/etc", tmp_path) == Path("/etc").resolve()
    monkeypatch.setenv(hosting.HOSTED_ENV, "1")
    (tmp_path / "demo").mkdir()
    assert hosting.allowed_path(str(tmp_path / "demo"), tmp_path) == (tmp_path / "demo").resolve()
    messages = set()
    for outside in ("/etc", "/no/such/folder", str(tmp_path / ".." / "x"), "/etc/passwd"):
        with pytest.raises(hosting.PathNotAllowed) as caught:
            hosting.allowed_path(outside, tmp_path)
        messages.add(str(caught.value))
    assert len(messages) == 1 and "/etc" not in messages.pop()  # one message, whatever the path
    extra = tmp_path.parent / "shared_data"
    monkeypatch.setenv(hosting.DATA_ROOTS_ENV, str(extra))
    assert hosting.allowed_path(str(extra / "bottle"), tmp_path) == (extra / "bottle").resolve()


def test_checkpoint_names_are_unique(tmp_path: Path) -> None:
    first = loaders.unique_checkpoint_path(tmp_path, "run.1")
    first.write_bytes(b"x")
    second = loaders.unique_checkpoint_path(tmp_path, "run.2")
    assert (first.name, second.name) == ("run.1.safetensors", "run.2.safetensors")
    second.write_bytes(b"x")
    assert loaders.unique_checkpoint_path(tmp_path, "run.2.safetensors").name == "run.2-2.safetensors"
    assert loaders.unique_checkpoint_path(tmp_path, "../../etc/passwd").parent == tmp_path


# --------------------------------------------------------------------------- the app


@needs_demo
def test_hostile_checkpoints_are_refused_with_one_line_each_and_no_memory_growth() -> None:
    at = open_app()
    load_demo(at)
    before_model = at.session_state[keys.MODEL]
    corpus = hostile_corpus(DEMO_CHECKPOINT.read_bytes())
    rss_before = rss_mib()
    for name, data in corpus.items():
        at.file_uploader(key=keys.K_CKPT_UPLOAD).set_value((name, data, "application/octet-stream")).run()
        assert not at.exception, f"{name}: {at.exception}"
        errors = [e.value for e in at.error]
        assert len(errors) == 1, (name, errors)
        assert errors[0].startswith(f"Could not load {name}: ") and "\n" not in errors[0], errors[0]
        assert "Traceback" not in errors[0] and "current model was kept" in errors[0]
        assert at.session_state[keys.MODEL] is before_model
    growth = rss_mib() - rss_before
    assert growth < MAX_RSS_GROWTH_MIB, f"RSS grew by {growth:.0f} MiB over {len(corpus)} hostile checkpoints"
    at.switch_page("pages/inspect.py").run()  # the kept model still scores
    assert not at.exception, at.exception
    assert any("image(s) scored" in m.value for m in at.markdown), (
        [e.value for e in at.error],
        [i.value for i in at.info],
    )


def test_server_paths_outside_the_allowed_roots_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(hosting.HOSTED_ENV, "1")
    monkeypatch.delenv(hosting.DATA_ROOTS_ENV, raising=False)
    at = open_app()
    at.radio(key=keys.K_SOURCE).set_value("mvtec").run()
    refusals = []
    for outside in ("/etc", "/definitely/not/there"):
        at.text_input(key="train_mvtec_root").set_value(outside).run()
        assert not at.exception, at.exception
        refusals.append([e.value for e in at.error])
    assert refusals[0] == refusals[1] and len(refusals[0]) == 1, refusals  # exists or not: same line
    assert "not inside the data folders" in refusals[0][0] and "/etc" not in refusals[0][0]
    assert not [b for b in at.button if b.label == "Use this category"]
    # Custom folders and the batch folder go through the same check.
    at.radio(key=keys.K_SOURCE).set_value("custom").run()
    at.text_input(key="train_custom_good").set_value("/etc").run()
    button(at, "Use these folders").click().run()
    assert any("not inside the data folders" in e.value for e in at.error)
    assert at.session_state[keys.DATA].source == "demo"  # the data stays


@needs_demo
def test_reload_restores_model_and_data_then_loading_refreshes_every_panel() -> None:
    first = open_app()
    load_demo(first)
    token = first.session_state[keys.TOKEN]
    assert first.query_params["s"] == [token] or first.query_params["s"] == token
    first.text_input(key=keys.K_SAVE_NAME).set_value("mine").run()
    first.button(key="train_save").click().run()

    reloaded = open_app(s=token)  # a browser reload: a new session with the same URL
    entry = reloaded.session_state[keys.MODEL]
    assert entry is not None and entry.origin.startswith("demo checkpoint")
    assert reloaded.session_state[keys.DATA].ref.describe() == "demo / carpet_weave"
    reloaded.selectbox(key=keys.K_SAVED_CKPT).set_value("mine.safetensors").run()
    reloaded.button(key="train_load_saved").click().run()
    assert not reloaded.exception, reloaded.exception
    assert reloaded.session_state[keys.MODEL].origin == "loaded mine.safetensors"
    assert any("loaded mine.safetensors" in m.value for m in reloaded.sidebar.markdown)
    assert not any("No model yet" in c.value for c in reloaded.caption)
    reloaded.switch_page("pages/inspect.py").run()
    assert any("image(s) scored" in m.value for m in reloaded.markdown)

    stranger = open_app(s="x" * 30)  # a made-up token opens nothing
    assert stranger.session_state[keys.MODEL] is None
    assert stranger.session_state[keys.TOKEN] != "x" * 30


@needs_demo
def test_scoring_other_data_than_the_models_warns() -> None:
    at = open_app()
    load_demo(at)
    at.switch_page("pages/inspect.py").run()
    assert not [w for w in at.warning if "trained on" in w.value]
    at.switch_page("pages/train.py").run()
    at.selectbox(key=keys.K_DEMO_CATEGORY).set_value("metal_plate").run()
    assert not at.exception, at.exception
    assert at.session_state[keys.DATA].ref.category == "metal_plate"
    assert button(at, "Open the model's data: demo / carpet_weave")
    at.switch_page("pages/inspect.py").run()
    warnings = [w.value for w in at.warning if "trained on" in w.value]
    assert warnings and "demo / carpet_weave" in warnings[0] and "demo / metal_plate" in warnings[0]
    at.switch_page("pages/train.py").run()
    button(at, "Open the model's data").click().run()
    assert at.session_state[keys.DATA].ref.category == "carpet_weave"
    assert not [w for w in at.warning if "trained on" in w.value]


def mvtec_zip(n_train: int = 8) -> bytes:
    files = {f"bolts/train/good/{i:03d}.png": png(i) for i in range(n_train)}
    files.update({f"bolts/test/good/{i:03d}.png": png(100 + i) for i in range(2)})
    files.update({f"bolts/test/scratch/{i:03d}.png": png(200 + i) for i in range(2)})
    mask = png(0, mode="L")
    files.update({f"bolts/ground_truth/scratch/{i:03d}_mask.png": mask for i in range(2)})
    return zip_bytes(files)


def wait(job: jobs.TrainingJob, timeout_s: float = TRAIN_TIMEOUT_S) -> str:
    deadline = time.monotonic() + timeout_s
    while job.snapshot().running and time.monotonic() < deadline:
        time.sleep(0.5)
    return job.snapshot().state


def small_settings(at: AppTest, epochs: int) -> None:
    at.select_slider(key="train_size_tf_efficientnet_lite0").set_value(64)
    at.number_input(key="train_epochs").set_value(epochs)
    at.number_input(key="train_steps").set_value(1)
    at.select_slider(key="train_batch").set_value(4)
    at.run()


def test_train_on_an_uploaded_zip() -> None:
    at = open_app()
    at.radio(key=keys.K_SOURCE).set_value("upload").run()
    at.file_uploader(key=keys.K_DATA_UPLOAD).set_value([("bolts.zip", mvtec_zip(), "application/zip")]).run()
    button(at, "Use the uploaded images").click().run()
    assert not at.exception, at.exception
    data = at.session_state[keys.DATA]
    assert data.ref.source == "upload" and len(data.data.train) == 8 and data.data.has_masks
    assert data.data.n_anomalous == 2
    small_settings(at, epochs=1)
    button(at, "Train").click().run()
    job = at.session_state[keys.TRAIN_JOB]
    assert wait(job) == "done", job.snapshot().error
    at.run()
    entry = at.session_state[keys.MODEL]
    assert entry.detector.record.data.source == "upload"
    assert job.detector is None  # handed to the session: the server's job list no longer holds the model
    assert entry.path is not None and entry.path.is_file()  # saved automatically
    # The same data comes back after a reload, and the model is not flagged as mismatched.
    reloaded = open_app(s=at.session_state[keys.TOKEN])
    assert reloaded.session_state[keys.DATA].ref == data.ref
    assert reloaded.session_state[keys.MODEL].path == entry.path
    assert entry.detector.record.data == data.ref
    reloaded.switch_page("pages/inspect.py").run()
    assert not [w for w in reloaded.warning if "trained on" in w.value]
    # A broken zip is refused with one line, the data stays.
    at.file_uploader(key=keys.K_DATA_UPLOAD).set_value(
        [("x.zip", b"PK\x03\x04broken", "application/zip")]
    ).run()
    button(at, "Use the uploaded images").click().run()
    assert any(e.value.startswith("Upload refused:") for e in at.error)
    assert at.session_state[keys.DATA].ref == data.ref


@needs_demo
def test_batch_zip_gives_a_csv_and_heatmaps() -> None:
    at = open_app()
    load_demo(at)
    at.switch_page("pages/inspect.py").run()
    batch = zip_bytes({"a.png": png(1), "sub/b.png": png(2), "c.png": png(3), "notes.txt": b"hello"})
    at.file_uploader(key="inspect_batch_upload").set_value([("batch.zip", batch, "application/zip")]).run()
    button(at, "Score 3 image(s)").click().run()  # notes.txt is not an image: left out, and said so
    assert not at.exception, at.exception
    result: inspect_view.BatchResult = at.session_state[keys.K_BATCH]
    table = pd.read_csv(io.BytesIO(result.csv))
    assert sorted(table["image"]) == ["a.png", "c.png", "sub/b.png"]
    assert set(table["verdict"]) <= {"good", "anomalous"} and np.isfinite(table["score"]).all()
    assert not result.problems and any("notes.txt" in c.value for c in at.caption)
    with zipfile.ZipFile(io.BytesIO(result.heatmaps_zip)) as archive:
        assert sorted(archive.namelist()) == ["a_heatmap.png", "c_heatmap.png", "sub/b_heatmap.png"]
    assert any("3** image(s) scored" in m.value for m in at.markdown)


def test_a_closed_sessions_job_stops_and_jobs_are_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(hosting.MAX_JOBS_ENV, "1")
    first, second = open_app(), open_app()
    small_settings(first, epochs=500)
    button(first, "Train").click().run()
    job = first.session_state[keys.TRAIN_JOB]
    assert job.snapshot().running
    small_settings(second, epochs=1)
    button(second, "Train").click().run()
    assert any("Training not started" in e.value and "limit" in e.value for e in second.error)
    assert second.session_state[keys.TRAIN_JOB] is None

    # The first browser tab closes: Streamlit reports its session as inactive.
    token = first.session_state[keys.TOKEN]
    monkeypatch.setattr(jobs, "session_alive", lambda session_id: False)
    assert jobs._sessions.get(token), "the script run did not register its session"
    job.grace_s = 0.0
    assert wait(job, 30) == "cancelled"
    assert job.snapshot().error == jobs.CLOSED_SESSION_MESSAGE
    assert jobs.running_jobs() == 0
    monkeypatch.setattr(jobs, "session_alive", lambda session_id: True)
    button(second, "Train").click().run()  # the slot is free again
    assert second.session_state[keys.TRAIN_JOB] is not None
    assert wait(second.session_state[keys.TRAIN_JOB]) == "done"
    assert os.environ[hosting.MAX_JOBS_ENV] == "1"
