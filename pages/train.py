"""Train / load: pick the data, train a flow in the background, save and load checkpoints."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from app import display, loaders, state
from app.jobs import TrainingJob
from cainnflow.data import CategoryData
from cainnflow.demo_data import DEMO_CATEGORIES
from cainnflow.detector import Detector
from cainnflow.device import resolve_device
from cainnflow.errors import CainnflowError
from cainnflow.model import CAINNFlowConfig
from cainnflow.registry import BACKBONES, DEFAULT_BACKBONE, OFFLINE_BACKBONES
from cainnflow.subnet import VARIANTS
from cainnflow.training import TrainConfig
from cainnflow.weights import backbone_weights_available

POLL_SECONDS = 1.0
SOURCES = {"demo": "Synthetic demo", "mvtec": "MVTec-layout folder", "custom": "Custom folders"}
CNN_IMAGE_SIZES = (64, 96, 128, 160, 192, 224, 256, 320, 384, 448, 512)
BATCH_SIZES = (4, 8, 16, 32, 64)
DEVICES = ("auto", "cpu", "cuda", "mps")
CHECKPOINT_SUFFIX = ".safetensors"
KEEP = "session"  # widget values survive page switches

# Widget / page keys (this page only).
K_SOURCE = "train_source"
K_DEMO_CATEGORY = "train_demo_category"
K_UPLOAD = "train_ckpt_upload"
K_LAST_UPLOAD = "train_last_upload_id"
K_LOAD_MESSAGE = "train_load_message"  # (kind, text) of the last load action
K_SAVE_MESSAGE = "train_save_message"  # (model version, kind, text) of the last save


# --------------------------------------------------------------------------- actions


def _message(kind: str, text: str) -> None:
    st.session_state[K_LOAD_MESSAGE] = (kind, text)


def _use_data(source: str, root: str, category: str) -> None:
    """Makes a category the current data unless it already is."""
    current = state.current_data()
    if current is not None and (current.source, current.root, current.data.name) == (source, root, category):
        return
    try:
        data = loaders.load_category(source, root, category)
    except CainnflowError as exc:
        st.error(str(exc))
        return
    state.set_data(data, source, root)
    st.rerun()  # so the sidebar shows the new data


def _load_checkpoint(source: bytes | Path, name: str, origin: str) -> None:
    """Loads a checkpoint as the current model; on failure the current model is kept."""
    try:
        detector = Detector.load(source, device=state.get(state.DEVICE_CHOICE))
    except CainnflowError as exc:
        _message("error", f"Could not load {name}: {str(exc).rstrip('.')}. The current model was kept.")
        return
    state.set_model(detector, origin=origin)
    _message("success", f"Loaded {name}.")


def _load_demo_checkpoint() -> None:
    """Button callback: the ready demo model plus the demo category it was trained on."""
    try:
        detector = loaders.load_demo_detector(state.get(state.DEVICE_CHOICE))
    except CainnflowError as exc:
        _message("error", f"Could not load the demo checkpoint: {exc}")
        return
    if detector is None:
        _message("error", "The demo checkpoint is missing: run `python -m app.make_demo_checkpoint`.")
        return
    category = loaders.DEMO_CHECKPOINT_CATEGORY
    state.set_model(detector, origin=f"demo checkpoint ({category})")
    st.session_state[K_SOURCE] = "demo"
    st.session_state[K_DEMO_CATEGORY] = category
    root = str(loaders.demo_root())
    state.set_data(loaders.load_category("demo", root, category), "demo", root)
    _message("success", f"Loaded the demo checkpoint and the demo data **{category}**.")


def _save_checkpoint(entry: state.ModelEntry, name_key: str, default_name: str) -> None:
    """Button callback (runs before the page, so the saved file is listed at once)."""
    typed = str(st.session_state.get(name_key) or "").strip()
    target = loaders.checkpoint_dir() / (Path(typed or default_name).stem + CHECKPOINT_SUFFIX)
    try:
        entry.detector.save(target)
    except (CainnflowError, OSError) as exc:
        st.session_state[K_SAVE_MESSAGE] = (entry.version, "error", f"Could not save {target.name}: {exc}")
    else:
        st.session_state[K_SAVE_MESSAGE] = (entry.version, "success", f"Saved {target}")


def _start_training(
    data: state.DataEntry, config: CAINNFlowConfig, train_config: TrainConfig, random: bool
) -> None:
    job = TrainingJob(
        data.data,
        config,
        train_config,
        weights="random" if random else "auto",
        device=state.get(state.DEVICE_CHOICE),
        label=f"{data.source}/{data.data.name}",
    )
    st.session_state[state.TRAIN_JOB] = job.start()


def _adopt_cancelled(job: TrainingJob) -> None:
    detector = job.take_detector(include_cancelled=True)
    if detector is not None:
        state.set_model(detector, origin=f"trained on {job.label} (cancelled early)")


# --------------------------------------------------------------------------- sections


def data_section() -> None:
    st.subheader("1 · Data")
    source = st.radio(
        "Dataset source",
        list(SOURCES),
        format_func=SOURCES.get,
        horizontal=True,
        key=K_SOURCE,
        persist_state=KEEP,
    )
    if source == "demo":
        category = st.selectbox(
            "Demo category",
            DEMO_CATEGORIES,
            key=K_DEMO_CATEGORY,
            persist_state=KEEP,
            help="Synthetic textures and objects with subtle defects and exact masks, generated on first use.",
        )
        _use_data("demo", str(loaders.demo_root()), category)
    elif source == "mvtec":
        root = st.text_input(
            "Dataset root",
            key="train_mvtec_root",
            persist_state=KEEP,
            placeholder="/data/mvtec_ad",
            help="A folder holding <category>/train/good, <category>/test/<type>, <category>/ground_truth/<type>.",
        ).strip()
        if not root:
            st.caption("Type the folder that holds the categories.")
            return
        try:
            categories = loaders.mvtec_categories(root)
        except CainnflowError as exc:
            st.error(str(exc))
            return
        if not categories:
            st.error(
                f"No categories in {root}: expected sub-folders with train/good/ images (MVTec AD layout)."
            )
            return
        category = st.selectbox("Category", categories, key="train_mvtec_category", persist_state=KEEP)
        _use_data("mvtec", root, category)
    else:
        good = st.text_input("Good images for training (folder)", key="train_custom_good", persist_state=KEEP)
        c1, c2, c3 = st.columns(3)
        test_good = c1.text_input(
            "Good test images (optional)", key="train_custom_test_good", persist_state=KEEP
        )
        defect = c2.text_input(
            "Defect test images (optional)",
            key="train_custom_defect",
            persist_state=KEEP,
            help="Images directly inside get the type 'defect'; sub-folders give their name as the type.",
        )
        masks = c3.text_input(
            "Masks (optional)",
            key="train_custom_masks",
            persist_state=KEEP,
            help="Found by <stem>_mask.* or <stem>.*",
        )
        if st.button("Use these folders", disabled=not good.strip()):
            try:
                data = loaders.load_custom_category(
                    good.strip(), test_good.strip(), defect.strip(), masks.strip()
                )
            except CainnflowError as exc:
                st.error(str(exc))
                return
            state.set_data(data, "custom", good.strip())
            st.rerun()  # so the sidebar shows the new data
    current = state.current_data()
    if current is not None:
        d: CategoryData = current.data
        masks_note = (
            "with masks" if d.has_masks else ("image-level only (no masks)" if d.test else "no test split")
        )
        st.caption(
            f"Current data: **{current.source} / {d.name}** — {len(d.train)} train images, "
            f"{len(d.test)} test ({d.n_anomalous} anomalous, {masks_note})."
        )


def _backbone_label(name: str) -> str:
    if name in OFFLINE_BACKBONES:
        return f"{name} · offline"
    return f"{name} · {'cached' if backbone_weights_available(name) else 'downloads weights'}"


def settings_section() -> tuple[CAINNFlowConfig | None, TrainConfig, bool]:
    st.subheader("2 · Model and training")
    c1, c2 = st.columns(2)
    names = list(BACKBONES)
    backbone = c1.selectbox(
        "Backbone",
        names,
        index=names.index(DEFAULT_BACKBONE),
        format_func=_backbone_label,
        key="train_backbone",
        persist_state=KEEP,
    )
    spec = BACKBONES[backbone]
    c1.caption(spec.description)
    variant = c2.selectbox(
        "Coupling subnet variant",
        VARIANTS,
        index=VARIANTS.index("CAC"),
        key="train_variant",
        persist_state=KEEP,
        help="C = convolution block, A = CBAM attention block (paper: CAC is best).",
    )
    c1, c2, c3, c4 = st.columns(4)
    steps = c1.number_input(
        "Steps per scale", 1, 8, CAINNFlowConfig.steps, key="train_steps", persist_state=KEEP
    )
    epochs = c2.number_input("Epochs", 1, 500, TrainConfig.epochs, key="train_epochs", persist_state=KEEP)
    if spec.kind == "cnn":
        size = c3.select_slider(
            "Image size",
            CNN_IMAGE_SIZES,
            value=spec.default_image_size,
            key=f"train_size_{backbone}",
            persist_state=KEEP,
        )
    else:
        size = spec.default_image_size
        c3.markdown(f"Image size  \n**{size} px** (fixed for this ViT)")
    batch = c4.select_slider("Batch size", BATCH_SIZES, value=16, key="train_batch", persist_state=KEEP)
    with st.expander("Device and test-only options", icon=":material/tune:"):
        c1, c2 = st.columns(2)
        device = c1.selectbox("Device", DEVICES, key=state.DEVICE_CHOICE, persist_state=KEEP)
        c1.caption(f"Detected: {loaders.detected_device()}")
        if device != "auto":
            try:
                resolve_device(device)
            except CainnflowError as exc:
                c1.warning(str(exc))
        random = c2.checkbox(
            "Random backbone weights (for tests only)",
            key="train_random_weights",
            persist_state=KEEP,
            help="Skips ImageNet weights. The anomaly maps are then meaningless; only for testing the app.",
        )
    if random:
        st.warning(
            "Random backbone weights: the detector will not find real defects. Use only to test the app."
        )
    elif not backbone_weights_available(backbone):
        st.info(
            f"ImageNet weights for {backbone} are not on this machine; training will try to download them."
        )
    try:
        config = CAINNFlowConfig(backbone=backbone, image_size=int(size), variant=variant, steps=int(steps))
    except ValueError as exc:
        st.error(str(exc))
        config = None
    return config, TrainConfig(epochs=int(epochs), batch_size=int(batch)), random


def _progress_panel(polling: bool) -> None:
    """Progress of this session's training job; polled every second while it runs."""
    job: TrainingJob | None = state.get(state.TRAIN_JOB)
    if job is None:
        st.caption("No training started in this session yet.")
        return
    snap = job.snapshot()
    progress = snap.progress
    if snap.running:
        if progress is None:
            st.progress(0.0, text=f"Preparing {snap.label}: building the backbone…")
        elif progress.phase == "features":
            st.progress(
                progress.fraction,
                text=f"Caching backbone features: batch {progress.step}/{progress.steps} · "
                f"ETA {display.format_seconds(progress.eta_s)}",
            )
        else:
            val = "" if progress.val_loss is None else f" · val {progress.val_loss:.4f}"
            loss = "" if progress.loss is None else f" · loss {progress.loss:.4f}"
            st.progress(
                progress.fraction,
                text=f"Training flows: epoch {progress.epoch}/{progress.epochs}, step {progress.step}/"
                f"{progress.steps}{loss}{val} · ETA {display.format_seconds(progress.eta_s)}",
            )
        st.button("Cancel training", icon=":material/stop_circle:", on_click=job.cancel)
    elif snap.state == "done":
        took = display.format_seconds((snap.finished or snap.started) - snap.started)
        entry = state.current_model()
        current = entry is not None and entry.detector is job.detector
        st.success(
            f"Training on {snap.label} finished in {took}"
            + ("; it is the current model." if current else "."),
            icon=":material/check:",
        )
    elif snap.state == "failed":
        st.error(f"Training failed: {snap.error}")
    elif snap.state == "cancelled":
        st.warning(snap.error or "Training was cancelled; the best epoch so far was kept.")
        if job.detector is not None and not job.taken:
            st.button("Use the partly trained model", on_click=_adopt_cancelled, args=(job,))
    if snap.epoch_losses:
        st.plotly_chart(display.loss_figure(snap.epoch_losses), key="train_loss_chart")
    if polling and not snap.running:
        st.rerun()  # the whole app: adopt the model, update the sidebar, stop polling


def train_section(config: CAINNFlowConfig | None, train_config: TrainConfig, random: bool) -> None:
    st.subheader("3 · Train")
    job: TrainingJob | None = state.get(state.TRAIN_JOB)
    running = job is not None and job.snapshot().running
    data = state.current_data()
    if (
        st.button(
            "Train",
            type="primary",
            icon=":material/play_arrow:",
            disabled=running or data is None or config is None,
            help="Trains in the background: you can open other pages and come back.",
        )
        and data is not None
        and config is not None
    ):
        _start_training(data, config, train_config, random)
        st.rerun()
    if data is None:
        st.caption("Choose a dataset first.")
    st.fragment(run_every=POLL_SECONDS if running else None)(_progress_panel)(polling=running)


def model_section() -> None:
    st.subheader("Current model")
    entry = state.current_model()
    if entry is None:
        st.caption("No model yet: train one above or load a checkpoint.")
        return
    detector = entry.detector
    st.markdown(f"**{entry.origin}**")
    rows = display.model_summary_rows(detector)
    st.table(pd.DataFrame({"value": [v for _, v in rows]}, index=[k for k, _ in rows]))
    category = str(detector.info.get("category") or "model")
    name = f"cainnflow_{category}_{detector.config.variant}{CHECKPOINT_SUFFIX}"
    c1, c2 = st.columns(2)
    c1.download_button(
        "Download checkpoint",
        data=detector.to_bytes,
        file_name=name,
        mime="application/octet-stream",
        icon=":material/download:",
        on_click="ignore",
    )
    name_key = f"train_save_name_{entry.version}"
    with c2.popover("Save to checkpoints folder", icon=":material/save:"):
        st.text_input("File name", value=name, key=name_key)
        st.button("Save", key="train_save", on_click=_save_checkpoint, args=(entry, name_key, name))
    message = st.session_state.get(K_SAVE_MESSAGE)
    if message is not None and message[0] == entry.version:
        _, kind, text = message
        (st.error if kind == "error" else st.success)(text)
    st.page_link("pages/inspect.py", label="Inspect images with this model", icon=":material/image_search:")


def load_section() -> None:
    st.subheader("Load a model")
    st.button(
        "Load the ready demo checkpoint",
        icon=":material/bolt:",
        on_click=_load_demo_checkpoint,
        help=f"A small model trained on the demo category {loaders.DEMO_CHECKPOINT_CATEGORY}; sets that data too.",
    )
    folder = loaders.checkpoint_dir()
    saved = sorted(folder.glob(f"*{CHECKPOINT_SUFFIX}"))
    if saved:
        c1, c2 = st.columns([3, 1], vertical_alignment="bottom")
        chosen = c1.selectbox(
            "Saved checkpoints", saved, format_func=lambda p: p.name, key="train_saved_ckpt"
        )
        if c2.button("Load", key="train_load_saved"):
            _load_checkpoint(chosen, chosen.name, f"loaded {chosen.name}")
    else:
        st.caption(f"No checkpoints in {folder} yet.")
    upload = st.file_uploader("Upload a checkpoint", type=["safetensors"], key=K_UPLOAD)
    if upload is not None and st.session_state.get(K_LAST_UPLOAD) != upload.file_id:
        st.session_state[K_LAST_UPLOAD] = upload.file_id
        _load_checkpoint(upload.getvalue(), upload.name, f"uploaded {upload.name}")
    message = st.session_state.get(K_LOAD_MESSAGE)
    if message is not None:
        kind, text = message
        (st.error if kind == "error" else st.success)(text)


# --------------------------------------------------------------------------- page

st.title("Train / load")
st.caption(
    "Train a CAINNFlow detector on normal images (the backbone stays frozen; only the flows learn), "
    "or load one. Quick start: **Load the ready demo checkpoint** below, then open **Inspect**."
)
left, right = st.columns([3, 2], gap="large")
with left:
    data_section()
    model_config, optim_config, random_weights = settings_section()
    st.divider()
    model_section()
with right:
    train_section(model_config, optim_config, random_weights)
    st.divider()
    load_section()
