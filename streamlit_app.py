"""CAINNFlow inspection app — a router; every page lives in ``pages/``."""

from pathlib import Path

from app import keys, warmup

warmup.start()  # first of all: generates the demo data in another process

import streamlit as st  # noqa: E402

from app import quickstart, state  # noqa: E402 - no PyTorch in these (see app.quickstart)
from app.sidebar import render_sidebar  # noqa: E402

ROOT = Path(__file__).resolve().parent
HOME_URL_PATH = "home"  # never in an address: the first page is served at "/"
# (file, title, icon, what it needs: "none" renders before PyTorch is imported, "quick" also
# takes the demo model's ONNX twin, "torch" waits for PyTorch and the PyTorch model; app.quickstart)
PAGES = (
    ("pages/train.py", "Train / load", ":material/model_training:", "none"),
    ("pages/inspect.py", "Inspect", ":material/image_search:", "quick"),
    ("pages/evaluate.py", "Evaluate & threshold", ":material/monitoring:", "torch"),
    ("pages/compare.py", "Compare models", ":material/compare:", "torch"),
    ("pages/latent.py", "Latent space", ":material/scatter_plot:", "torch"),
    ("pages/learn.py", "Learn", ":material/school:", "torch"),
)

st.set_page_config(page_title="CAINNFlow", page_icon=":material/blur_on:", layout="wide")
# An upload box's size-and-types line wraps in a narrow column instead of being cut ("… TIF, WE…").
st.html("<style>[data-testid='stFileUploaderDropzoneInstructions'] span {white-space: normal}</style>")

# Pages still being written (their file is missing) are left out instead of breaking the app.
present = [row for row in PAGES if (ROOT / row[0]).exists()]
# The first page is served at "/"; a hidden twin answers its own address (/train), which would
# otherwise be "Page not found" (the default page's name is reserved, so it gets another one).
pages = [
    st.Page(path, title=title, icon=icon, default=i == 0, url_path=HOME_URL_PATH if i == 0 else None)
    for i, (path, title, icon, _) in enumerate(present)
]
by_name = {Path(row[0]).stem: page for page, row in zip(pages, present, strict=True)}  # "train": Train / load
home_alias = st.Page(
    present[0][0], title=present[0][1], url_path=Path(present[0][0]).stem, visibility="hidden"
)
needs = {page.url_path: row[3] for page, row in zip(pages, present, strict=True)}


def requested_page(current: st.Page) -> st.Page | None:
    """The page to open instead of ``current``: the first page for its hidden twin, or the page a
    bookmark asked for before the router ran (``?page=``, :func:`app.state.require_router`)."""
    if current is home_alias:
        return pages[0]
    wanted = st.query_params.get(keys.OPEN_PAGE)
    if wanted is None:
        return None
    return by_name.get(wanted, pages[0])


with quickstart.page_run():  # PyTorch imports in the background while no page is rendering
    navigation = st.navigation([*pages, home_alias])  # first, so the page list shows at once
    target = requested_page(navigation)
    if target is not None:
        query = {k: v for k, v in st.query_params.to_dict().items() if k != keys.OPEN_PAGE}
        st.switch_page(target, query_params=query)  # keeps ?s=token
    quickstart.start()
    state.init_state()  # this session's token, and what a reload restores
    st.session_state[keys.ROUTED] = True  # pages opened without the router hand over to it
    state.resolve_pending_data(wait=False)  # demo data generated since the demo model was loaded
    need = needs.get(navigation.url_path, "torch")
    if need == "torch":
        quickstart.require_torch()
    # The demo model's ONNX twin serves Inspect only while PyTorch loads: once PyTorch is there every
    # page, Inspect too, has the PyTorch model (and the sidebar no longer says "ONNX Runtime").
    # Only the pages that need PyTorch wait for it.
    state.upgrade_quick_model(wait=need == "torch")
    render_sidebar()
    navigation.run()
