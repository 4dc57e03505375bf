"""Evaluate & threshold: test-split metrics and a live threshold explorer."""

import streamlit as st

from app import state

state.require_router()  # opened by its own address before the router ran: hand over

from app import display  # noqa: E402
from app import evaluation_view as view  # noqa: E402

st.title("Evaluate & threshold")
st.caption(
    "Scores every test image once; the threshold explorer below then works on the stored scores and maps, "
    "so moving the slider is instant."
)
entry = state.require_model()
data = view.require_test_data()
display.mismatch_warning()
result = view.evaluation_for(entry, data)
if result is None:
    st.stop()

st.subheader("Metrics")
view.render_metrics(result)
view.render_curves(result)
st.subheader("Per defect type")
view.render_per_defect(result)
st.subheader("Threshold")
view.threshold_explorer(entry, data, result)
st.subheader("Compare with another checkpoint")
view.compare_panel(entry, data, result)
