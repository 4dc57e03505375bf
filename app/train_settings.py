"""Train / load, step 2: backbone, subnet variant, steps, image size, stages, device."""

from __future__ import annotations

import streamlit as st

from cainnflow.device import DEVICE_CHOICES, resolve_device
from cainnflow.errors import CainnflowError
from cainnflow.model import CAINNFlowConfig
from cainnflow.registry import BACKBONES, DEFAULT_BACKBONE, OFFLINE_BACKBONES
from cainnflow.subnet import VARIANTS
from cainnflow.training import MAX_BUDGET_STEPS, MIN_BUDGET_STEPS, TrainConfig
from cainnflow.weights import backbone_weights_available

from . import hosting, keys, loaders

__all__ = ["settings_section"]

CNN_IMAGE_SIZES = (64, 96, 128, 160, 192, 224, 256, 320, 384, 448, 512)
BATCH_SIZES = (4, 8, 16, 32, 64)
CNN_STAGE_CHOICES = (1, 2, 3, 4)


def _backbone_label(name: str) -> str:
    if name in OFFLINE_BACKBONES:
        return f"{name} · offline"
    return f"{name} · {'cached' if backbone_weights_available(name) else 'downloads weights'}"


def settings_section() -> tuple[CAINNFlowConfig | None, TrainConfig, bool]:
    st.subheader("2 · Model and training")
    names = list(BACKBONES)
    backbone = st.selectbox(
        "Backbone",
        names,
        index=names.index(DEFAULT_BACKBONE),
        format_func=_backbone_label,
        key="train_backbone",
        persist_state=keys.KEEP,
    )
    spec = BACKBONES[backbone]
    st.caption(spec.description)
    variant = st.selectbox(
        "Coupling subnet variant",
        VARIANTS,
        index=VARIANTS.index("CAC"),
        key="train_variant",
        persist_state=keys.KEEP,
        help="C = convolution block, A = CBAM attention block (paper: CAC is best).",
    )
    # Two by two: four in a row clip their labels in a narrow window.
    c1, c2 = st.columns(2, vertical_alignment="bottom")
    c3, c4 = st.columns(2, vertical_alignment="bottom")
    steps = c1.number_input(
        "Steps per scale", 1, 8, CAINNFlowConfig.steps, key="train_steps", persist_state=keys.KEEP
    )
    epochs = c2.number_input(
        "Epochs (empty: step budget)",
        1,
        500,
        TrainConfig.epochs,
        key="train_epochs",
        persist_state=keys.KEEP,
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
            persist_state=keys.KEEP,
        )
    else:
        size = spec.default_image_size
        c3.markdown(f"Image size  \n**{size} px** (fixed for this ViT)")
    batch = c4.select_slider("Batch size", BATCH_SIZES, value=16, key="train_batch", persist_state=keys.KEEP)
    stages = None
    with st.expander("Feature stages · choose settings for me", icon=":material/auto_awesome:"):
        if spec.kind == "cnn":
            picked = st.multiselect(
                "Backbone stages (strides 4, 8, 16, 32)",
                CNN_STAGE_CHOICES,
                default=list(spec.out_indices),
                key=f"train_stages_{backbone}",
                persist_state=keys.KEEP,
                help="Fine stages give sharp maps of local defects; the stride-32 stage sees the whole "
                "object, so a part missing or out of place reaches the score.",
            )
            stages = tuple(sorted(picked)) or None
        st.checkbox(
            "Choose stages and smoothing for me",
            key=keys.K_AUTO,
            persist_state=keys.KEEP,
            help="Holds out some good images, pastes synthetic defects into them (cut-paste, noise, warps, "
            "erased regions, colour blobs), scores every run of stages × smoothing (image and pixel AUROC; "
            "AUPRO shown beside them) and trains the best on all "
            "good images — the defaults unless another setting leads them clearly (by more than a tenth of "
            "an AUROC point in 95 % of resamples of the held-out images). Never looks at test images. Takes about two trainings.",
        )
    random = False
    with st.expander("Device", icon=":material/tune:"):
        device = st.selectbox("Device", DEVICE_CHOICES, key=keys.DEVICE_CHOICE, persist_state=keys.KEEP)
        st.caption(f"Detected: {loaders.detected_device()}")
        if device != "auto":
            try:
                resolve_device(device)
            except CainnflowError as exc:
                st.warning(str(exc))
        if not hosting.is_hosted():  # a public server never dials addresses its visitors type
            st.text_input(
                "Run on a Ray cluster (address, optional)",
                key=keys.K_RAY_ADDRESS,
                persist_state=keys.KEEP,
                placeholder="ray://head-node:10001 or auto",
                help="Trains as a Ray task there (on its GPU if it has one); progress streams back here and "
                "the model becomes this session's. Needs `pip install 'cainnflow[ray]'`.",
            )
        if hosting.dev_mode():
            random = st.checkbox(
                "Random backbone weights (for tests only)",
                key="train_random_weights",
                persist_state=keys.KEEP,
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
