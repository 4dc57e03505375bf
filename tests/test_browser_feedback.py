"""Inspect's feedback loop, camera and folder watch in headless Chromium (a fake camera device).

Marks a flagged test image good and sees the threshold move; takes a picture with the fake
camera and sees it scored; copies images into a watched folder and sees them scored without a
click. Screenshots go to ``test-artifacts/browser/``; with
``CAINNFLOW_SCREENSHOTS=docs/screenshots`` also to ``inspect_feedback.png``,
``inspect_camera.png`` and ``inspect_folder_watch.png`` there.
"""

from __future__ import annotations

import os
import re
import shutil
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
    "--use-fake-device-for-media-stream",  # a test pattern instead of a real camera
    "--use-fake-ui-for-media-stream",  # and no permission prompt
]
SERVER_START_TIMEOUT_S = 60
STEP_TIMEOUT_MS = 90_000
FIRST_PAGE_TIMEOUT_MS = 180_000
VIEWPORT = {"width": 1400, "height": 2000}
EXCEPTION = '[data-testid="stException"]'
SCREENSHOTS_ENV = "CAINNFLOW_SCREENSHOTS"


@pytest.fixture(scope="module")
def chromium() -> str:
    pytest.importorskip("playwright.sync_api", reason="playwright (python) is not installed")
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.skip("no chromium executable on PATH (Debian package `chromium`)")
    return path


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    home = tmp_path_factory.mktemp("feedback_home")
    log_path = tmp_path_factory.mktemp("feedback_log") / "streamlit.log"
    with log_path.open("wb") as log:
        try:
            with streamlit_server(home, log, SERVER_START_TIMEOUT_S) as url:
                yield url, home
        except ServerError as exc:
            pytest.fail(f"{exc}; see {log_path}")


def wait_idle(page, settle_ms: int = 600) -> None:
    page.wait_for_timeout(settle_ms)
    page.wait_for_selector('[data-testid="stStatusWidget"]', state="detached", timeout=STEP_TIMEOUT_MS)
    page.wait_for_timeout(200)


def shot(page, name: str, doc_name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    docs = os.environ.get(SCREENSHOTS_ENV)
    if docs:
        target = ROOT / docs / f"{doc_name}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)


def assert_no_exception(page, where: str) -> None:
    count = page.locator(EXCEPTION).count()
    assert count == 0, f"{where}: {page.locator(EXCEPTION).first.inner_text()}"


def _threshold_line(page) -> tuple[float, int]:
    """(threshold, anomalous count) from "N image(s) scored · K anomalous at threshold T"."""
    text = page.get_by_text(re.compile(r"image\(s\) scored · .* anomalous at threshold")).first.inner_text()
    match = re.search(r"(\d+)\s+anomalous at threshold ([0-9.eE+-]+)", text)
    assert match, text
    return float(match.group(2)), int(match.group(1))


def _open_inspect(page, url: str) -> None:
    from playwright.sync_api import expect

    page.goto(url, timeout=STEP_TIMEOUT_MS)
    load = page.get_by_role("button", name="Load the ready demo checkpoint")
    load.wait_for(timeout=FIRST_PAGE_TIMEOUT_MS)
    wait_idle(page)
    load.click()
    expect(page.get_by_text("Loaded the demo checkpoint", exact=False)).to_be_visible(timeout=STEP_TIMEOUT_MS)
    page.locator('[data-testid="stSidebarNav"]').get_by_text("Inspect", exact=True).click()
    expect(page.get_by_text("image(s) scored", exact=False).first).to_be_visible(timeout=STEP_TIMEOUT_MS)
    wait_idle(page)


def test_mark_an_image_and_take_a_picture(chromium: str, server: tuple[str, Path]) -> None:
    from playwright.sync_api import expect, sync_playwright

    url, _ = server
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport=VIEWPORT, permissions=["camera"])
            page = context.new_page()
            _open_inspect(page, url)
            before, flagged = _threshold_line(page)
            assert flagged >= 1  # the default picks include defects

            # The detail view's image is flagged; the operator says it is fine.
            # (On a fresh server the first mark waits for PyTorch: the record is saved with its model.)
            page.get_by_role("button", name="Mark good").first.click()
            expect(page.get_by_text("Marked good by you", exact=False).first).to_be_visible(
                timeout=FIRST_PAGE_TIMEOUT_MS
            )
            wait_idle(page)
            after, flagged_after = _threshold_line(page)
            assert after > before and flagged_after < flagged
            summary = page.get_by_text(f"Threshold {before:.4g} → {after:.4g}", exact=False)
            expect(summary.first).to_be_visible()
            assert_no_exception(page, "inspect after marking")
            shot(page, "10_inspect_feedback", "inspect_feedback")

            # The camera (Chromium's fake device): a picture is scored at once.
            page.get_by_role("tab", name="Camera / folder watch").click()
            wait_idle(page)
            page.get_by_text("Use the camera", exact=True).click()
            wait_idle(page)
            take = page.get_by_role("button", name=re.compile("Take photo", re.IGNORECASE))
            take.wait_for(timeout=STEP_TIMEOUT_MS)
            page.wait_for_timeout(1500)  # the fake stream starts
            take.click()
            live = page.get_by_role("tabpanel", name="Camera / folder watch")
            expect(live.get_by_text(re.compile(r"^Image score"))).to_be_visible(timeout=STEP_TIMEOUT_MS)
            expect(live.get_by_role("button", name="Mark defective")).to_be_visible()
            wait_idle(page)
            page.wait_for_timeout(800)  # images drawn
            assert_no_exception(page, "camera")
            shot(page, "11_inspect_camera", "inspect_camera")
        finally:
            browser.close()


def test_a_watched_folder_is_scored_as_images_arrive(
    chromium: str, server: tuple[str, Path], tmp_path: Path
) -> None:
    from playwright.sync_api import expect, sync_playwright

    url, home = server
    line = tmp_path / "line"
    line.mkdir()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport=VIEWPORT)
            _open_inspect(page, url)
            page.get_by_role("tab", name="Camera / folder watch").click()
            wait_idle(page)
            folder = page.get_by_label("Folder to watch")
            folder.fill(str(line))
            folder.press("Enter")
            wait_idle(page)
            page.get_by_text("Watch (every", exact=False).click()
            wait_idle(page)
            test = home / "demo" / "carpet_weave" / "test"
            for i, source in enumerate((test / "good" / "000.png", test / "hole" / "000.png")):
                shutil.copyfile(source, line / f"line_{i:03d}.png")  # no click: the page polls
            expect(page.get_by_text(re.compile(r"· 2 new image\(s\) scored · 1 anomalous"))).to_be_visible(
                timeout=STEP_TIMEOUT_MS
            )
            expect(page.get_by_role("heading", name="Latest image")).to_be_visible()
            page.wait_for_timeout(1000)  # images drawn
            assert_no_exception(page, "folder watch")
            shot(page, "12_inspect_folder_watch", "inspect_folder_watch")
        finally:
            browser.close()
