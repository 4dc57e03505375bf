"""Inspect: score images with the current model and look at their anomaly maps, one by one or in a batch."""

import streamlit as st

from app import state

state.require_router()  # opened by its own address before the router ran: hand over

from app import camera_view, display  # noqa: E402
from app import inspect_view as view  # noqa: E402
from cainnflow.errors import CainnflowError  # noqa: E402

entry = state.require_model(torch=False)  # the demo model's ONNX twin will do
st.title("Inspect")
st.caption(
    "Score images with the current model. The heatmap is the per-pixel anomaly map from the flows' likelihood "
    "(high = unlikely for a normal image); the image score is the maximum of the scales' map (for textures, "
    "the mean of the most unlikely eighth of its coarsest scale, which judges a region against its surroundings)."
)
with st.spinner("Generating the demo data (first visit only)…", show_time=True):
    data = state.data_for_inspection()  # at once, unless the demo data is still being generated
display.mismatch_warning()
single, batch, live = st.tabs(["Images", "Batch (folder or zip → CSV)", "Camera / folder watch"])
with batch:
    view.batch_panel(entry)
with live:
    camera_view.camera_panel(entry)
    st.divider()
    camera_view.watch_panel(entry)
with single:
    inputs = view.choose_images(data)
    if not inputs:
        st.info("Upload images or pick test images to score them.")
    else:
        try:
            with st.spinner("Scoring…"):
                scored, problems = display.score_images(entry, inputs)
        except CainnflowError as exc:
            st.error(str(exc))
            scored, problems = [], []
        for problem in problems:
            st.warning(f"Skipped an image: {problem}", icon=":material/broken_image:")
        if scored:
            view.results_panel(scored, entry)
