"""Issue #16 in a real browser: a hosted server (``CAINNFLOW_HOSTED=1``) fed hostile uploads.

Every step asserts no exception box and no server path on the page; the server's resident
size is sampled from ``/proc`` while eight 62 MP PNGs (a 15 kB zip) are scored, and must stay
under 1.5 GB above its idle size. Screenshots go to ``test-artifacts/browser_hostile/``.
"""

from __future__ import annotations

import io
import os
import shutil
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from tests.app_support import _with_document, set_data_ref
from tests.streamlit_server import ServerError, streamlit_server

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts" / "browser_hostile"
DEMO_CHECKPOINT = ROOT / "assets" / "demo_carpet_weave.safetensors"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"]
STEP_TIMEOUT_MS = 180_000
SCORE_TIMEOUT_MS = 600_000
MAX_ABOVE_IDLE_MIB = 1536
BIG_SIDE = 7900  # 62 MP, under the 64 MP upload limit
BOMB_SIDE = 9400  # 88 MP, over it
EXCEPTION = '[data-testid="stException"]'


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _zip(path: Path, files: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return path


@pytest.fixture(scope="module")
def hostile_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("hostile")
    big = _png(Image.new("RGBA", (BIG_SIDE, BIG_SIDE), (30, 120, 200, 255)))
    bomb = _png(Image.new("RGBA", (BOMB_SIDE, BOMB_SIDE), (30, 120, 200, 255)))
    small = _png(Image.new("RGB", (64, 64), (90, 20, 200)))
    cmyk = io.BytesIO()
    Image.new("CMYK", (1500, 900), (10, 200, 30, 5)).save(cmyk, format="JPEG")
    (folder / "print.jpg").write_bytes(cmyk.getvalue())

    def dataset_etc(document: dict) -> None:
        set_data_ref(document, {"source": "mvtec", "root": "/", "category": "/etc"})

    (folder / "evil.safetensors").write_bytes(_with_document(DEMO_CHECKPOINT.read_bytes(), dataset_etc))
    return {
        "huge": _zip(folder / "huge.zip", {f"huge_{i}.png": big for i in range(8)}),
        "bomb": _zip(folder / "bomb.zip", {f"bomb_{i}.png": bomb for i in range(4)}),
        "clash": _zip(folder / "clash.zip", {"c/train/good/a.png": small, "c/train/good/a.png/b.png": small}),
        "cmyk": folder / "print.jpg",
        "evil": folder / "evil.safetensors",
    }


@pytest.fixture(scope="module")
def chromium() -> str:
    pytest.importorskip("playwright.sync_api", reason="playwright (python) is not installed")
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.skip("no chromium executable on PATH (Debian package `chromium`)")
    if not DEMO_CHECKPOINT.exists():
        pytest.skip("the demo checkpoint is missing")
    return path


@pytest.fixture(scope="module")
def hosted_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    home = tmp_path_factory.mktemp("hosted_home")
    log_path = tmp_path_factory.mktemp("hosted_log") / "streamlit.log"
    saved = os.environ.get("CAINNFLOW_HOSTED")
    os.environ["CAINNFLOW_HOSTED"] = "1"
    try:
        with log_path.open("wb") as log, streamlit_server(home, log, 90) as url:
            yield url, home
    except ServerError as exc:
        pytest.fail(f"{exc}; see {log_path}")
    finally:
        if saved is None:
            os.environ.pop("CAINNFLOW_HOSTED", None)
        else:
            os.environ["CAINNFLOW_HOSTED"] = saved


def _server_pid(port: str) -> int:
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"streamlit" in b" ".join(argv) and port.encode() in argv:
            return int(entry.name)
    pytest.skip("cannot find the server process in /proc")


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class PeakRss:
    """Samples a process's resident size every 20 ms; ``peak`` is the largest seen."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak, self._stop = pid, _rss_mib(pid), threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss_mib(self.pid))
            time.sleep(0.02)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def wait_idle(page, timeout_ms: int = STEP_TIMEOUT_MS) -> None:
    page.wait_for_timeout(700)
    page.wait_for_selector('[data-testid="stStatusWidget"]', state="detached", timeout=timeout_ms)
    page.wait_for_timeout(300)


def check(page, name: str, home: Path) -> str:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
    assert page.locator(EXCEPTION).count() == 0, f"{name}: {page.locator(EXCEPTION).first.inner_text()}"
    text = page.inner_text("body")
    for leak in ("Traceback", str(home), "site-packages"):
        assert leak not in text, f"{name}: the page shows {leak!r}"
    return text


def open_page(page, title: str) -> None:
    page.locator('[data-testid="stSidebarNav"]').get_by_text(title, exact=True).click()
    page.get_by_role("heading", name=title).first.wait_for(timeout=STEP_TIMEOUT_MS)
    wait_idle(page)


def test_hostile_uploads_on_a_hosted_server(
    chromium: str, hosted_server: tuple[str, Path], hostile_files: dict[str, Path]
) -> None:
    from playwright.sync_api import sync_playwright

    url, home = hosted_server
    pid = _server_pid(url.rsplit(":", 1)[1])
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1600})
            page.goto(url)
            wait_idle(page)
            page.get_by_role("button", name="Load the ready demo checkpoint").first.click()
            wait_idle(page)

            # 1. A checkpoint whose dataset is a server folder: one line, the model kept.
            # The checkpoint uploader comes with the training controls, after PyTorch imports
            # (on a quiet moment): on a loaded machine that can take longer than a click.
            uploader = page.locator('[data-testid="stFileUploader"]', has_text="Upload a checkpoint")
            uploader.wait_for(timeout=STEP_TIMEOUT_MS)
            uploader.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files(
                str(hostile_files["evil"])
            )
            wait_idle(page)
            text = check(page, "01_checkpoint_dataset_etc", home)
            assert "info.dataset.category must be a folder name" in text and "current model was kept" in text

            # 7. A zip with a file and a folder of the same name: one line.
            page.get_by_text("Upload images", exact=True).click()
            wait_idle(page)
            uploader = page.locator('[data-testid="stFileUploader"]', has_text="Images or a zip")
            uploader.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files(
                str(hostile_files["clash"])
            )
            wait_idle(page)
            page.get_by_role("button", name="Use the uploaded images").click()
            wait_idle(page)
            assert "a file and a folder both named" in check(page, "07_zip_clash", home)

            # 3. Compare models: no server path.
            open_page(page, "Compare models")
            check(page, "03_compare", home)

            # 4. Inspect → Batch: 8 × 62 MP in a 15 kB zip; then 88 MP bombs.
            open_page(page, "Inspect")
            page.get_by_role("tab", name="Batch", exact=False).click()
            page.wait_for_timeout(500)
            time.sleep(1.0)
            idle = _rss_mib(pid)
            with PeakRss(pid) as rss:
                page.locator('[data-testid="stFileUploaderDropzoneInput"]').last.set_input_files(
                    str(hostile_files["huge"])
                )
                wait_idle(page)
                page.get_by_role("button", name="Score 8 image(s)").click()
                wait_idle(page, SCORE_TIMEOUT_MS)
            assert "8** image(s) scored" in page.inner_text("body") or "8 image(s) scored" in page.inner_text(
                "body"
            )
            check(page, "04_batch_8x62MP", home)
            assert rss.peak - idle < MAX_ABOVE_IDLE_MIB, (
                f"the server went {rss.peak - idle:.0f} MiB above idle"
            )
            page.reload()
            wait_idle(page)
            page.get_by_role("tab", name="Batch", exact=False).click()
            page.wait_for_timeout(500)
            page.locator('[data-testid="stFileUploaderDropzoneInput"]').last.set_input_files(
                str(hostile_files["bomb"])
            )
            wait_idle(page)
            assert "more than this app accepts" in check(page, "04_batch_bombs", home)

            # 6. A CMYK JPEG wider than 1024 px: scored, no traceback, also on the next rerun.
            page.get_by_role("tab", name="Images").click()
            page.wait_for_timeout(500)
            page.locator('[data-testid="stFileUploaderDropzoneInput"]').first.set_input_files(
                str(hostile_files["cmyk"])
            )
            wait_idle(page)
            assert "print.jpg" in check(page, "06_cmyk", home)
            page.reload()
            wait_idle(page)
            check(page, "06_cmyk_after_reload", home)
        finally:
            browser.close()
