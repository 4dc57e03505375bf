"""What the first page view starts in the background so the first heatmap comes sooner.

Imports neither torch nor streamlit: the router calls :func:`start` before it imports the
rest of the app (PyTorch takes seconds to import), so generating the demo category the
ready demo checkpoint was trained on overlaps with that import and with the first render.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from cainnflow.demo_data import make_demo_dataset

__all__ = ["HOME_ENV", "app_home", "demo_category_root", "start"]

HOME_ENV = "CAINNFLOW_HOME"
DEMO_CATEGORY = "carpet_weave"  # the category of assets/demo_carpet_weave.safetensors

_lock = threading.Lock()
_threads: dict[tuple[str, str], threading.Thread] = {}
_errors: dict[tuple[str, str], BaseException] = {}


def app_home() -> Path:
    """Folder for generated data and sessions (``$CAINNFLOW_HOME``, else ~/.cache/cainnflow)."""
    home = Path(os.environ.get(HOME_ENV) or Path.home() / ".cache" / "cainnflow")
    home.mkdir(parents=True, exist_ok=True)
    return home


def _generate(root: Path, category: str, key: tuple[str, str]) -> None:
    try:
        make_demo_dataset(root, categories=[category])
    except BaseException as exc:  # re-raised in the caller's thread by demo_category_root
        _errors[key] = exc


def _thread(category: str) -> threading.Thread:
    root = app_home() / "demo"
    key = (str(root), category)
    with _lock:
        thread = _threads.get(key)
        if thread is None or (not thread.is_alive() and key in _errors):
            _errors.pop(key, None)
            thread = threading.Thread(
                target=_generate, args=(root, category, key), name=f"cainnflow-demo-{category}", daemon=True
            )
            _threads[key] = thread
            thread.start()
    return thread


def start(category: str = DEMO_CATEGORY) -> None:
    """Starts generating a demo category in the background (once per process and home)."""
    _thread(category)


def demo_category_root(category: str) -> Path:
    """The demo root with ``category`` generated; waits for (or starts) its generation."""
    thread = _thread(category)
    thread.join()
    root = app_home() / "demo"
    error = _errors.get((str(root), category))
    if error is not None:
        raise error
    return root
