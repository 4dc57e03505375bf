"""Learn: how CAINNFlow works, with things that move."""

import streamlit as st

from app import state

state.require_router()  # opened by its own address before the router ran: hand over

from app import latent_view, learn_view  # noqa: E402

DEFAULT_CHANNELS = 64

st.title("Learn")
st.caption(
    "CAINNFlow = a frozen CNN backbone + per scale a 2-D normalizing flow of affine coupling blocks whose "
    "subnets are convolutions with CBAM attention. Normal features map to z ~ N(0, I); the per-position "
    "negative log-likelihood is the anomaly map and its maximum the image score."
)
toy, coupling, cbam, subnets = st.tabs(
    ["1 · A flow in 2-D", "2 · One coupling layer", "3 · CBAM attention", "4 · Subnet arrangements"]
)
with toy:
    learn_view.toy_flow_panel()
with coupling:
    learn_view.coupling_panel()
entry = state.current_model()
with cbam:
    learn_view.cbam_equations()
    if entry is None or not entry.detector.is_trained:
        st.info("Load or train a model on **Train / load** to see its attention gates for an image.")
    else:
        item = latent_view.pick_image("cf_learn_image")
        analysis = latent_view.analyse(entry, item) if item is not None else None
        if analysis is not None:
            learn_view.attention_panel(entry, analysis)
with subnets:
    channels = entry.detector.model.feature_shapes[0][0] if entry is not None else DEFAULT_CHANNELS
    learn_view.subnet_panel(channels)
