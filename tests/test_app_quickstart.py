"""The first minutes of a fresh server: pages and heatmaps before PyTorch is imported (app.quickstart)."""

from __future__ import annotations

import subprocess
import sys
import threading

import numpy as np
import pytest
from PIL import Image

from app import keys, loaders, quickstart
from cainnflow.demo_data import render_demo_sample
from cainnflow.detector import Detector
from tests.app_support import APP, ROOT, app_home, home, load_demo, navigation_not_pages_folder, open_app  # noqa: F401

LIGHT_MODULES = (
    "app.warmup",
    "app.state",
    "app.sidebar",
    "app.quickstart",
    "app.model_actions",
    "app.inspect_view",
)


def test_the_first_pages_modules_do_not_import_torch() -> None:
    """What the router, Train / load's quick start and Inspect import must stay PyTorch-free."""
    code = (
        "import sys\n"
        f"for name in {LIGHT_MODULES!r}: __import__(name)\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'timm', 'FrEIA'))\n"
        "assert not heavy, heavy[:5]\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]


def test_shipped_export_is_the_shipped_checkpoint() -> None:
    """The ONNX twin gives the PyTorch demo model's maps and scores (a stale export fails here)."""
    quick = quickstart.quick_demo_detector()
    assert quick is not None, "assets/demo_carpet_weave_onnx is missing or does not load"
    full = loaders.load_demo_detector("cpu")
    assert full is not None
    assert quick.threshold == pytest.approx(full.threshold, rel=1e-9)
    assert quick.stats.pixel_p50 == pytest.approx(full.stats.pixel_p50, rel=1e-9)
    assert quick.config.image_size == full.config.image_size
    assert quick.config.out_indices == tuple(full.config.out_indices)
    images = [
        render_demo_sample("carpet_weave", split="test", defect=defect, index=0).image
        for defect in ("good", "cut", "hole")
    ]
    pictures = [Image.fromarray(image) for image in images]
    mine, theirs = quick.predict(pictures), full.predict(pictures)
    assert np.allclose(mine.scores, theirs.scores, atol=2e-3), (mine.scores, theirs.scores)
    assert np.abs(mine.maps - theirs.maps).max() < 5e-3
    assert mine.scores[0] < mine.scores[1] and mine.scores[0] < mine.scores[2]  # good < defects


@pytest.fixture
def torch_loading(monkeypatch: pytest.MonkeyPatch) -> threading.Event:
    """The app as on a fresh server whose PyTorch import has not finished; set the event to finish it."""
    ready = threading.Event()
    monkeypatch.setattr(quickstart, "_ready", ready)
    monkeypatch.setattr(quickstart, "_thread", threading.Thread(target=lambda: None))  # never started
    return ready


def test_quick_start_then_the_same_model_on_pytorch(torch_loading: threading.Event) -> None:
    at = open_app()
    assert any("Loading PyTorch" in info.value for info in at.info)
    labels = [b.label for b in at.button]
    assert "Load the ready demo checkpoint" in labels and "Train" not in labels
    assert any("PyTorch is loading" in c.value for c in at.sidebar.caption)

    load_demo(at)
    assert not at.exception, at.exception
    assert any("Loaded the demo checkpoint" in s.value for s in at.success)
    entry = at.session_state[keys.MODEL]
    assert quickstart.is_quick(entry.detector)

    at.switch_page("pages/inspect.py").run()
    assert not at.exception, at.exception
    assert any("image(s) scored" in m.value for m in at.markdown), "Inspect scored nothing on the ONNX twin"
    assert any("ONNX Runtime" in c.value for c in at.sidebar.caption)
    assert quickstart.is_quick(at.session_state[keys.MODEL].detector)  # Inspect keeps the twin
    quick_threshold = entry.detector.threshold

    torch_loading.set()  # the import finished: Inspect's next run has the PyTorch model (#19)
    at.run()
    assert not at.exception, at.exception
    assert isinstance(at.session_state[keys.MODEL].detector, Detector)
    assert not any("ONNX Runtime" in c.value or "PyTorch is loading" in c.value for c in at.sidebar.caption)
    at.switch_page("pages/evaluate.py").run()
    assert not at.exception, at.exception
    upgraded = at.session_state[keys.MODEL]
    assert isinstance(upgraded.detector, Detector)
    assert upgraded.version == entry.version  # the same model: cached maps stay valid
    assert upgraded.detector.threshold == pytest.approx(quick_threshold)

    at.switch_page("pages/train.py").run()  # the full page now
    assert not at.exception, at.exception
    assert any(b.label == "Train" for b in at.button)
