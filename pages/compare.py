"""Compare models: a sweep's results as the paper's tables (variant × steps, category × backbone)."""

import streamlit as st

from app import state

state.require_router()  # opened by its own address before the router ran: hand over

from app import compare_view as view  # noqa: E402

st.title("Compare models")
st.caption(
    "Put this session's models side by side on one test split, or read a sweep's `results.csv` "
    "(`python -m cainnflow sweep …`, one model per combination of settings; an example ships with the app) "
    "to see which subnet variant, number of steps and backbone work best on your data."
)
view.render()
