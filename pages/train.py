"""Train / load: pick the data, train a flow in the background, save and load checkpoints."""

import streamlit as st

from app import state

state.require_router()  # opened by its own address before the router ran: hand over

from app import quickstart, train_quick  # noqa: E402

st.title("Train / load")
st.caption(
    "Train a CAINNFlow detector on normal images (the backbone stays frozen; only the flows learn), "
    "or load one. Quick start: **Load the ready demo checkpoint** below, then open **Inspect**."
)
if not quickstart.torch_ready():
    train_quick.loading_panel()  # the quick start now, the training controls once PyTorch is imported

from app import train_data, train_job, train_model, train_settings  # noqa: E402 - imports PyTorch

left, right = st.columns(train_quick.PAGE_COLUMNS, gap=train_quick.PAGE_GAP)
with left:
    train_data.data_section()
    model_config, optim_config, random_weights = train_settings.settings_section()
with right:
    train_job.train_section(model_config, optim_config, random_weights)
    st.divider()
    train_model.load_section()
st.divider()
train_model.model_section()  # full width: its table, downloads and export need the room
