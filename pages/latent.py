"""Latent space: what the flow makes of an image's features, and inverse generation (paper fig. 11)."""

import streamlit as st

from app import latent_view as view
from app import state

st.title("Latent space")
st.caption(
    "The flow maps each scale's backbone features to a latent z of the same shape, trained so that "
    "z ~ N(0, I) for normal images. Anomalous positions land far from the origin; the anomaly map is "
    "built from each position's negative log-likelihood ½‖z‖²/C on every scale."
)
entry = state.require_model()
item = view.pick_image("cf_latent_image")
if item is None:
    st.stop()
analysis = view.analyse(entry, item)
if analysis is None:
    st.stop()

per_scale, inverse, sampling = st.tabs(["Latents per scale", "Inverse generation", "Sampling z ~ N(0, T²I)"])
with per_scale:
    view.per_scale_panel(entry, analysis)
with inverse:
    st.markdown(
        "Disturb z at chosen places, run the flow **backwards** (it is exactly invertible) and forward the "
        "generated features again: the anomaly appears where the noise went in. Clearest on a **good** "
        "image (pick one above): the image score rises only when the new anomaly outscores the old maximum."
    )
    view.inverse_panel(entry, analysis)
with sampling:
    view.sampling_panel(entry, analysis)
