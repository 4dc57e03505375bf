"""Cached loaders: every ``st.cache_resource`` / ``st.cache_data`` of the app lives here.

Shared, immutable things are cached across sessions (the demo dataset folder, parsed
categories, the demo checkpoint's bytes). Detectors are mutable (a person tunes their
threshold), so each session builds its own from cached bytes.
"""

from __future__ import annotations

import os
from pathlib import Path

import streamlit as st

from cainnflow.data import CategoryData, list_categories, load_custom_folder, load_mvtec_category
from cainnflow.demo_data import DEMO_CATEGORIES, make_demo_dataset
from cainnflow.detector import Detector
from cainnflow.device import describe_device, resolve_device

__all__ = [
    "DEMO_CHECKPOINT",
    "app_home",
    "checkpoint_dir",
    "demo_checkpoint_bytes",
    "demo_root",
    "detected_device",
    "load_category",
    "load_demo_detector",
    "mvtec_categories",
]

ASSETS = Path(__file__).resolve().parent.parent / "assets"
DEMO_CHECKPOINT = ASSETS / "demo_carpet_weave.safetensors"
DEMO_CHECKPOINT_CATEGORY = "carpet_weave"
HOME_ENV = "CAINNFLOW_HOME"


def app_home() -> Path:
    """Folder for generated data and saved checkpoints (``$CAINNFLOW_HOME``, else ~/.cache/cainnflow)."""
    home = Path(os.environ.get(HOME_ENV) or Path.home() / ".cache" / "cainnflow")
    home.mkdir(parents=True, exist_ok=True)
    return home


def checkpoint_dir() -> Path:
    path = app_home() / "checkpoints"
    path.mkdir(parents=True, exist_ok=True)
    return path


@st.cache_resource(show_spinner="Generating the synthetic demo dataset (first use only)…")
def demo_root() -> Path:
    """The synthetic demo dataset, generated once per machine."""
    return make_demo_dataset(app_home() / "demo")


def demo_categories() -> tuple[str, ...]:
    return DEMO_CATEGORIES


@st.cache_data(show_spinner=False, ttl=60)
def mvtec_categories(root: str) -> list[str]:
    """Categories found under an MVTec-layout root (raises DataError on a bad root)."""
    return list_categories(root)


@st.cache_resource(show_spinner=False, max_entries=32)
def load_category(source: str, root: str, category: str) -> CategoryData:
    """A parsed category. ``source`` is "demo", "mvtec" or "custom" (then root is the good folder)."""
    if source == "custom":
        return load_custom_folder(root, name=category or "custom")
    return load_mvtec_category(root, category)


def load_custom_category(
    good_dir: str, test_good_dir: str | None, test_defect_dir: str | None, mask_dir: str | None
) -> CategoryData:
    return load_custom_folder(
        good_dir,
        test_good_dir=test_good_dir or None,
        test_defect_dir=test_defect_dir or None,
        mask_dir=mask_dir or None,
        name=Path(good_dir).name or "custom",
    )


@st.cache_resource(show_spinner=False)
def demo_checkpoint_bytes() -> bytes | None:
    """The ready demo checkpoint shipped in ``assets/`` (None if missing)."""
    return DEMO_CHECKPOINT.read_bytes() if DEMO_CHECKPOINT.exists() else None


def load_demo_detector(device: str = "auto") -> Detector | None:
    data = demo_checkpoint_bytes()
    return None if data is None else Detector.load(data, device=device)


@st.cache_resource(show_spinner=False)
def detected_device() -> str:
    """What ``device="auto"`` resolves to here, in words (e.g. "CUDA: NVIDIA H200 (139 GiB)")."""
    return describe_device(resolve_device("auto"))
