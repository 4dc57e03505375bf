"""CAINNFlow inspection app — a router; every page lives in ``pages/``."""

from pathlib import Path

import streamlit as st

from app import warmup  # no torch: starts generating the demo data while the rest imports

ROOT = Path(__file__).resolve().parent
PAGES = (  # (file, title, icon)
    ("pages/train.py", "Train / load", ":material/model_training:"),
    ("pages/inspect.py", "Inspect", ":material/image_search:"),
    ("pages/evaluate.py", "Evaluate & threshold", ":material/monitoring:"),
    ("pages/compare.py", "Compare models", ":material/compare:"),
    ("pages/latent.py", "Latent space", ":material/scatter_plot:"),
    ("pages/learn.py", "Learn", ":material/school:"),
)

st.set_page_config(page_title="CAINNFlow", page_icon=":material/blur_on:", layout="wide")

# Pages still being written (their file is missing) are left out instead of breaking the app.
pages = [
    st.Page(path, title=title, icon=icon, default=i == 0)
    for i, (path, title, icon) in enumerate(PAGES)
    if (ROOT / path).exists()
]
navigation = st.navigation(pages)  # first, so the page list shows at once
warmup.start()
with st.spinner("Starting CAINNFlow (loading PyTorch, first visit only)…"):
    from app.sidebar import render_sidebar  # imports torch: seconds on the first run only

render_sidebar()
navigation.run()
