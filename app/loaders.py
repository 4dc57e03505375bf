"""Cached loaders: every ``st.cache_resource`` / ``st.cache_data`` of the app lives here.

Shared, immutable things are cached across sessions (the demo dataset folder, parsed
categories, the demo checkpoint's bytes). Detectors are mutable (a person tunes their
threshold), so each session builds its own from cached bytes.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import streamlit as st

from cainnflow.data import CategoryData, list_categories, load_custom_folder, load_mvtec_category
from cainnflow.errors import DataError
from cainnflow.record import DataReference

from . import hosting, warmup

if TYPE_CHECKING:
    from cainnflow.detector import Detector

__all__ = [
    "CHECKPOINT_SUFFIX",
    "DEMO_CHECKPOINT",
    "DEMO_EXPORT",
    "app_home",
    "demo_checkpoint_bytes",
    "demo_root",
    "detected_device",
    "load_category",
    "load_demo_detector",
    "mvtec_categories",
    "open_data",
    "safe_name",
    "sessions_dir",
    "unique_checkpoint_path",
]

ASSETS = Path(__file__).resolve().parent.parent / "assets"
DEMO_CHECKPOINT = ASSETS / "demo_carpet_weave.safetensors"
DEMO_EXPORT = ASSETS / "demo_carpet_weave_onnx"  # the same model for ONNX Runtime (app.quickstart)
DEMO_CHECKPOINT_CATEGORY = warmup.DEMO_CATEGORY
HOME_ENV = warmup.HOME_ENV
CHECKPOINT_SUFFIX = ".safetensors"
MAX_NAME_CHARS = 80
_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")
_UPLOAD_ID = re.compile(r"^[A-Za-z0-9_-]{8,64}$")


def app_home() -> Path:
    """Folder for generated data and sessions (``$CAINNFLOW_HOME``, else ~/.cache/cainnflow)."""
    return warmup.app_home()


def sessions_dir() -> Path:
    """The parent of the per-session folders (never listed by the app)."""
    path = app_home() / "sessions"
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def safe_name(text: str, default: str) -> str:
    """``text`` as a file name: letters, digits, ``._-`` only, at most MAX_NAME_CHARS, never empty."""
    return _UNSAFE_NAME.sub("_", text.strip()).strip("._")[:MAX_NAME_CHARS] or default


def unique_checkpoint_path(folder: Path, name: str) -> Path:
    """``folder/<name>.safetensors``, made safe, never an existing file (``run.1`` ≠ ``run.2``)."""
    stem = name.strip()
    if stem.lower().endswith(CHECKPOINT_SUFFIX):
        stem = stem[: -len(CHECKPOINT_SUFFIX)]
    stem = safe_name(stem, "model")
    target = folder / f"{stem}{CHECKPOINT_SUFFIX}"
    n = 2
    while target.exists():
        target = folder / f"{stem}-{n}{CHECKPOINT_SUFFIX}"
        n += 1
    return target


def demo_root() -> Path:
    """The synthetic demo dataset's root folder (categories are generated on first use)."""
    path = app_home() / "demo"
    path.mkdir(parents=True, exist_ok=True)
    return path


def demo_category_root(category: str) -> Path:
    """The demo root with ``category`` generated (only that one: the others wait until asked for)."""
    with st.spinner(f"Generating the synthetic demo category {category} (first use only, a few seconds)…"):
        return warmup.demo_category_root(category)


@st.cache_data(show_spinner=False, ttl=60)
def mvtec_categories(root: str) -> list[str]:
    """Categories found under an MVTec-layout root (raises DataError on a bad root)."""
    return list_categories(root)


@st.cache_resource(show_spinner=False, max_entries=32)
def load_category(source: str, root: str, category: str) -> CategoryData:
    """A parsed MVTec-layout category (demo or mvtec; root already checked)."""
    if source == "demo":
        return load_mvtec_category(demo_category_root(category), category)
    return load_mvtec_category(root, category)


def open_data(ref: object, session_dir: Path) -> CategoryData:
    """Opens the dataset a :class:`app.state.DataRef` points to, within the allowed folders.

    Uploads are looked up in ``session_dir`` only, so a reference from another session's
    checkpoint never opens that session's files.

    Raises:
        DataError: missing, unreadable or outside the allowed data folders.
    """
    source, root, category = ref.source, ref.root, ref.category  # type: ignore[attr-defined]
    home = app_home()
    if source == "demo":
        from cainnflow.demo_data import DEMO_CATEGORIES

        if category not in DEMO_CATEGORIES:
            raise DataError(f"there is no demo category {category[:40]!r}")
        return load_category("demo", "", category)
    if source == "upload":
        if not _UPLOAD_ID.match(root) or not hosting.is_folder_name(category):
            raise DataError("the recorded upload is not valid")
        folder = session_dir / "uploads" / root
        if not (folder / category).is_dir():
            raise DataError("that upload belongs to another session or was removed; upload the data again")
        return load_upload_folder(folder, category)
    if source == "mvtec":
        cat_dir = hosting.allowed_category(hosting.allowed_path(root, home), category, home)
        return load_category("mvtec", str(cat_dir.parent), cat_dir.name)
    if source == "custom":
        extra = {
            key: str(hosting.allowed_path(value, home)) if value else None
            for key, value in (
                ("test_good_dir", ref.test_good),  # type: ignore[attr-defined]
                ("test_defect_dir", ref.defect),  # type: ignore[attr-defined]
                ("mask_dir", ref.masks),  # type: ignore[attr-defined]
            )
        }
        good = hosting.allowed_path(root, home)
        return load_custom_folder(good, name=category or good.name or "custom", **extra)
    raise DataError(f"unknown data source {source!r}")


def load_upload_folder(folder: Path, category: str) -> CategoryData:
    """An extracted upload, always stored as ``folder/<category>/train/good`` (+ optional test, ground_truth).

    Error messages name the upload, never the server folder it lies in.
    """
    try:
        return load_mvtec_category(folder, category)
    except DataError as exc:
        raise DataError(str(exc).replace(str(folder), "upload")) from exc


@st.cache_resource(show_spinner=False)
def demo_checkpoint_bytes() -> bytes | None:
    """The ready demo checkpoint shipped in ``assets/`` (None if missing)."""
    return DEMO_CHECKPOINT.read_bytes() if DEMO_CHECKPOINT.exists() else None


def load_demo_detector(device: str = "auto") -> Detector | None:
    """The shipped demo model; its checkpoint records the demo data it was trained on."""
    from cainnflow.detector import Detector  # PyTorch

    data = demo_checkpoint_bytes()
    if data is None:
        return None
    detector = Detector.load(data, device=device)
    if detector.record.data is None or not detector.record.data.reopenable:
        demo = DataReference("demo", "", DEMO_CHECKPOINT_CATEGORY)
        detector.record = replace(detector.record, data=demo)
    return detector


@st.cache_resource(show_spinner=False)
def detected_device() -> str:
    """What ``device="auto"`` resolves to here, in words (e.g. "CUDA: NVIDIA H200 (139 GiB)")."""
    from cainnflow.device import describe_device, resolve_device  # PyTorch

    return describe_device(resolve_device("auto"))


@st.cache_resource(show_spinner=False, max_entries=16)
def step_timings(config_json: str, device: str | None) -> tuple[float, float, float] | None:
    """(backbone s per batch, flow s per step, batch) of a configuration on this server, timed once.

    Random flows, the configuration's own backbone: timings do not depend on the weights. None
    when the backbone cannot be built here.
    """
    from cainnflow.detector import Detector  # PyTorch
    from cainnflow.errors import CainnflowError
    from cainnflow.estimate import estimate_training
    from cainnflow.model import CAINNFlowConfig
    from cainnflow.training import TrainConfig

    try:
        detector = Detector.create(CAINNFlowConfig.from_dict(json.loads(config_json)), device=device or "auto")
    except (CainnflowError, OSError, RuntimeError, ValueError):
        return None
    batch = TrainConfig().batch_size
    est = estimate_training(detector.model, batch, TrainConfig(augment="none"))
    return est.feature_s, est.step_s, float(batch)
