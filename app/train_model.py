"""Train / load, the model: the current model (summary, download, copy, export) and loading one."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from cainnflow.detector import Detector
from cainnflow.errors import CainnflowError

from . import display, hosting, keys, loaders, session_store, state
from .export_view import render_export
from .model_actions import load_demo, notify, open_model_data, show_notice

__all__ = ["load_section", "model_data_offer", "model_section"]

CLI_HINT = (
    "Large data or a GPU elsewhere? Train with the command line, then upload the checkpoint here:  \n"
    "`python -m cainnflow train --data-root DATA --category NAME --out model.safetensors`"
)


def _save_copy(entry: state.ModelEntry) -> None:
    """Button callback: a copy under a chosen name in this session's folder (never overwrites)."""
    typed = str(st.session_state.get(keys.K_SAVE_NAME) or "").strip()
    target = loaders.unique_checkpoint_path(session_store.session_dir(), typed or "model")
    try:
        entry.detector.save(target)
        hosting.keep_within_quota(session_store.session_dir(), target)
    except (CainnflowError, OSError) as exc:
        notify("error", f"Could not save {target.name}: {exc}")
    else:
        notify("success", f"Saved as {target.name} in this session's checkpoints.")


def model_data_offer(entry: state.ModelEntry) -> None:
    """Offers to open the data the model was trained on when it is not the current data."""
    ref = state.model_data_ref(entry.detector)
    current = state.current_data()
    if ref is None or (current is not None and current.ref == ref):
        return
    st.button(
        f"Open the model's data: {ref.describe()}",
        icon=":material/dataset:",
        on_click=open_model_data,
        args=(ref,),
        key="train_open_model_data",
    )


def model_section() -> None:
    st.subheader("Current model")
    entry = state.current_model()
    if entry is None:
        st.caption("No model yet: train one above or load a checkpoint.")
        return
    detector = entry.detector
    st.markdown(f"**{entry.origin}**" + (f" · saved as `{entry.path.name}`" if entry.path else ""))
    model_data_offer(entry)
    mismatch = state.data_mismatch()
    if mismatch:
        st.warning(mismatch, icon=":material/warning:")
    name = (
        entry.path.name
        if entry.path
        else f"cainnflow_{state.model_category(detector) or 'model'}.safetensors"
    )
    summary, actions = st.columns(2, gap="medium")
    rows = display.model_summary_rows(detector)
    summary.table(pd.DataFrame({"value": [v for _, v in rows]}, index=[k for k, _ in rows]))
    with actions:  # one under the other, full width: no label is cut in a narrow window
        st.download_button(
            "Download checkpoint",
            data=detector.to_bytes,
            file_name=name,
            mime="application/octet-stream",
            icon=":material/download:",
            on_click="ignore",
            width="stretch",
        )
        with st.popover("Save a copy as…", icon=":material/save:", width="stretch"):
            st.text_input("File name", value=Path(name).stem, key=keys.K_SAVE_NAME)
            st.button("Save", key="train_save", on_click=_save_copy, args=(entry,))
        st.page_link(
            "pages/inspect.py", label="Inspect images with this model", icon=":material/image_search:"
        )
        render_export(detector)


def _load(source: bytes | Path, name: str, origin: str, *, path: Path | None = None) -> None:
    """Loads a checkpoint as the current model; on failure one line and the current model is kept."""
    try:
        detector = Detector.load(source, device=state.get(keys.DEVICE_CHOICE))
    except CainnflowError as exc:
        notify("error", f"Could not load {name}: {str(exc).rstrip('.')}. The current model was kept.")
        return
    except Exception as exc:  # a bug in the checks must still not show a traceback
        notify("error", f"Could not load {name}: {type(exc).__name__}. The current model was kept.")
        return
    state.set_model(detector, origin=origin, path=path)
    ref = state.model_data_ref(detector)
    hint = f" It was trained on {ref.describe()}." if ref else ""
    notify("success", f"Loaded {name}.{hint}")


def _load_saved() -> None:
    chosen = st.session_state.get(keys.K_SAVED_CKPT)
    if isinstance(chosen, str) and (session_store.session_dir() / chosen).is_file():
        path = session_store.session_dir() / chosen
        _load(path, chosen, f"loaded {chosen}", path=path)


def _load_upload() -> None:
    upload = st.session_state.get(keys.K_CKPT_UPLOAD)
    if upload is None or st.session_state.get(keys.K_LAST_CKPT_UPLOAD) == upload.file_id:
        return
    st.session_state[keys.K_LAST_CKPT_UPLOAD] = upload.file_id
    _load(upload.getvalue(), upload.name, f"uploaded {upload.name}")


def load_section() -> None:
    st.subheader("Load a model")
    st.button(
        "Load the ready demo checkpoint",
        icon=":material/bolt:",
        on_click=load_demo,
        help=f"A small model trained on the demo category {loaders.DEMO_CHECKPOINT_CATEGORY}; sets that data too.",
    )
    saved = sorted(p.name for p in session_store.session_dir().glob(f"*{loaders.CHECKPOINT_SUFFIX}"))
    if saved:
        st.selectbox(
            "This session's checkpoints",
            saved,
            key=keys.K_SAVED_CKPT,
            format_func=lambda name: name.removesuffix(loaders.CHECKPOINT_SUFFIX),  # all are; saves width
        )
        st.button("Load", key="train_load_saved", on_click=_load_saved)
    else:
        st.caption("Models trained or loaded in this session are saved here automatically.")
    st.file_uploader(
        "Upload a checkpoint (.safetensors)",
        type=["safetensors"],
        key=keys.K_CKPT_UPLOAD,
        on_change=_load_upload,
    )
    st.caption(CLI_HINT)
    show_notice()
