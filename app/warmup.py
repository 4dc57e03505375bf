"""What the first page view starts in the background so the first heatmap comes sooner.

Imports neither torch nor streamlit (nor, until it is needed, the generator itself): the
router calls :func:`start` before anything else, so the demo category the ready demo model
was trained on is generated (in its own process, at a lower CPU priority, test split first)
while the first page renders.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

__all__ = ["HOME_ENV", "app_home", "demo_category_root", "generating", "start"]

HOME_ENV = "CAINNFLOW_HOME"
DEMO_CATEGORY = "carpet_weave"  # the category of assets/demo_carpet_weave.safetensors

_lock = threading.Lock()
_processes: dict[tuple[str, str], subprocess.Popen] = {}
# At a lower CPU priority: the server and the visitor's browser come first on a small machine.
_GENERATE = (
    "import os, sys\n"
    "if hasattr(os, 'nice'): os.nice(10)\n"
    "from cainnflow.demo_data import make_demo_dataset as m\n"
    "m(sys.argv[1], categories=[sys.argv[2]])"
)


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


def generating(category: str | None = None) -> bool:
    """Whether a demo category (``category``; None: any) is still being generated in the background."""
    with _lock:
        return any(
            process.poll() is None
            for (_, name), process in _processes.items()
            if category is None or name == category
        )


def demo_category_root(category: str) -> Path:
    """The demo root with ``category`` generated; waits for a started generation, then makes sure.

    ``make_demo_dataset`` is idempotent (a complete category is skipped), so the final call
    only checks the marker when the background process finished, and generates otherwise.
    """
    from cainnflow.demo_data import make_demo_dataset

    root = app_home() / "demo"
    with _lock:
        process = _processes.get((str(root), category))
    if process is not None:
        process.wait()
    with _lock:
        return make_demo_dataset(root, categories=[category])
