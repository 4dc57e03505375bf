"""Session-state keys and accessors shared by the pages (one place, initialised once)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import streamlit as st

from cainnflow.data import CategoryData
from cainnflow.detector import Detector
from cainnflow.evaluation import EvaluationResult

__all__ = [
    "ModelEntry",
    "adopt_finished_training",
    "current_data",
    "current_model",
    "get",
    "init_state",
    "require_model",
    "set_data",
    "set_evaluation",
    "set_model",
]

MODEL = "cf_model"  # ModelEntry | None
DATA = "cf_data"  # DataEntry | None
TRAIN_JOB = "cf_train_job"  # app.jobs.TrainingJob | None
EVALUATION = "cf_evaluation"  # EvaluationResult | None (for the current model + data)
DEVICE_CHOICE = "cf_device"  # "auto" | "cpu" | "cuda" | "mps"

_DEFAULTS: dict[str, Any] = {
    MODEL: None,
    DATA: None,
    TRAIN_JOB: None,
    EVALUATION: None,
    DEVICE_CHOICE: "auto",
}


@dataclass
class ModelEntry:
    """The current model and where it came from (shown in the sidebar)."""

    detector: Detector
    origin: str  # e.g. "trained on demo/carpet_weave", "loaded demo checkpoint", "uploaded x.safetensors"
    version: int  # bumps whenever the model changes, so caches keyed on it refresh


@dataclass
class DataEntry:
    """The current dataset category."""

    data: CategoryData
    source: str  # "demo", "mvtec" or "custom"
    root: str  # root folder shown to the person


def init_state() -> None:
    for key, value in _DEFAULTS.items():
        st.session_state.setdefault(key, value)


def get(key: str) -> Any:
    init_state()
    return st.session_state[key]


def current_model() -> ModelEntry | None:
    return get(MODEL)


def set_model(detector: Detector, origin: str) -> ModelEntry:
    previous = current_model()
    entry = ModelEntry(detector, origin, (previous.version + 1) if previous else 1)
    st.session_state[MODEL] = entry
    st.session_state[EVALUATION] = None
    return entry


def current_data() -> DataEntry | None:
    return get(DATA)


def set_data(data: CategoryData, source: str, root: str) -> DataEntry:
    entry = DataEntry(data, source, root)
    st.session_state[DATA] = entry
    st.session_state[EVALUATION] = None
    return entry


def current_evaluation() -> EvaluationResult | None:
    return get(EVALUATION)


def set_evaluation(result: EvaluationResult | None) -> None:
    st.session_state[EVALUATION] = result


def require_model() -> ModelEntry:
    """The current model, or an explanation and a stop when there is none."""
    entry = current_model()
    if entry is None or not entry.detector.is_trained:
        st.info(
            "No model yet. Open **Train / load** to train a flow on the demo data or load the ready "
            "demo checkpoint (one click)."
        )
        st.page_link("pages/train.py", label="Go to Train / load", icon=":material/model_training:")
        st.stop()
    return entry


def adopt_finished_training() -> ModelEntry | None:
    """Makes a finished training job's detector the current model, exactly once per job.

    Called on every page (by the sidebar), so a job that finishes while the person is on
    another page still becomes the current model at their next interaction.
    """
    job = get(TRAIN_JOB)
    detector = job.take_detector() if job is not None else None
    if detector is None:
        return None
    return set_model(detector, origin=f"trained on {job.label}" if job.label else "trained here")
