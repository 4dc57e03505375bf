"""Fixtures shared by the AppTest modules: an app home per module and the pages/ workaround.

Import them into a test module (``from tests.app_support import ...``); they are autouse there.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.runtime.pages_manager import PagesManager

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "streamlit_app.py")


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
