"""The sidebar: the current model and data, shown on every page."""

from __future__ import annotations

import streamlit as st

from . import hosting, keys, quickstart, state, warmup
from .loaders import detected_device
from .threshold import few_validation_images

POLL_SECONDS = 1.0  # while demo data is generated or PyTorch loads, the sidebar looks again this often


def render_sidebar() -> None:
    """The sidebar; the router has initialised this session's state (``state.init_state``) first."""
    state.adopt_finished_training()
    with st.sidebar:
        restored = st.session_state.pop(keys.RESTORED, None)
        if restored:
            st.toast(restored, icon=":material/history:")
        st.markdown("### Current model")
        entry = state.current_model()
        if entry is None:
            st.caption("No model yet — train one or load the demo checkpoint on **Train / load**.")
        else:
            det = entry.detector
            cfg = det.config
            st.markdown(
                f"**{cfg.variant}** flow, {cfg.steps} step(s)/scale  \n"
                f"Backbone `{cfg.backbone}`  \n"
                f"Image size {cfg.image_size} px  \n"
                f"{entry.origin}"
            )
            if det.threshold is not None:
                n_val = few_validation_images(det)
                few = "" if n_val is None else f" · :orange[from only {n_val} validation image(s)]"
                st.caption(f"Threshold {det.threshold:.4g} · device {det.device}{few}")
        if _settled():
            _status()
        else:
            _status_while_loading()
        job = state.get(keys.TRAIN_JOB)
        if job is not None:
            snap = job.snapshot()
            if snap.running and snap.progress is not None:
                st.progress(snap.progress.fraction, text=f"Training: {snap.progress.phase}")
        st.caption(
            "Your models and uploads are kept for this browser session; bookmark this page's address to "
            "come back to them."
            + (" Hosted mode: server folders are limited." if hosting.is_hosted() else "")
        )


def _settled() -> bool:
    """Nothing the sidebar reports is still on its way: the demo data is written, PyTorch imported."""
    pending = state.pending_data()
    return quickstart.torch_ready() and (pending is None or not warmup.generating(pending.category))


def _status() -> None:
    """The current data and the device."""
    state.resolve_pending_data(wait=False)  # demo data finished since the router looked
    data = state.current_data()
    st.markdown("### Data")
    pending = state.pending_data()
    if pending is not None:
        st.caption(f"{pending.describe()} — being generated…")
    elif data is None:
        st.caption("No dataset chosen.")
    else:
        d = data.data
        st.markdown(
            f"{data.ref.describe()}  \n{len(d.train)} train · {len(d.test)} test"
            + ("" if d.has_masks or not d.test else "  \n_no masks: image-level only_")
        )
    if state.data_mismatch():
        st.warning("The model was trained on other data.", icon=":material/warning:")
    st.markdown("### Device")
    if quickstart.torch_ready():
        st.caption(f"Detected: {detected_device()}")
    else:
        st.caption("Detecting… (PyTorch is loading)")


@st.fragment(run_every=POLL_SECONDS)
def _status_while_loading() -> None:
    """:func:`_status` while something is on its way; once it has arrived, the whole app runs again,
    so the page and this sidebar show it (and this fragment stops polling): no "being generated…"
    or "PyTorch is loading" beside finished results."""
    if _settled():
        st.rerun(scope="app")
    _status()
