"""CAINNFlow inspection app — a router; every page lives in ``pages/``."""

import streamlit as st

from app.sidebar import render_sidebar

st.set_page_config(page_title="CAINNFlow", page_icon=":material/blur_on:", layout="wide")

pages = [
    st.Page("pages/train.py", title="Train / load", icon=":material/model_training:", default=True),
    st.Page("pages/inspect.py", title="Inspect", icon=":material/image_search:"),
    st.Page("pages/evaluate.py", title="Evaluate & threshold", icon=":material/monitoring:"),
    st.Page("pages/latent.py", title="Latent space", icon=":material/scatter_plot:"),
    st.Page("pages/learn.py", title="Learn", icon=":material/school:"),
]
navigation = st.navigation(pages)
render_sidebar()
navigation.run()
