"""What the first page view starts in the background so the first heatmap comes sooner.

Imports neither torch nor streamlit: the router calls :func:`start` before it imports the
rest of the app (PyTorch takes seconds to import), so generating the demo category the
ready demo checkpoint was trained on (in its own process) overlaps with that import and
with the first render.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

from cainnflow.demo_data import make_demo_dataset

__all__ = ["HOME_ENV", "app_home", "demo_category_root", "start"]

HOME_ENV = "CAINNFLOW_HOME"
DEMO_CATEGORY = "carpet_weave"  # the category of assets/demo_carpet_weave.safetensors

_lock = threading.Lock()
_processes: dict[tuple[str, str], subprocess.Popen] = {}
_GENERATE = "import sys; from cainnflow.demo_data import make_demo_dataset as m; m(sys.argv[1], categories=[sys.argv[2]])"


def app_home() -> Path:
    """Folder for generated data and sessions (``$CAINNFLOW_HOME``, else ~/.cache/cainnflow)."""
    home = Path(os.environ.get(HOME_ENV) or Path.home() / ".cache" / "cainnflow")
    home.mkdir(parents=True, exist_ok=True)
    return home


def start(category: str = DEMO_CATEGORY) -> None:
    """Starts generating a demo category in a separate process (once per process and home).

    A process, not a thread: it runs beside the app's PyTorch import instead of competing
    with it for the interpreter lock.
    """
    root = app_home() / "demo"
    key = (str(root), category)
    with _lock:
        if key in _processes:
            return
        _processes[key] = subprocess.Popen(
            [sys.executable, "-c", _GENERATE, str(root), category],
            cwd=Path(__file__).resolve().parents[1],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )


def demo_category_root(category: str) -> Path:
    """The demo root with ``category`` generated; waits for a started generation, then makes sure.

    ``make_demo_dataset`` is idempotent (a complete category is skipped), so the final call
    only checks the marker when the background process finished, and generates otherwise.
    """
    root = app_home() / "demo"
    with _lock:
        process = _processes.get((str(root), category))
    if process is not None:
        process.wait()
    with _lock:
        return make_demo_dataset(root, categories=[category])
