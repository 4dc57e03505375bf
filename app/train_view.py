"""UI pieces of the Train / load page: data, settings, training job, current model, loading.

Every action that changes the model or the data ends in ``st.rerun()`` (or runs as a widget
callback), so the sidebar and every panel show the new state in the same render.
"""

from __future__ import annotations

import secrets
import shutil
from pathlib import Path

import pandas as pd
import streamlit as st

from cainnflow.data import CategoryData, find_images
from cainnflow.demo_data import DEMO_CATEGORIES
from cainnflow.detector import Detector
from cainnflow.device import DEVICE_CHOICES, resolve_device
from cainnflow.errors import CainnflowError, DataError
from cainnflow.model import CAINNFlowConfig
from cainnflow.registry import BACKBONES, DEFAULT_BACKBONE, OFFLINE_BACKBONES
from cainnflow.subnet import VARIANTS
from cainnflow.training import MAX_BUDGET_STEPS, MIN_BUDGET_STEPS, TrainConfig
from cainnflow.weights import backbone_weights_available

from . import display, figures, hosting, jobs, loaders, state
from .jobs import TrainingJob
from .model_actions import load_demo, notify, open_model_data, show_notice

__all__ = [
    "data_section",
    "load_section",
    "model_section",
    "settings_section",
    "train_section",
]

POLL_SECONDS = 1.0
SOURCES = {
    "demo": "Synthetic demo",
    "upload": "Upload images",
    "mvtec": "MVTec-layout folder",
    "custom": "Custom folders",
}
CNN_IMAGE_SIZES = (64, 96, 128, 160, 192, 224, 256, 320, 384, 448, 512)
BATCH_SIZES = (4, 8, 16, 32, 64)
KEEP = "session"  # widget values survive page switches
K_RAY_ADDRESS = "train_ray_address"  # a Ray cluster to train on (not offered on a hosted server)
CNN_STAGE_CHOICES = (1, 2, 3, 4)
K_AUTO = "train_auto"
K_UPLOAD_NOTE = "train_upload_note"  # what an upload left out (non-images), shown once
DATA_UPLOAD_TYPES = ("zip", *display.UPLOAD_IMAGE_TYPES)
MAX_DATA_UPLOAD_FILES = 500
UPLOAD_ID_BYTES = 9
CLI_HINT = (
    "Large data or a GPU elsewhere? Train with the command line, then upload the checkpoint here:  \n"
    "`python -m cainnflow train --data-root DATA --category NAME --out model.safetensors`"
)


# --------------------------------------------------------------------------- data


def _use_data(data_ref: state.DataRef) -> None:
    """Makes a dataset the current data unless it already is (then reruns so every panel shows it)."""
    current = state.current_data()
    if current is not None and current.ref == data_ref:
        return
    try:
        data = loaders.open_data(data_ref, state.session_dir())
    except CainnflowError as exc:
        st.error(str(exc))
        return
    state.set_data(data, data_ref)
    st.rerun()


def _typed_folder(label: str, key: str, **kwargs) -> str:
    return st.text_input(label, key=key, persist_state=KEEP, **kwargs).strip()


def _upload_data_panel() -> None:
    st.caption(
        "Good images as files or a **.zip**; a zip in the MVTec layout (`train/good`, optional "
        "`test/<type>` and `ground_truth/<type>/<name>_mask.png`) also gives a test split with masks."
    )
    files = st.file_uploader(
        "Images or a zip",
        type=list(DATA_UPLOAD_TYPES),
        accept_multiple_files=True,
        key=state.K_DATA_UPLOAD,
    )
    name = st.text_input("Name of this dataset", value="my_data", key="train_upload_name", max_chars=40)
    note = st.session_state.pop(K_UPLOAD_NOTE, None)
    if note:
        st.caption(note)
    if st.button("Use the uploaded images", disabled=not files, icon=":material/upload:"):
        skipped: list[str] = []
        refused: CainnflowError | None = None
        with st.status("Unpacking and checking the upload…", expanded=False) as status:
            try:
                data_ref = store_upload(files or [], name, skipped=skipped)
            except CainnflowError as exc:
                refused = exc
                status.update(label="Upload refused", state="error")
            else:
                status.update(label="Upload ready", state="complete")
        if refused is not None:
            st.error(f"Upload refused: {refused}")  # outside the (collapsed) status box
            return
        if skipped:
            st.session_state[K_UPLOAD_NOTE] = (
                f"Left out {len(skipped)} file(s) of the zip that are not images: "
                + ", ".join(skipped[:5])
                + (" …" if len(skipped) > 5 else "")
            )
        _use_data(data_ref)


def store_upload(files: list, name: str, *, skipped: list[str] | None = None) -> state.DataRef:
    """Writes uploaded images / zips into this session's folder as ``<id>/<name>/train/good`` (+ test).

    Raises:
        DataError: too many files, a zip over its limits, or no images at all.
    """
    if len(files) > MAX_DATA_UPLOAD_FILES:
        raise DataError(f"{len(files)} files; at most {MAX_DATA_UPLOAD_FILES} at once (or one zip)")
    category = loaders.safe_name(name, "my_data")
    upload_id = secrets.token_urlsafe(UPLOAD_ID_BYTES)
    session = state.session_dir()
    folder = session / "uploads" / upload_id
    target = folder / category
    try:
        for file in files:
            if file.name.lower().endswith(".zip"):
                staging = folder / "_zip"
                hosting.extract_zip(
                    file.getvalue(), staging, room=hosting.session_room(session), skipped=skipped
                )
                _place_zip(staging, target)
                shutil.rmtree(staging, ignore_errors=True)
            else:
                data = hosting.decode_upload(file.getvalue(), file.name)
                hosting.require_room(session, len(data))
                good = target / "train" / "good"
                good.mkdir(parents=True, exist_ok=True)
                (good / f"{loaders.safe_name(Path(file.name).stem, 'image')}.png").write_bytes(data)
        loaders.load_upload_folder(folder, category)  # refuses data without good images now
    except CainnflowError:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    except OSError as exc:  # a full disk, a name the file system refuses: one line, nothing kept
        shutil.rmtree(folder, ignore_errors=True)
        raise DataError(f"the upload could not be stored ({exc.strerror or type(exc).__name__})") from exc
    return state.DataRef("upload", upload_id, category)


def _place_zip(staging: Path, target: Path) -> None:
    """Moves an extracted zip into the MVTec layout at ``target`` (one category)."""
    roots = [p.parent for p in staging.rglob("train") if (p / "good").is_dir()]
    if len(roots) > 1:
        raise DataError("the zip holds several categories (train/good folders); upload one at a time")
    if roots:
        for part in ("train", "test", "ground_truth"):
            if (roots[0] / part).is_dir():
                shutil.copytree(roots[0] / part, target / part, dirs_exist_ok=True)
        return
    images = find_images(staging) + [
        p for sub in staging.rglob("*") if sub.is_dir() for p in find_images(sub)
    ]
    if not images:
        raise DataError("the zip holds no images")
    good = target / "train" / "good"
    good.mkdir(parents=True, exist_ok=True)
    for i, path in enumerate(sorted(set(images))):
        shutil.move(str(path), good / f"{i:05d}_{path.name}")


def _demo_chosen() -> None:
    """Callback: a demo category picked (or the demo source chosen) becomes the current data."""
    if st.session_state.get(state.K_SOURCE, "demo") != "demo":
        return
    category = st.session_state.get(state.K_DEMO_CATEGORY) or DEMO_CATEGORIES[0]
    data_ref = state.DataRef("demo", "", category)
    current = state.current_data()
    if current is not None and current.ref == data_ref:
        return
    try:
        state.set_data(loaders.open_data(data_ref, state.session_dir()), data_ref)
    except CainnflowError as exc:
        notify("error", str(exc))


def data_section() -> None:
    st.subheader("1 · Data")
    source = st.radio(
        "Dataset source",
        list(SOURCES),
        format_func=SOURCES.get,
        horizontal=True,
        key=state.K_SOURCE,
        persist_state=KEEP,
        on_change=_demo_chosen,
    )
    home = loaders.app_home()
    if source == "demo":
        category = st.selectbox(
            "Demo category",
            DEMO_CATEGORIES,
            key=state.K_DEMO_CATEGORY,
            persist_state=KEEP,
            on_change=_demo_chosen,
            help="Synthetic textures and objects with subtle defects and exact masks, generated on first use.",
        )
        if state.current_data() is None:
            _use_data(state.DataRef("demo", "", category))
    elif source == "upload":
        _upload_data_panel()
    elif source == "mvtec":
        root = _typed_folder(
            "Dataset root (on the server)",
            "train_mvtec_root",
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
                c1, c2 = st.columns([3, 1], vertical_alignment="bottom")
                category = c1.selectbox(
                    "Category", categories, key="train_mvtec_category", persist_state=KEEP
                )
                if c2.button("Use this category", key="train_use_mvtec"):
                    _use_data(state.DataRef("mvtec", str(hosting.allowed_path(root, home)), category))
    else:
        good = _typed_folder("Good images for training (server folder)", "train_custom_good")
        c1, c2, c3 = st.columns(3)
        with c1:
            test_good = _typed_folder("Good test images (optional)", "train_custom_test_good")
        with c2:
            defect = _typed_folder(
                "Defect test images (optional)",
                "train_custom_defect",
                help="Images directly inside get the type 'defect'; sub-folders give their name as the type.",
            )
        with c3:
            masks = _typed_folder(
                "Masks (optional)", "train_custom_masks", help="Found by <stem>_mask.* or <stem>.*"
            )
        if st.button("Use these folders", disabled=not good):
            try:
                resolved = [
                    str(hosting.allowed_path(p, home)) if p else "" for p in (good, test_good, defect, masks)
                ]
            except CainnflowError as exc:
                st.error(str(exc))
            else:
                _use_data(
                    state.DataRef("custom", resolved[0], Path(resolved[0]).name or "custom", *resolved[1:])
                )
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


# --------------------------------------------------------------------------- settings


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
    epochs = c2.number_input(
        "Epochs (empty: step budget)",
        1,
        500,
        TrainConfig.epochs,
        key="train_epochs",
        persist_state=KEEP,
        placeholder="auto",
        help=f"Empty: train up to {MIN_BUDGET_STEPS}–{MAX_BUDGET_STEPS} optimizer steps (more for more images) "
        "with early stopping on the validation loss. A number: exactly that many passes over the images.",
    )
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
    stages = None
    with st.expander("Feature stages · choose settings for me", icon=":material/auto_awesome:"):
        if spec.kind == "cnn":
            picked = st.multiselect(
                "Backbone stages (strides 4, 8, 16, 32)",
                CNN_STAGE_CHOICES,
                default=list(spec.out_indices),
                key=f"train_stages_{backbone}",
                persist_state=KEEP,
                help="Fine stages give sharp maps of local defects; the stride-32 stage sees the whole "
                "object, so a part missing or out of place reaches the score.",
            )
            stages = tuple(sorted(picked)) or None
        st.checkbox(
            "Choose stages and smoothing for me",
            key=K_AUTO,
            persist_state=KEEP,
            help="Holds out some good images, pastes synthetic defects into them (cut-paste, noise, warps, "
            "erased regions, colour blobs), tries every run of stages × smoothing and trains the best on all "
            "good images. Never looks at test images. Takes about two trainings.",
        )
    random = False
    with st.expander("Device", icon=":material/tune:"):
        device = st.selectbox("Device", DEVICE_CHOICES, key=state.DEVICE_CHOICE, persist_state=KEEP)
        st.caption(f"Detected: {loaders.detected_device()}")
        if device != "auto":
            try:
                resolve_device(device)
            except CainnflowError as exc:
                st.warning(str(exc))
        if not hosting.is_hosted():  # a public server never dials addresses its visitors type
            st.text_input(
                "Run on a Ray cluster (address, optional)",
                key=K_RAY_ADDRESS,
                persist_state=KEEP,
                placeholder="ray://head-node:10001 or auto",
                help="Trains as a Ray task there (on its GPU if it has one); progress streams back here and "
                "the model becomes this session's. Needs `pip install 'cainnflow[ray]'`.",
            )
        if hosting.dev_mode():
            random = st.checkbox(
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
        config = CAINNFlowConfig(
            backbone=backbone, image_size=int(size), variant=variant, steps=int(steps), out_indices=stages
        )
    except (ValueError, CainnflowError) as exc:
        st.error(str(exc))
        config = None
    optim = TrainConfig(epochs=None if epochs is None else int(epochs), batch_size=int(batch))
    return config, optim, random


# --------------------------------------------------------------------------- training


def _ray_address() -> str | None:
    typed = str(st.session_state.get(K_RAY_ADDRESS) or "").strip()
    return None if hosting.is_hosted() or not typed else typed


def _start_training(
    data: state.DataEntry, config: CAINNFlowConfig, train_config: TrainConfig, random: bool
) -> None:
    job = TrainingJob(
        data.data,
        config,
        train_config,
        weights="random" if random else "auto",
        device=state.get(state.DEVICE_CHOICE),
        label=data.ref.describe(),
        dataset=data.ref.to_dict(),
        save_dir=state.session_dir(),
        address=_ray_address(),
        auto=bool(st.session_state.get(K_AUTO)) and _ray_address() is None,
    )
    try:
        st.session_state[state.TRAIN_JOB] = jobs.start_job(state.session_token(), job)
    except CainnflowError as exc:
        notify("error", f"Training not started: {exc}")


def _auto_summary(auto: dict) -> None:
    """What "choose settings for me" tried and chose, on held-out good images + synthetic defects."""
    chosen = auto["chosen"]
    proposed = auto.get("proposed_threshold")
    st.info(
        f"Chose stages {', '.join(map(str, chosen['stages']))} and smoothing σ = {chosen['sigma']:g}: on "
        f"{auto.get('n_holdout', '?')} held-out good images and {auto.get('n_synthetic', '?')} synthetic "
        f"defects they gave image AUROC {chosen['image_auroc']:.3f}, pixel AUROC {chosen['pixel_auroc']:.3f}."
        + (f" Proposed threshold {proposed:.4g} (Evaluate page)." if proposed is not None else ""),
        icon=":material/auto_awesome:",
    )
    with st.expander(f"All {len(auto.get('candidates', []))} settings tried"):
        st.dataframe(
            [
                {
                    "stages": " ".join(map(str, c["stages"])),
                    "σ": c["sigma"],
                    "image AUROC": round(c["image_auroc"], 4),
                    "pixel AUROC": round(c["pixel_auroc"], 4),
                }
                for c in auto.get("candidates", [])
            ],
            hide_index=True,
        )


def _adopt_cancelled(job: TrainingJob) -> None:
    detector = job.take_detector(include_cancelled=True)
    if detector is not None:
        state.set_model(detector, origin=f"trained on {job.label} (cancelled early)")


def _progress_panel(polling: bool) -> None:
    """Progress of this session's training job; polled every second while it runs."""
    job: TrainingJob | None = state.get(state.TRAIN_JOB)
    if job is None:
        st.caption("No training started in this session yet.")
        return
    snap = job.snapshot()
    progress = snap.progress
    if snap.running:
        if snap.note:
            st.caption(f"Choosing settings: {snap.note}")
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
        current = entry is not None and job.saved_path is not None and entry.path == job.saved_path
        saved = f" Saved as {job.saved_path.name}." if job.saved_path else ""
        st.success(
            f"Training on {snap.label} finished in {took}"
            + ("; it is the current model." if current else ".")
            + saved,
            icon=":material/check:",
        )
        auto = job.auto_report or {}
        if auto.get("chosen"):
            _auto_summary(auto)
    elif snap.state == "failed":
        st.error(f"Training failed: {snap.error}")
    elif snap.state == "cancelled":
        st.warning(snap.error or "Training was cancelled; the best epoch so far was kept.")
        if job.detector is not None and not job.taken:
            st.button("Use the partly trained model", on_click=_adopt_cancelled, args=(job,))
    if snap.epoch_losses:
        st.plotly_chart(figures.loss_figure(snap.epoch_losses), key="train_loss_chart", config=figures.CONFIG)
    if polling and not snap.running:
        st.rerun()  # the whole app: adopt the model, update the sidebar, stop polling


def _estimate_caption(config: CAINNFlowConfig, train_config: TrainConfig, n_images: int) -> None:
    """The expected training time, from this server's measured speed for this configuration."""
    from cainnflow.estimate import estimate_from_timings  # PyTorch is loaded by now (step_timings)

    timings = loaders.step_timings(config.to_json(), state.get(state.DEVICE_CHOICE))
    if timings is None:
        return
    backbone_s, step_s, batch = timings
    est = estimate_from_timings(n_images, backbone_s * min(batch, n_images) / batch, step_s, int(batch), train_config)
    busy = jobs.running_jobs()
    st.caption(
        f"Expected training time here: about **{display.format_seconds(est.total_s)}** for {n_images} good images "
        f"({display.format_seconds(est.feature_s)} of features, then up to {est.steps} steps × {est.step_s:.2f} s; "
        "early stopping often ends sooner)"
        + (f". {busy} other training job(s) running on this server will slow it." if busy else ".")
    )


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
            help="Trains in the background: you can open other pages and come back. The model is saved "
            "in this session's folder when it finishes.",
        )
        and data is not None
        and config is not None
    ):
        _start_training(data, config, train_config, random)
        st.rerun()
    if data is None:
        st.caption("Choose a dataset first.")
    elif config is not None and not running:
        _estimate_caption(config, train_config, len(data.data.train))
    st.caption(f"Server: {jobs.running_jobs()} of {hosting.max_jobs()} training slot(s) in use.")
    st.fragment(run_every=POLL_SECONDS if running else None)(_progress_panel)(polling=running)


# --------------------------------------------------------------------------- current model


def _save_copy(entry: state.ModelEntry) -> None:
    """Button callback: a copy under a chosen name in this session's folder (never overwrites)."""
    typed = str(st.session_state.get(state.K_SAVE_NAME) or "").strip()
    target = loaders.unique_checkpoint_path(state.session_dir(), typed or "model")
    try:
        entry.detector.save(target)
        hosting.keep_within_quota(state.session_dir(), target)
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
    rows = display.model_summary_rows(detector)
    st.table(pd.DataFrame({"value": [v for _, v in rows]}, index=[k for k, _ in rows]))
    name = (
        entry.path.name if entry.path else f"cainnflow_{detector.info.get('category', 'model')}.safetensors"
    )
    c1, c2 = st.columns(2)
    c1.download_button(
        "Download checkpoint",
        data=detector.to_bytes,
        file_name=name,
        mime="application/octet-stream",
        icon=":material/download:",
        on_click="ignore",
    )
    with c2.popover("Save a copy as…", icon=":material/save:"):
        st.text_input("File name", value=Path(name).stem, key=state.K_SAVE_NAME)
        st.button("Save", key="train_save", on_click=_save_copy, args=(entry,))
    try:
        from .export_view import render_export  # written by the export work; optional until then
    except ImportError:
        pass
    else:
        render_export(detector)
    st.page_link("pages/inspect.py", label="Inspect images with this model", icon=":material/image_search:")


# --------------------------------------------------------------------------- loading


def _load(source: bytes | Path, name: str, origin: str, *, path: Path | None = None) -> None:
    """Loads a checkpoint as the current model; on failure one line and the current model is kept."""
    try:
        detector = Detector.load(source, device=state.get(state.DEVICE_CHOICE))
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
    chosen = st.session_state.get(state.K_SAVED_CKPT)
    if isinstance(chosen, str) and (state.session_dir() / chosen).is_file():
        path = state.session_dir() / chosen
        _load(path, chosen, f"loaded {chosen}", path=path)


def _load_upload() -> None:
    upload = st.session_state.get(state.K_CKPT_UPLOAD)
    if upload is None or st.session_state.get(state.K_LAST_CKPT_UPLOAD) == upload.file_id:
        return
    st.session_state[state.K_LAST_CKPT_UPLOAD] = upload.file_id
    _load(upload.getvalue(), upload.name, f"uploaded {upload.name}")


def load_section() -> None:
    st.subheader("Load a model")
    st.button(
        "Load the ready demo checkpoint",
        icon=":material/bolt:",
        on_click=load_demo,
        help=f"A small model trained on the demo category {loaders.DEMO_CHECKPOINT_CATEGORY}; sets that data too.",
    )
    saved = sorted(p.name for p in state.session_dir().glob(f"*{loaders.CHECKPOINT_SUFFIX}"))
    if saved:
        c1, c2 = st.columns([3, 1], vertical_alignment="bottom")
        c1.selectbox("This session's checkpoints", saved, key=state.K_SAVED_CKPT)
        c2.button("Load", key="train_load_saved", on_click=_load_saved)
    else:
        st.caption("Models trained or loaded in this session are saved here automatically.")
    st.file_uploader(
        "Upload a checkpoint (.safetensors)",
        type=["safetensors"],
        key=state.K_CKPT_UPLOAD,
        on_change=_load_upload,
    )
    st.caption(CLI_HINT)
    show_notice()
