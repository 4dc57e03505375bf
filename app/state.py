"""Session state: the current model, data and evaluation, and what a reload brings back.

The keys are named in :mod:`app.keys`; the session's folder and files are kept by
:mod:`app.session_store`. This module decides what is current: it sets the model and the
data, keeps the evaluation that belongs to them, and on a session's first run restores what
the session file recorded.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import streamlit as st
from streamlit.errors import StreamlitAPIException

from cainnflow.data import CategoryData, load_mvtec_category
from cainnflow.errors import CainnflowError

from . import hosting, jobs, keys, loaders, quickstart, session_store, sessions, warmup
from .loaders import unique_checkpoint_path
from .session_store import DataRef, session_dir

if TYPE_CHECKING:  # PyTorch: this module is imported before it is (see app.quickstart)
    from cainnflow.detector import Detector
    from cainnflow.evaluation import EvaluationResult
    from cainnflow.runtime import ExportedDetector

    #: The current model: on PyTorch, or the ready demo model's export while PyTorch loads.
    Model = Detector | ExportedDetector

__all__ = [
    "DataEntry",
    "DataRef",
    "ModelEntry",
    "adopt_finished_training",
    "current_data",
    "current_evaluation",
    "current_model",
    "data_mismatch",
    "evaluation_is_current",
    "evaluation_owner",
    "get",
    "init_state",
    "require_model",
    "save_threshold",
    "set_data",
    "set_evaluation",
    "set_model",
    "upload_store",
]

PENDING_POLL_S = 0.05


@dataclass
class ModelEntry:
    """The current model and where it came from (shown in the sidebar).

    ``detector`` is a :class:`cainnflow.detector.Detector`, or for the ready demo model while
    PyTorch is still importing on a fresh server, its export on ONNX Runtime (a
    :class:`cainnflow.runtime.ExportedDetector`, the other :class:`cainnflow.scorer.Scorer`;
    :func:`upgrade_quick_model` swaps it).
    """

    detector: Model
    origin: str  # e.g. "trained on demo / carpet_weave", "demo checkpoint", "uploaded x.safetensors"
    version: int  # bumps whenever the model changes, so caches keyed on it refresh
    path: Path | None = None  # its file in this session's folder (None: the shipped demo model)

    @property
    def file(self) -> str | None:
        """Its file name in this session's folder (None: the shipped demo model)."""
        return self.path.name if self.path else None


@dataclass
class DataEntry:
    """The current dataset category."""

    data: CategoryData
    source: str  # "demo", "mvtec", "custom" or "upload"
    root: str  # root folder (or upload id) it was read from
    ref: DataRef | None = field(default=None)

    def __post_init__(self) -> None:
        if self.ref is None:
            root = "" if self.source == "demo" else self.root
            self.ref = DataRef(self.source, root, self.data.name)


# ----------------------------------------------------------------- a session's first run and every run


def _write_session_file() -> None:
    model, data = current_model(), current_data()
    session_store.write_session_file(
        None if model is None else (model.file, model.origin),
        None if data is None else data.ref,
    )


def _restore() -> None:
    """Brings back this session's last model and data after a reload (once per session)."""
    session_store.clear_batch_folder()  # unpacked batch zips of the old page
    notes: list[str] = []
    model, ref = session_store.read_session_file()
    if ref is not None:
        try:
            open_data_ref(ref, remember=False)
            notes.append(f"data {ref.describe()}")
        except CainnflowError:
            pass
    origin = str(model.get("origin") or "restored")[:200]
    file = model.get("file")
    try:
        if file is None and model:
            detector = quickstart.demo_model(st.session_state.get(keys.DEVICE_CHOICE, "auto"))
            if detector is not None:
                set_model(detector, origin, demo=True, remember=False)
                notes.append("the demo model")
        elif (path := session_store.session_file(file)) is not None:
            quickstart.require_torch()
            from cainnflow.detector import Detector

            detector = Detector.load(path, device=st.session_state.get(keys.DEVICE_CHOICE, "auto"))
            set_model(detector, origin, path=path, remember=False)
            notes.append(f"model {file}")
    except CainnflowError:
        pass
    job = jobs.job_for(session_store.session_token())
    if job is not None:
        st.session_state[keys.TRAIN_JOB] = job
        notes.append("the training job")
    if n_uploads := session_store.restore_uploads():
        notes.append(f"{n_uploads} uploaded image(s)")
    if _restore_evaluation():
        notes.append("the last evaluation")
    session_store.restore_fields()
    if notes:
        st.session_state[keys.RESTORED] = "Restored after reload: " + ", ".join(notes) + "."


def require_router() -> None:
    """Hands a page over to the router when Streamlit ran it without one.

    Until the first ``st.navigation`` call after a server start, Streamlit treats ``pages/``
    as a legacy page folder: a page opened by its own address (a bookmark) then runs alone,
    with file names for navigation and no sidebar. The router marks every session it runs
    (:data:`app.keys.ROUTED`); a page without the mark switches to the router, which opens
    the app on its first page with the same query (the session token of a bookmark comes
    along) and the page asked for (:data:`app.keys.OPEN_PAGE`, the last part of the
    address), which the router opens.
    """
    if st.session_state.get(keys.ROUTED):
        return
    query = {
        **st.query_params.to_dict(),
        keys.OPEN_PAGE: (st.context.url or "").rstrip("/").rsplit("/", 1)[-1],
    }
    # A page run on its own (a test of one page) has no router to hand over to: it renders.
    with contextlib.suppress(StreamlitAPIException):
        st.switch_page("streamlit_app.py", query_params=query)  # keeps ?s=token


def init_state() -> None:
    """Called by the router on every run: defaults once per session; on the first run, the
    session token and what a reload restores; on later runs, the form fields a reload brings back."""
    first = keys.TOKEN not in st.session_state
    for key, value in keys.DEFAULTS.items():
        st.session_state.setdefault(key, value)
    st.session_state.setdefault(keys.UPLOADS, {})
    token = session_store.session_token()
    jobs.attach_session(token)
    if first:
        _restore()
        sessions.expire_idle(keep=token)
    else:
        session_store.remember_fields()
    sessions.mark_used(session_dir())


def get(key: str) -> Any:
    if keys.TOKEN not in st.session_state:  # a page run without the router (which initialises every run)
        init_state()
    return st.session_state[key]


def upload_store() -> dict[str, bytes]:
    """Images uploaded in this session (name → downscaled bytes), shared by every page."""
    return get(keys.UPLOADS)


# ----------------------------------------------------------------- model and data


def current_model() -> ModelEntry | None:
    return st.session_state.get(keys.MODEL)


def set_model(
    detector: Model,
    origin: str,
    *,
    path: Path | None = None,
    demo: bool = False,
    remember: bool = True,
) -> ModelEntry:
    """Makes ``detector`` the current model; it is saved in the session folder unless it has a file.

    Args:
        path: the file it already lives in (in this session's folder).
        demo: the shipped demo model (nothing to save).
        remember: record it in the session file (False while restoring).
    """
    if path is None and not demo:
        path = unique_checkpoint_path(session_dir(), _default_name(detector))
        try:
            detector.save(path)
            hosting.keep_within_quota(session_dir(), path)
        except (CainnflowError, OSError):
            path = None
    previous = current_model()
    entry = ModelEntry(detector, origin, (previous.version + 1) if previous else 1, path)
    st.session_state[keys.MODEL] = entry
    st.session_state[keys.EVALUATION] = None
    if remember:
        _write_session_file()
    return entry


def _default_name(detector: Model) -> str:
    return f"cainnflow_{model_category(detector) or 'model'}_{detector.config.variant}"


def current_data() -> DataEntry | None:
    return st.session_state.get(keys.DATA)


def set_data(
    data: CategoryData, ref: DataRef | str, root: str | None = None, *, remember: bool = True
) -> DataEntry:
    """Makes a category the current data. ``ref`` is its DataRef (or, older form, a source name + root)."""
    if isinstance(ref, str):
        entry = DataEntry(data, ref, root or "")
    else:
        entry = DataEntry(data, ref.source, ref.root, ref)
    st.session_state[keys.DATA] = entry
    st.session_state[keys.EVALUATION] = None
    st.session_state[keys.PENDING_DATA] = None
    if remember:
        _write_session_file()
    return entry


def open_data_ref(data_ref: DataRef, *, remember: bool = True) -> DataEntry:
    """Opens ``data_ref`` as the current data and sets the Train / load data widgets to show it.

    Call it before those widgets render (a callback, or a run's start).

    Raises:
        CainnflowError: missing, unreadable or outside the allowed folders; the current data
            is kept.
    """
    entry = set_data(loaders.open_data(data_ref, session_dir()), data_ref, remember=remember)
    show_source(data_ref)
    return entry


def set_pending_data(data_ref: DataRef) -> None:
    """Makes demo data that is still being generated the current data as soon as it is there.

    The ready demo model is usable at once; the pages resolve this at their next run
    (:func:`resolve_pending_data`), and Inspect waits for it.
    """
    st.session_state[keys.PENDING_DATA] = data_ref


def pending_data() -> DataRef | None:
    return st.session_state.get(keys.PENDING_DATA)


def resolve_pending_data(*, wait: bool) -> None:
    """Opens the pending demo data once it is generated (``wait``: block until it is)."""
    ref = pending_data()
    if ref is None or (not wait and warmup.generating(ref.category)):
        return
    st.session_state[keys.PENDING_DATA] = None
    try:
        open_data_ref(ref)
    except CainnflowError as exc:
        st.error(f"Could not open the model's data: {exc}")


def data_for_inspection() -> DataEntry | None:
    """The current data; while demo data is pending, waits until at least its test split exists.

    The demo generator writes the test split first, so on a fresh server Inspect can show
    the demo test images about a second before the training images are written. The
    preview (``train=()``) is not made the current data: that happens once it is complete.
    """
    from cainnflow.demo_data import demo_test_split_ready

    while (ref := pending_data()) is not None:
        if ref.source != "demo" or not warmup.generating(ref.category):
            resolve_pending_data(wait=True)
            break
        root = loaders.demo_root()
        if demo_test_split_ready(root, ref.category):
            try:
                data = load_mvtec_category(root, ref.category, require_train=False)
            except CainnflowError:
                break
            return DataEntry(replace(data, train=()), ref.source, ref.root, ref)
        time.sleep(PENDING_POLL_S)
    return current_data()


def show_source(data_ref: DataRef) -> None:
    """Sets the Train / load data widgets to show ``data_ref`` (before they render)."""
    st.session_state[keys.K_SOURCE] = data_ref.source
    if data_ref.source == "demo":
        st.session_state[keys.K_DEMO_CATEGORY] = data_ref.category


def current_evaluation() -> EvaluationResult | None:
    return get(keys.EVALUATION)


def evaluation_owner(entry: ModelEntry, data: DataEntry) -> tuple:
    """What an evaluation belongs to: the model (its version) and the data it scored."""
    d = data.data
    return (entry.version, data.source, data.root, d.name, len(d.test))


def set_evaluation(result: EvaluationResult | None, *, remember: bool = True) -> None:
    """Makes ``result`` the evaluation of the current model on the current data; kept in the
    session's folder (arrays in an ``.npz``, never a pickle) so a reload brings it back."""
    st.session_state[keys.EVALUATION] = result
    model, data = current_model(), current_data()
    if result is None or model is None or data is None:
        st.session_state[keys.EVAL_OWNER] = None
        return
    st.session_state[keys.EVAL_OWNER] = evaluation_owner(model, data)
    if remember and data.ref is not None:
        session_store.save_evaluation(result, model.file, data.ref)


def evaluation_is_current(result: EvaluationResult, entry: ModelEntry, data: DataEntry) -> bool:
    return (
        st.session_state.get(keys.EVAL_OWNER) == evaluation_owner(entry, data)
        and result.category == data.data.name
    )


def _restore_evaluation() -> bool:
    """The last evaluation of this session, when it belongs to the restored model and data."""
    model, data = current_model(), current_data()
    if model is None or data is None or data.ref is None:
        return False
    result = session_store.load_evaluation(model.file, data.ref, data.data)
    if result is None:
        return False
    set_evaluation(result, remember=False)
    return True


def save_threshold(threshold: float, origin: str = "user") -> Path | None:
    """Sets the current model's threshold and rewrites its file in this session (atomically).

    The shipped demo model gets a file of its own in the session first, so the saved
    threshold survives a reload and goes into downloads and exports.

    Args:
        threshold: the threshold on image scores.
        origin: how it was set, recorded with it (:data:`cainnflow.record.THRESHOLD_ORIGINS`).

    Returns:
        The file written, or None when it could not be written (the threshold is set anyway).
    """
    entry = current_model()
    if entry is None:
        return None
    entry.detector.set_threshold(float(threshold), origin)
    path = entry.path or unique_checkpoint_path(session_dir(), _default_name(entry.detector))
    try:
        entry.detector.save(path)
        if entry.path is None:
            hosting.keep_within_quota(session_dir(), path)
    except (CainnflowError, OSError):
        return None
    if entry.path is None:  # the stored evaluation now belongs to this file
        session_store.adopt_evaluation(path.name)
    entry.path = path
    _write_session_file()
    return path


def model_data_ref(detector: Model) -> DataRef | None:
    """The dataset a model was trained on, when the app recorded it (an export records none)."""
    record = getattr(detector, "record", None)
    data = record.data if record is not None else None
    return data if data is not None and data.reopenable else None


def model_category(detector: Model) -> str:
    """The category a model was trained on ('' when unknown): its record's or its export's."""
    record = getattr(detector, "record", None)
    return record.category if record is not None else detector.info.category


def data_mismatch() -> str | None:
    """A warning when the current model was trained on other data than the current data."""
    model, data = current_model(), current_data()
    if model is None or data is None or data.ref is None:
        return None
    trained = model_data_ref(model.detector)
    category = model_category(model.detector)
    if trained is not None:
        same = (trained.source, trained.root, trained.category) == (
            data.ref.source,
            data.ref.root,
            data.ref.category,
        )
        what = trained.describe()
    elif category:
        same, what = category == data.ref.category, f"“{category}”"
    else:
        return None
    if same:
        return None
    return (
        f"The current model was trained on **{what}**, but the current data is **{data.ref.describe()}**: "
        "its scores and heatmaps on these images mean little. Open the model's data on **Train / load**."
    )


def upgrade_quick_model(*, wait: bool) -> None:
    """Swaps the demo model's ONNX Runtime twin for the PyTorch model once PyTorch is imported.

    The same model, so the entry keeps its version (cached maps stay valid) and this
    session's threshold. ``wait``: block (with a spinner) until PyTorch is there.
    """
    entry = current_model()
    if entry is None or not quickstart.is_quick(entry.detector):
        return
    if not quickstart.torch_ready():
        if not wait:
            return
        quickstart.require_torch()
    detector = loaders.load_demo_detector(st.session_state.get(keys.DEVICE_CHOICE, "auto"))
    if detector is None:
        return
    if entry.detector.threshold != detector.threshold:  # moved in this session
        detector.threshold = entry.detector.threshold
    entry.detector = detector


def require_model(*, torch: bool = True) -> ModelEntry:
    """The current model, or an explanation and a stop when there is none.

    ``torch``: the page needs the PyTorch model (every page but Inspect), so a quick demo
    model is upgraded first.
    """
    if torch:
        upgrade_quick_model(wait=True)
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
    job = st.session_state.get(keys.TRAIN_JOB)
    detector = job.take_detector() if job is not None else None
    if detector is None:
        return None
    origin = f"trained on {job.label}" if job.label else "trained here"
    return set_model(detector, origin=origin, path=job.saved_path)
