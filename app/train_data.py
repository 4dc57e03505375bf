"""Train / load, step 1: the data (demo, uploads, an MVTec-layout folder or custom folders)."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from cainnflow.data import CategoryData
from cainnflow.demo_data import DEMO_CATEGORIES
from cainnflow.errors import CainnflowError

from . import hosting, keys, loaders, session_store, state, train_uploads
from .model_actions import notify

__all__ = ["data_section"]

SOURCES = {
    "demo": "Synthetic demo",
    "upload": "Upload images",
    "mvtec": "MVTec-layout folder",
    "custom": "Custom folders",
}


def _use_data(data_ref: state.DataRef) -> None:
    """Makes a dataset the current data unless it already is (then reruns so every panel shows it)."""
    current = state.current_data()
    if current is not None and current.ref == data_ref:
        return
    try:
        data = loaders.open_data(data_ref, session_store.session_dir())
    except CainnflowError as exc:
        st.error(str(exc))
        return
    state.set_data(data, data_ref)
    st.rerun()


def _use_ref(source: str, root: str, category: str, *folders: str) -> None:
    """:func:`_use_data` of the folders given, or one line when a name cannot be recorded."""
    try:
        data_ref = state.DataRef(source, root, category, *folders)
    except ValueError as exc:  # a name with control characters, say: never recorded
        st.error(f"That data cannot be used: {exc}.")
        return
    _use_data(data_ref)


def _typed_folder(label: str, key: str, **kwargs) -> str:
    return st.text_input(label, key=key, persist_state=keys.KEEP, **kwargs).strip()


def _demo_chosen() -> None:
    """Callback: a demo category picked (or the demo source chosen) becomes the current data."""
    if st.session_state.get(keys.K_SOURCE, "demo") != "demo":
        return
    category = st.session_state.get(keys.K_DEMO_CATEGORY) or DEMO_CATEGORIES[0]
    data_ref = state.DataRef("demo", "", category)
    current = state.current_data()
    if current is not None and current.ref == data_ref:
        return
    try:
        state.set_data(loaders.open_data(data_ref, session_store.session_dir()), data_ref)
    except CainnflowError as exc:
        notify("error", str(exc))


def data_section() -> None:
    st.subheader("1 · Data")
    source = st.radio(
        "Dataset source",
        list(SOURCES),
        format_func=SOURCES.get,
        horizontal=True,
        key=keys.K_SOURCE,
        persist_state=keys.KEEP,
        on_change=_demo_chosen,
    )
    home = loaders.app_home()
    if source == "demo":
        category = st.selectbox(
            "Demo category",
            DEMO_CATEGORIES,
            key=keys.K_DEMO_CATEGORY,
            persist_state=keys.KEEP,
            on_change=_demo_chosen,
            help="Synthetic textures and objects with subtle defects and exact masks, generated on first use.",
        )
        if state.current_data() is None:
            _use_data(state.DataRef("demo", "", category))
    elif source == "upload":
        if (data_ref := train_uploads.upload_data_panel()) is not None:
            _use_data(data_ref)
    elif source == "mvtec":
        root = _typed_folder(
            "Dataset root (on the server)",
            keys.K_MVTEC_ROOT,
            help="A folder holding <category>/train/good, <category>/test/<type>, <category>/ground_truth/<type>.",
        )
        if hosting.allowed_roots(home) is not None:
            st.caption("Server folders are limited to the data folders this app is allowed to read.")
        if not root:
            st.caption("Type the folder that holds the categories.")
        else:
            try:
                categories = loaders.mvtec_categories(str(hosting.allowed_path(root, home)))
            except CainnflowError as exc:
                st.error(str(exc))
                categories = None
            if categories == []:
                st.error(
                    "No categories there: expected sub-folders with train/good/ images (MVTec AD layout)."
                )
            elif categories:
                category = st.selectbox(
                    "Category", categories, key=keys.K_MVTEC_CATEGORY, persist_state=keys.KEEP
                )
                if st.button("Use this category", key="train_use_mvtec"):
                    _use_ref("mvtec", str(hosting.allowed_path(root, home)), category)
    else:
        good = _typed_folder("Good images for training (server folder)", keys.K_CUSTOM_GOOD)
        # One under the other: folder paths are long, a narrow column would clip them.
        test_good = _typed_folder("Good test images (optional)", keys.K_CUSTOM_TEST_GOOD)
        defect = _typed_folder(
            "Defect test images (optional)",
            keys.K_CUSTOM_DEFECT,
            help="Images directly inside get the type 'defect'; sub-folders give their name as the type.",
        )
        masks = _typed_folder(
            "Masks (optional)", keys.K_CUSTOM_MASKS, help="Found by <stem>_mask.* or <stem>.*"
        )
        if st.button("Use these folders", disabled=not good):
            try:
                resolved = [
                    str(hosting.allowed_path(p, home)) if p else "" for p in (good, test_good, defect, masks)
                ]
            except CainnflowError as exc:
                st.error(str(exc))
            else:
                _use_ref("custom", resolved[0], Path(resolved[0]).name or "custom", *resolved[1:])
    current = state.current_data()
    if current is not None:
        d: CategoryData = current.data
        masks_note = (
            "with masks" if d.has_masks else ("image-level only (no masks)" if d.test else "no test split")
        )
        st.caption(
            f"Current data: **{current.ref.describe()}** — {len(d.train)} train images, "
            f"{len(d.test)} test ({d.n_anomalous} anomalous, {masks_note})."
        )
