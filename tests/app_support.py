"""Shared by the AppTest modules: an app home per module, the pages/ workaround, and a corpus
of hostile checkpoints.

Import the fixtures into a test module (``from tests.app_support import ...``); they are
autouse there.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from streamlit.runtime.pages_manager import PagesManager
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "streamlit_app.py")
APP_TIMEOUT_S = 120


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One app home per module, so the demo data is generated once."""
    return tmp_path_factory.mktemp("cainnflow_home")


@pytest.fixture(autouse=True)
def app_home(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAINNFLOW_HOME", str(home))


@pytest.fixture(autouse=True)
def navigation_not_pages_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    """Work around AppTest treating ``pages/`` as a legacy (v1) pages folder.

    AppTest resets ``PagesManager.uses_pages_directory`` before every run and it is then set
    again because ``pages/`` exists, so every run after the first executes the page file alone,
    without the ``st.navigation`` entrypoint (no sidebar). The real server clears the flag for
    good at the first ``st.navigation`` call; this does the same for the tests.
    """
    original = PagesManager.__init__

    def init(self: PagesManager, *args: object, **kwargs: object) -> None:
        original(self, *args, **kwargs)
        PagesManager.uses_pages_directory = False

    monkeypatch.setattr(PagesManager, "__init__", init)


# --------------------------------------------------------------------------- driving the app


def open_app(timeout_s: float = APP_TIMEOUT_S, **query: str) -> AppTest:
    """The app's first page, run once (``query``: URL query parameters, e.g. ``s=token``)."""
    at = AppTest.from_file(APP, default_timeout=timeout_s)
    for key, value in query.items():
        at.query_params[key] = value
    at.run()
    assert not at.exception, at.exception
    return at


def button(at: AppTest, label_start: str):
    """The first button whose label starts with ``label_start``."""
    matches = [b for b in at.button if b.label.startswith(label_start)]
    assert matches, f"no button starting with {label_start!r}: {[b.label for b in at.button]}"
    return matches[0]


def load_demo(at: AppTest) -> None:
    """Presses "Load the ready demo checkpoint"."""
    button(at, "Load the ready demo checkpoint").click().run()
    assert not at.exception, at.exception


# --------------------------------------------------------------------------- hostile checkpoints


METADATA_KEY = "cainnflow"
DEEP_LEVELS = 200


def _split(data: bytes) -> tuple[dict[str, Any], bytes]:
    (length,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8 : 8 + length]), data[8 + length :]


def _join(header: dict[str, Any], body: bytes) -> bytes:
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + body


def _with_document(data: bytes, change: Callable[[dict[str, Any]], None]) -> bytes:
    header, body = _split(data)
    document = json.loads(header["__metadata__"][METADATA_KEY])
    change(document)
    header["__metadata__"][METADATA_KEY] = json.dumps(document)  # NaN is written as NaN
    return _join(header, body)


def set_data_ref(document: dict[str, Any], dataset: Any) -> None:
    """Records ``dataset`` as a checkpoint document's data: ``record.data`` (format 3) or ``info.dataset`` (2)."""
    if document.get("format_version", 0) >= 3:
        document.setdefault("record", {})["data"] = dataset
    else:
        document.setdefault("info", {})["dataset"] = dataset


def _set(path: tuple[str, ...], value: Any) -> Callable[[dict[str, Any]], None]:
    def change(document: dict[str, Any]) -> None:
        target = document
        for key in path[:-1]:
            target = target.setdefault(key, {})
        target[path[-1]] = value

    return change


def _deep(levels: int) -> Any:
    value: Any = 0
    for _ in range(levels):
        value = [value]
    return value


def hostile_corpus(good: bytes) -> dict[str, bytes]:
    """File name → bytes of a checkpoint that must be refused with one line."""
    fields: dict[str, tuple[tuple[str, ...], Any]] = {
        "image_size_8192": (("model", "image_size"), 8192),
        "steps_10000": (("model", "steps"), 10_000),
        "sigma_1e5": (("model", "sigma"), 1e5),
        "hidden_ratio_1e5": (("model", "hidden_ratio"), 1e5),
        "reduction_0": (("model", "reduction"), 0),
        "image_size_string": (("model", "image_size"), "big"),
        "backbone_number": (("model", "backbone"), 123),
        "threshold_abc": (("threshold",), "abc"),
        "threshold_nan": (("threshold",), float("nan")),
        "stats_nan": (("stats", "image_std"), float("nan")),
        "stats_string": (("stats",), "abc"),
        "history_garbage": (("history",), {"epochs": "x"}),
        "deep_info": (("info",), _deep(DEEP_LEVELS)),
    }
    corpus = {f"{name}.safetensors": _with_document(good, _set(*spec)) for name, spec in fields.items()}
    header, body = _split(good)
    header["__metadata__"] = "not a dict"
    corpus["metadata_string.safetensors"] = _join(header, body)
    return corpus
