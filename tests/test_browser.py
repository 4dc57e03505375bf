"""The running app in headless Chromium: train on the demo data, then inspect an upload.

Screenshots of every step go to ``test-artifacts/browser/`` (ignored by git); with
``CAINNFLOW_SCREENSHOTS=docs/screenshots`` the named views are also written there (the
README's pictures).
"""

from __future__ import annotations

import os
import re
import shutil
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.streamlit_server import ServerError, streamlit_server

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts" / "browser"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SERVER_START_TIMEOUT_S = 60
TRAIN_TIMEOUT_MS = 150_000
STEP_TIMEOUT_MS = 60_000
FIRST_PAGE_TIMEOUT_MS = 180_000  # PyTorch import and demo data on a fresh server (slow on a busy machine)
VIEWPORT = {"width": 1400, "height": 1700}
CLOSED_JOB_TIMEOUT_S = 90  # the job's grace period after its session ends is 15 s
EXCEPTION = '[data-testid="stException"]'
NARROW = {"width": 1000, "height": 1700}  # a small laptop window, sidebar open: nothing may be cut there
# Text the page cuts: an element that clips its text (ellipsis or hidden overflow) narrower than
# the text, or a text field narrower than its value.
CUT_TEXT_JS = """() => {
  const out = [];
  const root = document.querySelector('[data-testid="stMain"]') || document.body;
  for (const el of root.querySelectorAll('*')) {
    if (!el.offsetParent || el.getBoundingClientRect().width === 0) continue;
    if (el.tagName === 'INPUT' && el.value && el.type !== 'range' && el.type !== 'file') {
      if (el.scrollWidth > el.clientWidth + 1) out.push(el.value);
      continue;
    }
    const cs = getComputedStyle(el);
    const clips = cs.textOverflow === 'ellipsis' || cs.overflow === 'hidden' || cs.overflowX === 'hidden';
    if (clips && el.children.length <= 3 && el.scrollWidth > el.clientWidth + 1 && el.innerText.trim()) {
      out.push(el.innerText.trim().slice(0, 80));
    }
  }
  return Array.from(new Set(out));
}"""


@pytest.fixture(scope="module")
def chromium() -> str:
    pytest.importorskip("playwright.sync_api", reason="playwright (python) is not installed")
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.skip("no chromium executable on PATH (Debian package `chromium`)")
    return path


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """``streamlit run`` on a free port with its own CAINNFLOW_HOME; stopped at the end."""
    home = tmp_path_factory.mktemp("browser_home")
    log_path = tmp_path_factory.mktemp("browser_log") / "streamlit.log"
    with log_path.open("wb") as log:
        try:
            with streamlit_server(home, log, SERVER_START_TIMEOUT_S) as url:
                yield url, home
        except ServerError as exc:
            pytest.fail(f"{exc}; see {log_path}")


def wait_idle(page, settle_ms: int = 600, timeout_ms: int = STEP_TIMEOUT_MS) -> None:
    """Waits until the script has stopped running (the status widget is gone)."""
    page.wait_for_timeout(settle_ms)
    page.wait_for_selector('[data-testid="stStatusWidget"]', state="detached", timeout=timeout_ms)
    page.wait_for_timeout(200)


SCREENSHOTS_ENV = "CAINNFLOW_SCREENSHOTS"
DOC_SHOTS = {  # step screenshot -> name in the docs folder
    "00_quick_start": "quick_start",
    "00_inspect_quick": "inspect_quick",
    "03_trained": "train_load",
    "04_inspect_upload": "inspect_upload",
    "06_inspect_demo": "inspect",
    "07_evaluate": "evaluate",
    "07b_evaluate_compare": "evaluate_compare",
    "07c_compare_models": "compare_models",
    "07d_compare_example": "compare_example",
    "08_latent": "latent",
    "09_inverse_generation": "latent_inverse",
    "10_learn": "learn",
    "10b_learn_cbam": "learn_cbam",
    "09b_sampling": "latent_sampling",
    "11_restored_after_reload": "restored_after_reload",
    "12_mismatch_warning": "mismatch_warning",
    "13_batch": "inspect_batch",
    "14_upload_data": "train_upload",
}


def shot(page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    docs = os.environ.get(SCREENSHOTS_ENV)
    if docs and name in DOC_SHOTS:
        target = ROOT / docs / f"{DOC_SHOTS[name]}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    return path


def assert_no_exception(page, where: str) -> None:
    count = page.locator(EXCEPTION).count()
    assert count == 0, (
        f"{where}: {count} Streamlit exception box(es): {page.locator(EXCEPTION).first.inner_text()}"
    )


STREAMLIT_ICON_BOXES = {"add icon"}
"""Streamlit's own add-more-files button: a material icon whose ligature text sits in a clipped
box (the page shows a "+"), not a label of ours."""


def assert_nothing_cut(page, where: str) -> None:
    """No label, button or field shows cut text, at this window width and at :data:`NARROW`."""
    wide = page.viewport_size
    for size in (wide, NARROW):
        page.set_viewport_size(size)
        page.wait_for_timeout(700)
        cut = [text for text in page.evaluate(CUT_TEXT_JS) if text not in STREAMLIT_ICON_BOXES]
        assert not cut, f"{where} at {size['width']} px: cut text {cut}"
    page.set_viewport_size(wide)
    page.wait_for_timeout(300)


def open_page(page, title: str) -> None:
    page.locator('[data-testid="stSidebarNav"]').get_by_text(title, exact=True).click()
    page.get_by_role("heading", name=title).first.wait_for(timeout=STEP_TIMEOUT_MS)
    wait_idle(page)


def test_train_then_inspect_in_a_browser(chromium: str, server: tuple[str, Path]) -> None:
    from playwright.sync_api import expect, sync_playwright

    url, home = server
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport=VIEWPORT)
            page.goto(url, timeout=STEP_TIMEOUT_MS)

            # A fresh server: the ready demo model works before PyTorch is imported (its ONNX
            # twin on ONNX Runtime, app.quickstart); the training controls follow.
            load = page.get_by_role("button", name="Load the ready demo checkpoint")
            load.wait_for(timeout=FIRST_PAGE_TIMEOUT_MS)
            wait_idle(page)
            assert_no_exception(page, "first page")
            shot(page, "00_quick_start")
            page.get_by_role("button", name="Load the ready demo checkpoint").click()
            expect(page.get_by_text("Loaded the demo checkpoint", exact=False)).to_be_visible(
                timeout=STEP_TIMEOUT_MS
            )
            open_page(page, "Inspect")
            expect(page.get_by_text("image(s) scored", exact=False)).to_be_visible(timeout=STEP_TIMEOUT_MS)
            expect(page.locator('[data-testid="stImage"] img').first).to_be_visible(timeout=STEP_TIMEOUT_MS)
            wait_idle(page)
            assert_no_exception(page, "inspect page right after the server started")
            shot(page, "00_inspect_quick")
            # Stale sidebar states clear by themselves once the data is written and PyTorch is in.
            sidebar = page.locator('[data-testid="stSidebar"]')
            expect(sidebar.get_by_text("being generated", exact=False)).to_have_count(
                0, timeout=FIRST_PAGE_TIMEOUT_MS
            )
            expect(sidebar.get_by_text("PyTorch is loading", exact=False)).to_have_count(
                0, timeout=FIRST_PAGE_TIMEOUT_MS
            )
            expect(sidebar.get_by_text("ONNX Runtime", exact=False)).to_have_count(0, timeout=STEP_TIMEOUT_MS)
            expect(sidebar.get_by_text("Detected:", exact=False)).to_be_visible()
            check_colour_bar(page)

            open_page(page, "Train / load")
            expect(page.get_by_text("Current data: demo / carpet_weave", exact=False)).to_be_visible(
                timeout=FIRST_PAGE_TIMEOUT_MS
            )
            wait_idle(page)
            assert_no_exception(page, "train page")
            shot(page, "01_train_page")

            # Small, fast settings: 64 px images, 1 step per scale, 2 epochs.
            size = page.get_by_role("slider", name="Image size")
            size.focus()
            size.press("Home")
            wait_idle(page)
            for label, value in (("Steps per scale", "1"), ("Epochs (empty: step budget)", "2")):
                field = page.get_by_label(label, exact=True)
                field.fill(value)
                field.press("Enter")
                wait_idle(page)
            expect(page.get_by_role("slider", name="Image size")).to_have_attribute("aria-valuetext", "64")
            page.get_by_role("button", name="Train", exact=True).click()
            expect(page.locator('[data-testid="stProgress"]').first).to_be_visible(timeout=STEP_TIMEOUT_MS)
            shot(page, "02_training")
            expect(page.get_by_text("finished in", exact=False)).to_be_visible(timeout=TRAIN_TIMEOUT_MS)
            wait_idle(page)
            expect(page.get_by_text("trained on demo / carpet_weave").first).to_be_visible()
            expect(page.locator('[data-testid="stPlotlyChart"]').first).to_be_visible(timeout=STEP_TIMEOUT_MS)
            expect(page.locator('[data-testid="stTable"]').first).to_be_visible(timeout=STEP_TIMEOUT_MS)
            page.wait_for_timeout(1000)  # let the chart draw
            assert_no_exception(page, "train page after training")
            chart = page.locator('[data-testid="stPlotlyChart"]').filter(has_text="Training loss").first
            assert chart.locator(".g-xtitle").text_content() == "step"
            ticks = [t.text_content().replace(",", "") for t in chart.locator(".xtick text").all()]
            assert 2 <= len(ticks) <= 8 and all(t.isdigit() for t in ticks), ticks
            assert_nothing_cut(page, "Train / load after training")
            shot(page, "03_trained")

            open_page(page, "Inspect")
            assert_no_exception(page, "inspect page")
            sample = home / "demo" / "carpet_weave" / "test" / "hole" / "000.png"
            broken = home / "broken.png"
            broken.write_bytes(b"definitely not a png")
            page.locator('[data-testid="stFileUploaderDropzoneInput"]').first.set_input_files(
                [str(sample), str(broken)]
            )
            expect(page.get_by_text("broken.png", exact=False).last).to_be_visible(timeout=STEP_TIMEOUT_MS)
            wait_idle(page)
            expect(page.get_by_text("Skipped an image", exact=False)).to_be_visible()
            images = page.locator('[data-testid="stImage"] img')
            expect(images.first).to_be_visible(timeout=STEP_TIMEOUT_MS)
            assert images.count() >= 2
            assert_no_exception(page, "inspect page with uploads")
            assert_nothing_cut(page, "Inspect with an image in the detail view")
            shot(page, "04_inspect_upload")

            # The ready demo checkpoint: the other pages work at once.
            open_page(page, "Train / load")
            page.get_by_role("button", name="Load the ready demo checkpoint").click()
            expect(page.get_by_text("Loaded the demo checkpoint", exact=False)).to_be_visible(
                timeout=STEP_TIMEOUT_MS
            )
            wait_idle(page)
            assert_no_exception(page, "train page after loading the demo checkpoint")
            shot(page, "05_demo_checkpoint")
            open_page(page, "Inspect")
            expect(page.get_by_text("image(s) scored", exact=False)).to_be_visible(timeout=STEP_TIMEOUT_MS)
            wait_idle(page)
            expect(page.locator('[data-testid="stImage"] img').last).to_be_visible(timeout=STEP_TIMEOUT_MS)
            assert_no_exception(page, "inspect page with the demo checkpoint")
            shot(page, "06_inspect_demo")

            # Evaluate & threshold: score the test split, then move the threshold.
            open_page(page, "Evaluate & threshold")
            page.get_by_role("button", name="Evaluate on test split").click()
            expect(page.get_by_text("Keep this threshold", exact=False).first).to_be_visible(
                timeout=STEP_TIMEOUT_MS
            )
            wait_idle(page)
            threshold = page.get_by_role("slider", name="Threshold on the image score", exact=False).first
            threshold.focus()
            threshold.press("ArrowRight")
            wait_idle(page)
            page.wait_for_timeout(1000)
            assert_no_exception(page, "evaluate page after evaluation")
            shot(page, "07_evaluate")
            compare_two_models(page)
            compare_session_models(page)
            export_zip_has_a_readme(page)

            # Latent space: per-scale latents, then noise injected and the flow run backwards.
            open_page(page, "Latent space")
            assert_no_exception(page, "latent page")
            shot(page, "08_latent")
            page.get_by_role("tab", name="Inverse generation").click()
            wait_idle(page)
            # A click on the map picks a cell: Row / Column follow it, and the verdict is shown.
            row, col = page.get_by_label("Row", exact=True), page.get_by_label("Column", exact=True)
            before = (row.input_value(), col.input_value())
            grid = page.locator('[data-testid="stPlotlyChart"]').filter(has_text="click cells").first
            grid.scroll_into_view_if_needed()
            box = grid.locator(".nsewdrag").first.bounding_box()
            page.mouse.click(box["x"] + 0.25 * box["width"], box["y"] + 0.75 * box["height"])
            wait_idle(page)
            # The caption names the clicked cell once the rerun is drawn; Row / Column then hold it
            # (both polled: a slow machine may still be drawing the rerun when they are read).
            caption = page.get_by_text(re.compile(r"^1 cell\(s\): \(\d+,\d+\)$"))
            expect(caption).to_be_visible(timeout=STEP_TIMEOUT_MS)
            clicked = re.search(r"\((\d+),(\d+)\)", caption.inner_text())
            assert clicked is not None and clicked.groups() != before, (before, caption.inner_text())
            expect(row).to_have_value(clicked[1], timeout=STEP_TIMEOUT_MS)
            expect(col).to_have_value(clicked[2], timeout=STEP_TIMEOUT_MS)
            page.get_by_role("button", name="Add point").click()
            wait_idle(page)
            verdict = page.locator('[data-testid="stAlert"]').filter(has_text="threshold").first
            expect(verdict).to_contain_text(re.compile(r"(good|anomalous): score [0-9.]+ [<≥] threshold"))
            page.wait_for_timeout(1000)
            assert_no_exception(page, "inverse generation")
            shot(page, "09_inverse_generation")
            page.get_by_role("tab", name="Sampling", exact=False).click()
            wait_idle(page)
            # Its own image picker (hidden tabs' widgets are not counted)
            expect(page.get_by_role("combobox", name="Test image of", exact=False)).to_have_count(1)
            assert_no_exception(page, "sampling")
            shot(page, "09b_sampling")

            # Learn: train the 2-D toy flow from the page.
            open_page(page, "Learn")
            frame = page.locator('[data-testid="stImage"] img').first
            page.get_by_role("button", name="Train 300 steps").click()
            frames, seen_progress, start = set(), False, time.monotonic()
            while time.monotonic() - start < TRAIN_TIMEOUT_MS / 1000:
                assert frame.count() == 1, "the toy flow's picture vanished while it trained"
                frames.add(frame.get_attribute("src"))  # the picture moves as the flow learns
                running = page.locator('[data-testid="stProgress"]').count() > 0
                seen_progress |= running
                if not running and (seen_progress or time.monotonic() - start > 10):
                    break
                page.wait_for_timeout(250)
            wait_idle(page, timeout_ms=TRAIN_TIMEOUT_MS)  # animated training: slow on a busy machine
            assert len(frames) >= 3, f"{len(frames)} distinct frames while training"
            assert_no_exception(page, "learn page after toy training")
            shot(page, "10_learn")
            page.get_by_role("tab", name="3 · CBAM attention").click()
            wait_idle(page)
            expect(page.get_by_text("the input image", exact=True)).to_be_visible(timeout=STEP_TIMEOUT_MS)
            expect(page.get_by_text("Inside the border the gate lies between", exact=False)).to_be_visible()
            page.wait_for_timeout(1000)
            assert_no_exception(page, "learn page, CBAM")
            shot(page, "10b_learn_cbam")
            page.get_by_role("tab", name="4 · Subnet arrangements").click()
            wait_idle(page)
            expect(page.get_by_text("paper Eq. 11", exact=True)).to_be_visible()
            shot(page, "10c_learn_subnets")

            # A reload keeps model and data (the session token is in the URL); loading a saved
            # checkpoint then refreshes the sidebar and the Current model panel at once.
            open_page(page, "Train / load")
            page.reload()
            page.get_by_role("heading", name="Train / load").wait_for(timeout=STEP_TIMEOUT_MS)
            wait_idle(page)
            sidebar = page.locator('[data-testid="stSidebar"]')
            expect(sidebar.get_by_text("demo checkpoint (carpet_weave)")).to_be_visible(
                timeout=STEP_TIMEOUT_MS
            )
            saved = page.get_by_role("combobox", name="This session's checkpoints")
            saved.click()
            page.get_by_role("option", name="cainnflow_carpet_weave", exact=False).first.click()
            wait_idle(page)
            page.get_by_role("button", name="Load", exact=True).click()
            wait_idle(page)
            expect(sidebar.get_by_text("loaded cainnflow_carpet_weave", exact=False)).to_be_visible()
            expect(page.get_by_text("No model yet", exact=False)).to_have_count(0)
            assert_no_exception(page, "train page after reload and load")
            shot(page, "11_restored_after_reload")

            # Other data than the model's: Inspect warns.
            page.get_by_role("combobox", name="Demo category").click()
            page.get_by_role("option", name="metal_plate").click()
            expect(page.get_by_text("Current data: demo / metal_plate", exact=False)).to_be_visible(
                timeout=FIRST_PAGE_TIMEOUT_MS  # generated on first use; leaving before would drop it
            )
            wait_idle(page)
            open_page(page, "Inspect")
            expect(page.get_by_text("but the current data is", exact=False).first).to_be_visible(
                timeout=STEP_TIMEOUT_MS
            )
            assert_no_exception(page, "inspect page with mismatched data")
            shot(page, "12_mismatch_warning")

            # Batch: a zip of images -> table, CSV and heatmaps.
            page.get_by_role("tab", name="Batch", exact=False).click()
            demo = home / "demo" / "carpet_weave" / "test"
            archive = home / "batch.zip"
            with zipfile.ZipFile(archive, "w") as zf:
                for path in sorted(demo.glob("*/000.png"))[:4]:
                    zf.write(path, f"{path.parent.name}_{path.name}")
            page.locator('[data-testid="stFileUploaderDropzoneInput"]').last.set_input_files(str(archive))
            page.get_by_role("button", name="Score 4 image(s)").click()
            expect(page.get_by_role("button", name="CSV report")).to_be_visible(timeout=STEP_TIMEOUT_MS)
            wait_idle(page)
            with page.expect_download() as download:
                page.get_by_role("button", name="CSV report").click()
            csv = Path(download.value.path()).read_text().splitlines()
            assert csv[0].startswith("image,score") and len(csv) == 5, csv
            assert_no_exception(page, "batch inspection")
            shot(page, "13_batch")

            # Train on uploaded images: the data panel takes a zip.
            open_page(page, "Train / load")
            page.get_by_text("Upload images", exact=True).first.click()
            wait_idle(page)
            good = home / "good.zip"
            with zipfile.ZipFile(good, "w") as zf:
                for path in sorted((home / "demo" / "carpet_weave" / "train" / "good").glob("*.png"))[:6]:
                    zf.write(path, f"parts/{path.name}")
            page.locator('[data-testid="stFileUploaderDropzoneInput"]').first.set_input_files(str(good))
            wait_idle(page)
            page.get_by_role("button", name="Use the uploaded images").click()
            expect(page.get_by_text("Current data: upload / my_data", exact=False)).to_be_visible(
                timeout=STEP_TIMEOUT_MS
            )
            assert_no_exception(page, "train page with uploaded data")
            shot(page, "14_upload_data")
        finally:
            browser.close()


def check_colour_bar(page) -> None:
    """Inspect's colour bar: clear of the pixel slider's min / max labels, its caption giving the
    sliders' range (#19)."""
    slider = page.get_by_role("slider", name="Pixel threshold (outlined region)")
    low, high = float(slider.get_attribute("min")), float(slider.get_attribute("max"))
    caption = page.get_by_text("Map colours over the sliders' range", exact=False).first
    expect_text = f"{low:.4g} → {high:.4g}"
    assert expect_text in caption.inner_text(), (expect_text, caption.inner_text())
    widget = page.locator('[data-testid="stSlider"]').filter(has=slider)
    for size in (VIEWPORT, NARROW):
        page.set_viewport_size(size)
        page.wait_for_timeout(700)
        slider.focus()
        widget.hover()  # shows the min / max labels
        page.wait_for_timeout(500)
        labels = widget.locator('[data-testid="stSliderTickBar"]').bounding_box()
        bars = [
            b for b in page.locator('[data-testid="stImage"] img').all() if b.bounding_box()["height"] < 60
        ]
        assert bars, "no colour bar under the sliders"
        top = bars[0].bounding_box()["y"]
        assert labels is None or labels["y"] + labels["height"] <= top - 4, (size, labels, top)
    page.set_viewport_size(VIEWPORT)
    page.mouse.move(0, 0)


def compare_two_models(page) -> None:
    """Evaluate → compare with a saved checkpoint: a side-by-side table, each model at its own
    threshold, nothing clipped at 1400 or 1000 px (#19)."""
    from playwright.sync_api import expect

    choice = page.get_by_role("combobox", name="One of this session's checkpoints")
    choice.scroll_into_view_if_needed()
    choice.click()
    page.get_by_role("option", name="cainnflow_carpet_weave", exact=False).first.click()
    wait_idle(page)
    page.get_by_role("button", name="Compare on this test split").click()
    expect(page.get_by_text("Image ROC, both models", exact=False).first).to_be_visible(
        timeout=STEP_TIMEOUT_MS
    )
    wait_idle(page)
    table = page.locator('[data-testid="stTable"]').filter(has_text="at its own threshold").first
    for row in ("Image AUROC", "Pixel AUROC", "AUPRO (FPR ≤ 0.3)", "Precision at its own threshold",
                "Recall at its own threshold", "False positive rate at its own threshold"):  # fmt: skip
        expect(table.get_by_text(row, exact=True)).to_be_visible()
    for size in (VIEWPORT, NARROW):
        page.set_viewport_size(size)
        page.wait_for_timeout(700)
        wide, shown = table.evaluate("e => [e.scrollWidth, e.clientWidth]")
        assert wide <= shown + 1, f"the comparison table is clipped at {size['width']} px ({wide} > {shown})"
    page.set_viewport_size(VIEWPORT)
    assert_nothing_cut(page, "Evaluate with a comparison")
    table.scroll_into_view_if_needed()
    page.wait_for_timeout(500)
    assert_no_exception(page, "evaluate page, comparison")
    shot(page, "07b_evaluate_compare")


def compare_session_models(page) -> None:
    """Compare models: this session's models scored side by side; the shipped example sweep (#19)."""
    from playwright.sync_api import expect

    open_page(page, "Compare models")
    page.get_by_role("button", name="Score", exact=False).click()
    table = page.locator('[data-testid="stTable"]').filter(has_text="own threshold").first
    expect(table).to_be_visible(timeout=STEP_TIMEOUT_MS)
    wait_idle(page)
    expect(table.get_by_text("false positive rate", exact=True)).to_be_visible()
    assert_nothing_cut(page, "Compare models, this session's models")
    assert_no_exception(page, "compare models, session")
    shot(page, "07c_compare_models")
    page.get_by_text("Example sweep", exact=True).click()
    wait_idle(page)
    expect(page.locator('[data-testid="stPlotlyChart"]')).to_have_count(2, timeout=STEP_TIMEOUT_MS)
    expect(page.get_by_text("8 trials in example sweep")).to_be_visible()
    page.wait_for_timeout(1000)
    assert_nothing_cut(page, "Compare models, example sweep")
    assert_no_exception(page, "compare models, example")
    shot(page, "07d_compare_example")


def export_zip_has_a_readme(page) -> None:
    """Train / load → Export: the zip holds the graph, export.json with the decision rule and a README (#19)."""
    import json

    from playwright.sync_api import expect

    open_page(page, "Train / load")
    page.get_by_role("button", name="Export", exact=True).click()
    download_button = page.get_by_role("button", name="Download export (.zip)")
    expect(download_button).to_be_visible(timeout=TRAIN_TIMEOUT_MS)
    with page.expect_download() as download:
        download_button.click()
    with zipfile.ZipFile(download.value.path()) as archive:
        assert sorted(archive.namelist()) == ["README.md", "export.json", "model.onnx"], archive.namelist()
        decision = json.loads(archive.read("export.json"))["decision"]
        readme = archive.read("README.md").decode()
    assert decision["image"].startswith("score >= threshold")
    assert "# score_onnxruntime.py" in readme and "import cainnflow" not in readme
    assert_no_exception(page, "train page after export")


def _slots_in_use(page) -> int:
    text = page.get_by_text("training slot(s) in use", exact=False).first.inner_text()
    return int(text.split("Server: ")[1].split(" of ")[0])


def test_a_closed_tabs_training_stops(chromium: str, server: tuple[str, Path]) -> None:
    """Streamlit reports the closed tab's session inactive; the job's watchdog cancels it."""
    from playwright.sync_api import expect, sync_playwright

    url, _ = server
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            tab = browser.new_page(viewport=VIEWPORT)
            tab.goto(url, timeout=STEP_TIMEOUT_MS)
            expect(tab.get_by_text("Current data: demo / carpet_weave", exact=False)).to_be_visible(
                timeout=STEP_TIMEOUT_MS
            )
            wait_idle(tab)
            size = tab.get_by_role("slider", name="Image size")
            size.focus()
            size.press("Home")
            wait_idle(tab)
            field = tab.get_by_label("Epochs (empty: step budget)", exact=True)
            field.fill("500")
            field.press("Enter")
            wait_idle(tab)
            tab.get_by_role("button", name="Train", exact=True).click()
            expect(tab.get_by_role("button", name="Cancel training")).to_be_visible(timeout=STEP_TIMEOUT_MS)
            other = browser.new_page(viewport=VIEWPORT)
            other.goto(url, timeout=STEP_TIMEOUT_MS)
            other.get_by_role("heading", name="Train / load").wait_for(timeout=STEP_TIMEOUT_MS)
            wait_idle(other)
            assert _slots_in_use(other) >= 1
            tab.close()
            deadline = time.monotonic() + CLOSED_JOB_TIMEOUT_S
            while _slots_in_use(other) > 0 and time.monotonic() < deadline:
                other.wait_for_timeout(2000)
                other.reload()
                other.get_by_role("heading", name="Train / load").wait_for(timeout=STEP_TIMEOUT_MS)
                wait_idle(other)
            assert _slots_in_use(other) == 0, "the closed tab's training job still runs"
        finally:
            browser.close()


def test_a_bookmarked_page_on_a_fresh_server_opens_the_app(
    chromium: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Before the first ``st.navigation`` call Streamlit treats ``pages/`` as a legacy page folder:
    a page opened by its own address must hand over to the router (with its session token)."""
    from playwright.sync_api import expect, sync_playwright

    home = tmp_path_factory.mktemp("bookmark_home")
    token = "bookmarked-session-token-0123"
    (home / "sessions" / token).mkdir(parents=True)
    log_path = tmp_path_factory.mktemp("bookmark_log") / "streamlit.log"
    with (
        log_path.open("wb") as log,
        streamlit_server(home, log, SERVER_START_TIMEOUT_S) as url,
        sync_playwright() as pw,
    ):
        browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport=VIEWPORT)
            page.goto(f"{url}/evaluate?s={token}", timeout=STEP_TIMEOUT_MS)
            page.get_by_role("heading", name="Evaluate & threshold").wait_for(timeout=FIRST_PAGE_TIMEOUT_MS)
            wait_idle(page)
            nav = page.locator('[data-testid="stSidebarNav"]')
            expect(nav.get_by_text("Evaluate & threshold", exact=True)).to_be_visible()
            expect(nav.get_by_text("evaluate", exact=True)).to_have_count(0)  # no file-name navigation
            assert f"s={token}" in page.url and "/evaluate" in page.url and "page=" not in page.url, page.url
            assert_no_exception(page, "a bookmarked page on a fresh server")
            # Every page's own address opens it, the first page's too (it is served at "/").
            for path, title in (("train", "Train / load"), ("learn", "Learn"), ("inspect", "Inspect")):
                page.goto(f"{url}/{path}?s={token}", timeout=STEP_TIMEOUT_MS)
                nav.get_by_text(title, exact=True).wait_for(timeout=STEP_TIMEOUT_MS)
                wait_idle(page)
                expect(page.get_by_text("Page not found")).to_have_count(0)
                current = nav.locator('a[aria-current="page"]')
                expect(current).to_contain_text(title)
                assert f"s={token}" in page.url
        finally:
            browser.close()
