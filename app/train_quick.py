"""Train / load before PyTorch is imported: the ready demo model now, the rest when it is there.

Nothing here imports PyTorch (the quick start of a fresh server, :mod:`app.quickstart`).
"""

from __future__ import annotations

import streamlit as st

from . import loaders, model_actions, quickstart, state

__all__ = ["loading_panel"]

POLL_SECONDS = 1.0


@st.fragment(run_every=POLL_SECONDS)
def _rerun_when_ready() -> None:
    if quickstart.torch_ready():
        st.rerun(scope="app")


PAGE_COLUMNS = (1.05, 1.0)
"""Train / load's two columns (data and settings | train and load): the right one stays wide enough
for its buttons at a 1000 px window with the sidebar open."""
PAGE_GAP = "small"


def loading_panel() -> None:
    """The quick start: load the ready demo model; reruns the page in full once PyTorch is there.

    Ends the page run (``st.stop``).
    """
    left, right = st.columns(PAGE_COLUMNS, gap=PAGE_GAP)
    with left:
        st.info(
            "Loading PyTorch for training (a few seconds after the server starts). The data and "
            "training controls appear here when it is ready; the ready demo model works already.",
            icon=":material/hourglass_top:",
        )
        _rerun_when_ready()
    with right:
        st.subheader("Load a model")
        st.button(
            "Load the ready demo checkpoint",
            icon=":material/bolt:",
            on_click=model_actions.load_demo,
            help=f"A small model trained on the demo category {loaders.DEMO_CHECKPOINT_CATEGORY}; "
            "sets that data too.",
        )
        model_actions.show_notice()
        if state.current_model() is not None:
            st.page_link(
                "pages/inspect.py", label="Inspect images with this model", icon=":material/image_search:"
            )
    st.stop()
