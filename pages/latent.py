"""Latent space: what the flow makes of an image's features, and inverse generation (paper fig. 11)."""

import streamlit as st

from app import state

state.require_router()  # opened by its own address before the router ran: hand over

from app import display  # noqa: E402
from app import latent_view as view  # noqa: E402

st.title("Latent space")
st.caption(
    "The flow maps each scale's backbone features to a latent z of the same shape, trained so that "
    "z ~ N(0, I) for normal images. Anomalous positions land far from the origin; the anomaly map is "
    "built from each position's ‖z‖²/C on every scale."
)
entry = state.require_model()
display.mismatch_warning()
per_scale, inverse, sampling = st.tabs(["Latents per scale", "Inverse generation", "Sampling z ~ N(0, T²I)"])
with per_scale:
    # a defective image first: its anomaly shows in z
    view.analysed_panel(entry, "cf_latent_image", view.per_scale_panel)
with inverse:
    st.markdown(
        "Disturb z at chosen places, run the flow **backwards** (it is exactly invertible) and see the "
        "generated features and their anomaly map. It starts on a **good** image, where the new anomaly is "
        "the only one."
    )
    view.analysed_panel(entry, "cf_latent_inv_image", view.inverse_panel, prefer_label=0)
with sampling:
    st.markdown(
        "Draw a latent z ~ N(0, T²I) and run the flow backwards: new feature maps the model finds normal. "
        "The image below gives the colours (its features' PCA) and a reference to compare with."
    )
    view.analysed_panel(entry, "cf_latent_sample_image", view.sampling_panel, prefer_label=0)
