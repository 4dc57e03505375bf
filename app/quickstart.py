"""The first seconds of a fresh server: heatmaps before PyTorch has finished importing.

Importing PyTorch, timm and the library takes 3–6 s on 2 cores, longer than a visitor should
wait for a first heatmap. So the router calls :func:`start` on every run, which imports them
in a background thread, and until :func:`torch_ready`:

* the Train / load page shows a quick-start panel (:mod:`app.train_quick`: load the ready
  demo model) and fills in its training controls as soon as PyTorch is there;
* the ready demo model is served by its ONNX export shipped in ``assets/`` on ONNX Runtime
  (which imports in a fraction of a second) as a :class:`cainnflow.runtime.ExportedDetector`:
  the same model, the same maps and scores (to float precision), the same
  :class:`cainnflow.scorer.Scorer` interface, enough for Inspect and the sidebar;
* every other page waits for PyTorch (:func:`require_torch`), and the quick model is then
  swapped for the same model on PyTorch (:func:`app.state.upgrade_quick_model`).

The import holds the interpreter lock most of the time, so it would slow every page the
server renders meanwhile. It therefore begins when the demo data has been generated and no
page has been rendering for :data:`QUIET_SECONDS` (:func:`page_run`), or at once when a page
needs PyTorch (:func:`wait_for_torch`). Inspect's own modules and the ONNX Runtime session are
loaded first, right away: they are small, and the first heatmap needs them.

Nothing here imports PyTorch.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import sys
import threading
import time
from collections.abc import Iterator

import numpy as np
import streamlit as st

from cainnflow.errors import CainnflowError
from cainnflow.runtime import ExportedDetector, load_export
from cainnflow.scorer import Scorer

from . import loaders, warmup

__all__ = [
    "HEAVY_MODULES",
    "LIGHT_MODULES",
    "demo_model",
    "is_quick",
    "page_run",
    "quick_demo_detector",
    "require_torch",
    "start",
    "torch_ready",
    "wait_for_torch",
]

#: What the background thread imports first, at once: Inspect's view (pandas, matplotlib).
LIGHT_MODULES: tuple[str, ...] = ("app.inspect_view",)
#: What it imports next, at a quiet moment: the library's PyTorch half and the views on it.
HEAVY_MODULES: tuple[str, ...] = (
    "cainnflow.detector",
    "app.train_data",
    "app.train_settings",
    "app.train_job",
    "app.train_model",
    "app.evaluation_view",
    "app.compare_view",
    "app.latent_view",
    "app.learn_view",
    "app.export_view",
)

QUIET_SECONDS = 1.0
_WAIT_STEP_S = 0.1

_lock = threading.Lock()
_ready = threading.Event()
_now = threading.Event()  # a page waits for PyTorch: import without waiting for a quiet moment
_thread: threading.Thread | None = None
_last_run = time.monotonic()  # when the last page run ended
_active_runs = 0


def _quiet() -> bool:
    with _lock:
        idle = _active_runs == 0 and time.monotonic() - _last_run >= QUIET_SECONDS
    return idle and not warmup.generating()


@contextlib.contextmanager
def page_run() -> Iterator[None]:
    """Wraps a page run in the router: the PyTorch import waits until no page is rendering."""
    global _active_runs, _last_run
    with _lock:
        _active_runs += 1
    try:
        yield
    finally:
        with _lock:
            _active_runs -= 1
            _last_run = time.monotonic()


def _preload() -> None:
    """The background thread: Inspect's modules and the demo export at once, PyTorch when quiet."""
    with contextlib.suppress(Exception):  # whatever fails here is done again, visibly, on use
        for name in LIGHT_MODULES:
            importlib.import_module(name)
        _demo_export()
    _import_heavy(wait_for_quiet=True)


def _import_heavy(wait_for_quiet: bool = False) -> None:
    while wait_for_quiet and not _now.is_set() and not _quiet():
        _now.wait(_WAIT_STEP_S)
    try:
        # A failure is not kept: the page that needs the module imports it again and shows why.
        with contextlib.suppress(Exception):
            for name in HEAVY_MODULES:
                importlib.import_module(name)
    finally:
        _ready.set()


def start(*, now: bool = False) -> None:
    """Schedules the import of PyTorch and the heavy views (the router calls it on every run).

    Returns at once. The import runs once per process, in a background thread, at the next
    quiet moment (``now``: at once). When PyTorch is already imported (the app run inside a
    test process) the rest is imported here and now: it is quick then, and the pages render
    the same way every time.
    """
    global _thread
    with _lock:
        if now:
            _now.set()
        if _thread is not None or _ready.is_set():
            return
        if "torch" in sys.modules:
            _import_heavy()
            return
        _thread = threading.Thread(target=_preload, name="cainnflow-preload", daemon=True)
        _thread.start()


def torch_ready() -> bool:
    """Whether PyTorch and the heavy views are imported (or their import failed: then pages raise)."""
    return _ready.is_set()


def wait_for_torch(timeout: float | None = None) -> bool:
    """Blocks until the background import is done; False on timeout. Starts it now if needed."""
    start(now=True)
    return _ready.wait(timeout)


def require_torch() -> None:
    """For pages that need PyTorch: waits for the import with a spinner (first visit only)."""
    if not torch_ready():
        with st.spinner("Loading PyTorch (once, after the server started)…"):
            wait_for_torch()


# --------------------------------------------------------------------------- the demo model on ONNX Runtime


_export_lock = threading.Lock()


def _demo_export() -> ExportedDetector | None:
    with _export_lock:  # one load, whoever asks first (the preload thread or a page)
        return _load_demo_export()


@functools.cache
def _load_demo_export() -> ExportedDetector | None:
    """The shipped demo export on ONNX Runtime, shared by all sessions (None: unavailable).

    Loaded once per process (by the preload thread, usually before anyone asks) and run once
    on a blank image, so the first real request does not pay for the engine's warm-up.
    """
    if not (loaders.DEMO_EXPORT / "export.json").is_file():
        return None
    try:
        exported = load_export(loaders.DEMO_EXPORT)
        size = exported.image_size
        exported.score_batch(np.zeros((1, 3, size, size), np.float32))
    except CainnflowError:  # no onnxruntime, or a damaged export: the PyTorch model will do
        return None
    return exported


def quick_demo_detector() -> ExportedDetector | None:
    """The ready demo model on ONNX Runtime for one session: its own threshold, the shared engine.

    None when the export is unavailable.
    """
    exported = _demo_export()
    return None if exported is None else exported.copy()


def is_quick(detector: object) -> bool:
    """Whether ``detector`` is the demo model's export (upgraded to PyTorch when a page needs it)."""
    return isinstance(detector, ExportedDetector)


def demo_model(device: str) -> Scorer | None:
    """The ready demo model: on PyTorch when it is imported, else on ONNX Runtime if shipped.

    Returns None when the demo checkpoint is missing.

    Raises:
        CainnflowError: the checkpoint cannot be loaded.
    """
    if not torch_ready():
        quick = quick_demo_detector()
        if quick is not None:
            return quick
        wait_for_torch()
    return loaders.load_demo_detector(device)
