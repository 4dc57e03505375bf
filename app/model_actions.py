"""Actions that change the current model or data, shared by Train / load and its quick-start panel.

They run as widget callbacks (before the page renders, so the sidebar and every panel show
the new state at once) and report through a one-time notice. No PyTorch import here: the
ready demo model comes from :func:`app.quickstart.demo_model`.
"""

from __future__ import annotations

import streamlit as st

from cainnflow.errors import CainnflowError

from . import keys, loaders, quickstart, state, warmup

__all__ = ["load_demo", "notify", "open_model_data", "show_notice"]


def notify(kind: str, text: str) -> None:
    """A message shown once, at the next render of the Train / load page."""
    st.session_state[keys.NOTICE] = (kind, text)


def show_notice() -> None:
    notice = st.session_state.pop(keys.NOTICE, None)
    if notice:
        kind, text = notice
        {"error": st.error, "warning": st.warning}.get(kind, st.success)(text)


def open_model_data(data_ref: state.DataRef) -> None:
    """Makes the data a model was trained on the current data (and the data widgets show it)."""
    try:
        state.open_data_ref(data_ref)
    except CainnflowError as exc:
        notify("error", f"Could not open the model's data: {exc}")
        return
    notify("success", f"Opened the model's data **{data_ref.describe()}**.")


def load_demo() -> None:
    """Button callback: the ready demo model plus the demo category it was trained on."""
    try:
        detector = quickstart.demo_model(state.get(keys.DEVICE_CHOICE))
    except CainnflowError as exc:
        notify("error", f"Could not load the demo checkpoint: {exc}")
        return
    if detector is None:
        notify("error", "The demo checkpoint is missing: run `python -m app.make_demo_checkpoint`.")
        return
    category = loaders.DEMO_CHECKPOINT_CATEGORY
    state.set_model(detector, origin=f"demo checkpoint ({category})", demo=True)
    ref = state.DataRef("demo", "", category)
    if warmup.generating(category):  # on a fresh server: no need to wait here, Inspect waits
        state.set_pending_data(ref)
        notify("success", f"Loaded the demo checkpoint; its demo data **{category}** is being generated.")
        return
    open_model_data(ref)
    notify("success", f"Loaded the demo checkpoint and the demo data **{category}**.")
