"""Time from ``streamlit run streamlit_app.py`` to the first heatmap, in headless Chromium.

    python benchmarks/app_first_heatmap.py                 # fresh app home, as on a new machine
    python benchmarks/app_first_heatmap.py --chromium /usr/bin/chromium --shot first.png

What a new user does: start the app, press **Load the ready demo checkpoint** on the first
page, open **Inspect**, see the heatmaps of the preselected test images. The app home
(``CAINNFLOW_HOME``) is a fresh temporary folder, so generating the demo data is included.
Prints the seconds at each milestone, measured from the moment the server process starts
(Chromium is started before that: a visitor's browser is already open), and whether the
heatmaps came from the demo model's ONNX twin (PyTorch still importing) or from PyTorch.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.streamlit_server import ServerError, streamlit_server  # noqa: E402

TIMEOUT_MS = 180_000


def wait_idle(page) -> None:
    page.wait_for_timeout(300)
    page.wait_for_selector('[data-testid="stStatusWidget"]', state="detached", timeout=TIMEOUT_MS)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--chromium", default=shutil.which("chromium") or shutil.which("chromium-browser"))
    parser.add_argument("--shot", type=Path, default=None, help="save a screenshot of the first heatmap")
    args = parser.parse_args()
    if not args.chromium:
        raise SystemExit("no chromium executable found (Debian package `chromium`); pass --chromium PATH")
    from playwright.sync_api import expect, sync_playwright

    home = Path(tempfile.mkdtemp(prefix="cainnflow_home_"))
    marks: list[tuple[str, float]] = []
    engine = "?"
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=args.chromium, args=["--headless", "--no-sandbox"])
            page = browser.new_page(viewport={"width": 1400, "height": 1400})
            t0 = time.perf_counter()
            with streamlit_server(home, subprocess.DEVNULL) as url:
                marks.append(("server answers", time.perf_counter() - t0))
                page.goto(url, timeout=TIMEOUT_MS)
                load = page.get_by_role("button", name="Load the ready demo checkpoint")
                load.wait_for(timeout=TIMEOUT_MS)
                marks.append(("first page shows the load button", time.perf_counter() - t0))
                wait_idle(page)
                load = page.get_by_role("button", name="Load the ready demo checkpoint")
                load.click()
                expect(page.get_by_text("Loaded the demo checkpoint", exact=False)).to_be_visible(
                    timeout=TIMEOUT_MS
                )
                marks.append(("demo checkpoint and demo data loaded", time.perf_counter() - t0))
                page.locator('[data-testid="stSidebarNav"]').get_by_text("Inspect", exact=True).click()
                expect(page.get_by_text("image(s) scored", exact=False)).to_be_visible(timeout=TIMEOUT_MS)
                expect(page.locator('[data-testid="stImage"] img').first).to_be_visible(timeout=TIMEOUT_MS)
                marks.append(("first heatmap shown", time.perf_counter() - t0))
                sidebar = page.locator('[data-testid="stSidebar"]').inner_text()
                engine = "ONNX Runtime (PyTorch still importing)" if "ONNX Runtime" in sidebar else "PyTorch"
                if args.shot:
                    wait_idle(page)
                    page.screenshot(path=str(args.shot), full_page=True)
                page.locator('[data-testid="stSidebarNav"]').get_by_text("Train / load", exact=True).click()
                expect(page.get_by_role("button", name="Train", exact=True)).to_be_visible(timeout=TIMEOUT_MS)
                marks.append(("Train / load shows its training controls (PyTorch ready)", time.perf_counter() - t0))
            browser.close()
    except ServerError as exc:
        raise SystemExit(str(exc)) from exc
    finally:
        shutil.rmtree(home, ignore_errors=True)
    for name, seconds in marks:
        print(f"{seconds:7.1f} s  {name}")
    print(f"heatmaps computed on: {engine}")


if __name__ == "__main__":
    main()
