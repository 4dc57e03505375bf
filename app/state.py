"""Session state: every key the app keeps, the session's own folder, and what survives a reload.

Each browser session gets an unguessable token, kept in the URL (``?s=<token>``) and naming
its folder ``<app home>/sessions/<token>/``. Every model the session trains or loads is saved
there under a unique name, together with ``session.json`` (the current model and data).
A reload (same URL) finds the token and brings model and data back; another session cannot
open it without the token, and the app never lists other sessions' folders.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import streamlit as st
from streamlit.errors import StreamlitAPIException

from cainnflow.data import CategoryData, load_mvtec_category
from cainnflow.errors import CainnflowError

from . import hosting, jobs, loaders, quickstart, sessions, warmup
from .loaders import unique_checkpoint_path

if TYPE_CHECKING:  # PyTorch: this module is imported before it is (see app.quickstart)
    from cainnflow.detector import Detector
    from cainnflow.evaluation import EvaluationResult

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
    "forget_uploads",
    "get",
    "init_state",
    "keep_upload",
    "require_model",
    "save_threshold",
    "session_dir",
    "session_token",
    "set_data",
    "set_evaluation",
    "set_model",
    "unique_checkpoint_path",
]

# ----------------------------------------------------------------- keys (the only place they are named)
MODEL = "cf_model"  # ModelEntry | None
DATA = "cf_data"  # DataEntry | None
TRAIN_JOB = "cf_train_job"  # app.jobs.TrainingJob | None
EVALUATION = "cf_evaluation"  # EvaluationResult | None (for the current model + data)
DEVICE_CHOICE = "cf_device"  # one of cainnflow.device.DEVICE_CHOICES
TOKEN = "cf_session_token"  # this session's token (also in the URL)
RESTORED = "cf_restored"  # a one-line note about what came back after a reload, or None
NOTICE = "cf_notice"  # (kind, text, model version) of the last load / save action
UPLOADS = "cf_uploads"  # {name: bytes} images uploaded on any page, kept for the session
SCORE_CACHE = "cf_score_cache"  # OrderedDict[(model version, digest), scored image]
PENDING_DATA = "cf_pending_data"  # DataRef of demo data still being generated, to become current
ROUTED = "cf_routed"  # True once the router (streamlit_app.py) has run in this session
OPEN_PAGE = "page"  # query parameter: the page a bookmark asked for, carried through require_router

# Widget keys of the Train / load page (kept here so restore and views agree).
K_SOURCE = "train_source"
K_DEMO_CATEGORY = "train_demo_category"
K_CKPT_UPLOAD = "train_ckpt_upload"
K_LAST_CKPT_UPLOAD = "train_last_upload_id"
K_DATA_UPLOAD = "train_data_upload"
K_SAVED_CKPT = "train_saved_ckpt"
K_SAVE_NAME = "train_save_name"

EVAL_OWNER = "cf_eval_owner"  # evaluation_owner() of the stored evaluation
FIELDS_WRITTEN = "cf_fields_written"  # the form fields last written to FIELDS_FILE
EVAL_FILE = "evaluation.json"
EVAL_ARRAYS = "evaluation.npz"
FIELDS_FILE = "fields.json"
MAX_FIELD_CHARS = 4096
#: Form fields a reload brings back (text and choices of Train / load and Inspect's batch folder).
REMEMBERED_FIELDS = (
    "train_source",
    "train_demo_category",
    "train_mvtec_root",
    "train_mvtec_category",
    "train_custom_good",
    "train_custom_test_good",
    "train_custom_defect",
    "train_custom_masks",
    "train_upload_name",
    "inspect_batch_folder",
)
UPLOADED_IMAGES = "images"  # the session's uploaded images (folder), with their index
BATCH_DIR = "batch"  # batch zips unpacked while Inspect scores them (app.inspect_view)
UPLOADS_INDEX = "index.json"
MAX_UPLOAD_NAME = 300
MAX_UPLOAD_BYTES = 64 * 1024**2
URL_PARAM = "s"
PENDING_POLL_S = 0.05
SESSION_FILE = "session.json"
_TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{22,64}$")
_FILE_RE = re.compile(r"^[A-Za-z0-9._-]{1,100}$")

_DEFAULTS: dict[str, Any] = {
    MODEL: None,
    DATA: None,
    TRAIN_JOB: None,
    EVALUATION: None,
    DEVICE_CHOICE: "auto",
    RESTORED: None,
    NOTICE: None,
}


@dataclass(frozen=True)
class DataRef:
    """Where a dataset comes from, enough to open it again (saved in checkpoints and sessions).

    Attributes:
        source: ``demo``, ``mvtec``, ``custom`` or ``upload``.
        root: mvtec: the dataset root; custom: the good-images folder; upload: the upload id
            (a folder of this session); demo: empty (the app's own demo folder).
        category: category name.
        test_good, defect, masks: optional folders of a custom dataset.
    """

    source: str
    root: str
    category: str
    test_good: str = ""
    defect: str = ""
    masks: str = ""

    SOURCES = ("demo", "mvtec", "custom", "upload")

    def describe(self) -> str:
        where = {"demo": "demo", "mvtec": "MVTec folder", "custom": "custom folders", "upload": "upload"}
        return f"{where.get(self.source, self.source)} / {self.category}"

    def to_dict(self) -> dict[str, str]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: object) -> DataRef | None:
        """The ref recorded in a checkpoint or session file; None if absent or malformed."""
        if not isinstance(raw, dict):
            return None
        values = {k: raw.get(k, "") for k in ("source", "root", "category", "test_good", "defect", "masks")}
        if not all(isinstance(v, str) and len(v) < 4096 for v in values.values()):
            return None
        if values["source"] not in cls.SOURCES or not hosting.is_folder_name(values["category"]):
            return None
        return cls(**values)


@dataclass
class ModelEntry:
    """The current model and where it came from (shown in the sidebar).

    ``detector`` is a :class:`cainnflow.detector.Detector`, or for the ready demo model while
    PyTorch is still importing on a fresh server, its ONNX Runtime twin
    (:class:`app.quickstart.QuickDemoDetector`; :func:`upgrade_quick_model` swaps it).
    """

    detector: Detector
    origin: str  # e.g. "trained on demo / carpet_weave", "demo checkpoint", "uploaded x.safetensors"
    version: int  # bumps whenever the model changes, so caches keyed on it refresh
    path: Path | None = None  # its file in this session's folder (None: the shipped demo model)


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


# ----------------------------------------------------------------- session token and folder


def _valid_token(token: object) -> bool:
    return isinstance(token, str) and bool(_TOKEN_RE.match(token))


def session_token() -> str:
    """This session's token: from session state, else the URL (a reload), else a new one."""
    token = st.session_state.get(TOKEN)
    if not _valid_token(token):
        from_url = st.query_params.get(URL_PARAM)
        if _valid_token(from_url) and (loaders.sessions_dir() / from_url).is_dir():
            token = from_url
        else:
            token = secrets.token_urlsafe(24)
        st.session_state[TOKEN] = token
    # Page navigation drops query parameters: put the token back on every run, so a reload
    # or a bookmark of any page finds this session again.
    if st.query_params.get(URL_PARAM) != token:
        st.query_params[URL_PARAM] = token
    return token


def session_dir() -> Path:
    """This session's private folder (created with owner-only permissions)."""
    path = loaders.sessions_dir() / session_token()
    if not path.is_dir():
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def _write_session_file() -> None:
    model, data = current_model(), current_data()
    doc: dict[str, Any] = {}
    if model is not None:
        doc["model"] = {"file": model.path.name if model.path else None, "origin": model.origin}
    if data is not None and data.ref is not None:
        doc["data"] = data.ref.to_dict()
    path = session_dir() / SESSION_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc))
    os.replace(tmp, path)


def _restore() -> None:
    """Brings back this session's last model and data after a reload (once per session)."""
    shutil.rmtree(session_dir() / BATCH_DIR, ignore_errors=True)  # unpacked batch zips of the old page
    path = session_dir() / SESSION_FILE
    notes: list[str] = []
    try:
        doc = json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):
        doc = {}
    if not isinstance(doc, dict):
        doc = {}
    ref = DataRef.from_dict(doc.get("data"))
    if ref is not None:
        try:
            open_data_ref(ref, remember=False)
            notes.append(f"data {ref.describe()}")
        except CainnflowError:
            pass
    model = doc.get("model") if isinstance(doc.get("model"), dict) else {}
    origin = str(model.get("origin") or "restored")[:200]
    file = model.get("file")
    try:
        if file is None and model:
            detector = quickstart.demo_model(st.session_state.get(DEVICE_CHOICE, "auto"))
            if detector is not None:
                set_model(detector, origin, demo=True, remember=False)
                notes.append("the demo model")
        elif isinstance(file, str) and _FILE_RE.match(file) and (session_dir() / file).is_file():
            quickstart.require_torch()
            from cainnflow.detector import Detector

            detector = Detector.load(session_dir() / file, device=st.session_state.get(DEVICE_CHOICE, "auto"))
            set_model(detector, origin, path=session_dir() / file, remember=False)
            notes.append(f"model {file}")
    except CainnflowError:
        pass
    job = jobs.job_for(session_token())
    if job is not None:
        st.session_state[TRAIN_JOB] = job
        notes.append("the training job")
    if n_uploads := _restore_uploads():
        notes.append(f"{n_uploads} uploaded image(s)")
    if _restore_evaluation():
        notes.append("the last evaluation")
    _restore_fields()
    if notes:
        st.session_state[RESTORED] = "Restored after reload: " + ", ".join(notes) + "."


def require_router() -> None:
    """Hands a page over to the router when Streamlit ran it without one.

    Until the first ``st.navigation`` call after a server start, Streamlit treats ``pages/``
    as a legacy page folder: a page opened by its own address (a bookmark) then runs alone,
    with file names for navigation and no sidebar. The router marks every session it runs
    (:data:`ROUTED`); a page without the mark switches to the router, which opens the app on
    its first page with the same query (the session token of a bookmark comes along) and the
    page asked for (:data:`OPEN_PAGE`, the last part of the address), which the router opens.
    """
    if st.session_state.get(ROUTED):
        return
    query = {**st.query_params.to_dict(), OPEN_PAGE: (st.context.url or "").rstrip("/").rsplit("/", 1)[-1]}
    # A page run on its own (a test of one page) has no router to hand over to: it renders.
    with contextlib.suppress(StreamlitAPIException):
        st.switch_page("streamlit_app.py", query_params=query)  # keeps ?s=token


def init_state() -> None:
    """Called by the router on every run: defaults once per session; on the first run, the
    session token and what a reload restores; on later runs, the form fields a reload brings back."""
    first = TOKEN not in st.session_state
    for key, value in _DEFAULTS.items():
        st.session_state.setdefault(key, value)
    st.session_state.setdefault(UPLOADS, {})
    token = session_token()
    jobs.attach_session(token)
    if first:
        _restore()
        sessions.expire_idle(keep=token)
    else:
        _remember_fields()
    sessions.mark_used(session_dir())


def get(key: str) -> Any:
    if TOKEN not in st.session_state:  # a page run without the router (which initialises every run)
        init_state()
    return st.session_state[key]


# ----------------------------------------------------------------- model and data


def current_model() -> ModelEntry | None:
    return st.session_state.get(MODEL)


def set_model(
    detector: Detector,
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
    st.session_state[MODEL] = entry
    st.session_state[EVALUATION] = None
    if remember:
        _write_session_file()
    return entry


def _default_name(detector: Detector) -> str:
    category = str(detector.info.get("category") or "model")
    return f"cainnflow_{category}_{detector.config.variant}"


def current_data() -> DataEntry | None:
    return st.session_state.get(DATA)


def set_data(
    data: CategoryData, ref: DataRef | str, root: str | None = None, *, remember: bool = True
) -> DataEntry:
    """Makes a category the current data. ``ref`` is its DataRef (or, older form, a source name + root)."""
    if isinstance(ref, str):
        entry = DataEntry(data, ref, root or "")
    else:
        entry = DataEntry(data, ref.source, ref.root, ref)
    st.session_state[DATA] = entry
    st.session_state[EVALUATION] = None
    st.session_state[PENDING_DATA] = None
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
    st.session_state[PENDING_DATA] = data_ref


def pending_data() -> DataRef | None:
    return st.session_state.get(PENDING_DATA)


def resolve_pending_data(*, wait: bool) -> None:
    """Opens the pending demo data once it is generated (``wait``: block until it is)."""
    ref = pending_data()
    if ref is None or (not wait and warmup.generating(ref.category)):
        return
    st.session_state[PENDING_DATA] = None
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
    st.session_state[K_SOURCE] = data_ref.source
    if data_ref.source == "demo":
        st.session_state[K_DEMO_CATEGORY] = data_ref.category


def current_evaluation() -> EvaluationResult | None:
    return get(EVALUATION)


def evaluation_owner(entry: ModelEntry, data: DataEntry) -> tuple:
    """What an evaluation belongs to: the model (its version) and the data it scored."""
    d = data.data
    return (entry.version, data.source, data.root, d.name, len(d.test))


def set_evaluation(result: EvaluationResult | None, *, remember: bool = True) -> None:
    """Makes ``result`` the evaluation of the current model on the current data; kept in the
    session's folder (arrays in an ``.npz``, never a pickle) so a reload brings it back."""
    st.session_state[EVALUATION] = result
    model, data = current_model(), current_data()
    if result is None or model is None or data is None:
        st.session_state[EVAL_OWNER] = None
        return
    st.session_state[EVAL_OWNER] = evaluation_owner(model, data)
    if remember and data.ref is not None:
        _save_evaluation(result, model, data.ref)


def evaluation_is_current(result: EvaluationResult, entry: ModelEntry, data: DataEntry) -> bool:
    return (
        st.session_state.get(EVAL_OWNER) == evaluation_owner(entry, data)
        and result.category == data.data.name
    )


def _save_evaluation(result: EvaluationResult, model: ModelEntry, ref: DataRef) -> None:
    folder = session_dir()
    masks = result.masks if result.masks is not None else np.zeros(result.maps.shape, dtype=bool)
    try:
        hosting.require_room(folder, result.maps.nbytes + masks.size // 8)
        with (folder / EVAL_ARRAYS).open("wb") as f:
            np.savez_compressed(
                f,
                maps=result.maps.astype(np.float32),
                scores=result.scores,
                masks=masks,
                has_mask=result.has_mask,
            )
    except (CainnflowError, OSError):
        (folder / EVAL_FILE).unlink(missing_ok=True)
        return
    doc = {
        "model": model.path.name if model.path else None,
        "data": ref.to_dict(),
        "threshold": result.threshold,
        "ms_per_image": result.ms_per_image,
    }
    _write_json(folder / EVAL_FILE, doc)


def _restore_evaluation() -> bool:
    """The last evaluation of this session, when it belongs to the restored model and data."""
    from cainnflow.evaluation import evaluation_result

    folder, model, data = session_dir(), current_model(), current_data()
    if model is None or data is None or data.ref is None or not (folder / EVAL_FILE).is_file():
        return False
    try:
        doc = json.loads((folder / EVAL_FILE).read_text())
        same = (
            isinstance(doc, dict)
            and doc.get("model") == (model.path.name if model.path else None)
            and DataRef.from_dict(doc.get("data")) == data.ref
        )
        if not same:
            return False
        with np.load(folder / EVAL_ARRAYS, allow_pickle=False) as arrays:
            maps, scores = arrays["maps"], arrays["scores"]
            masks, has_mask = arrays["masks"].astype(bool), arrays["has_mask"].astype(bool)
        n = len(data.data.test)
        if maps.ndim != 3 or maps.shape[0] != n or scores.shape != (n,) or masks.shape != maps.shape:
            return False
        threshold = float(doc["threshold"])
        elapsed = float(doc.get("ms_per_image", 0.0)) * n / 1000.0
        result = evaluation_result(data.data, maps, scores, masks, has_mask, threshold, elapsed)
    except (OSError, ValueError, KeyError, TypeError, CainnflowError):
        return False
    set_evaluation(result, remember=False)
    return True


def save_threshold(threshold: float) -> Path | None:
    """Sets the current model's threshold and rewrites its file in this session (atomically).

    The shipped demo model gets a file of its own in the session first, so the saved
    threshold survives a reload and goes into downloads and exports.

    Returns:
        The file written, or None when it could not be written (the threshold is set anyway).
    """
    entry = current_model()
    if entry is None:
        return None
    entry.detector.threshold = float(threshold)
    path = entry.path or unique_checkpoint_path(session_dir(), _default_name(entry.detector))
    try:
        entry.detector.save(path)
        if entry.path is None:
            hosting.keep_within_quota(session_dir(), path)
    except (CainnflowError, OSError):
        return None
    if entry.path is None:  # the stored evaluation now belongs to this file
        with contextlib.suppress(OSError, ValueError, AttributeError):
            doc = json.loads((session_dir() / EVAL_FILE).read_text())
            if doc.get("model") is None:
                _write_json(session_dir() / EVAL_FILE, {**doc, "model": path.name})
    entry.path = path
    _write_session_file()
    return path


def _remember_fields() -> None:
    """Writes the form fields a reload brings back, when they changed since the last run."""
    fields = {
        key: st.session_state[key]
        for key in REMEMBERED_FIELDS
        if isinstance(st.session_state.get(key), str) and len(st.session_state[key]) <= MAX_FIELD_CHARS
    }
    if fields == st.session_state.get(FIELDS_WRITTEN):
        return
    st.session_state[FIELDS_WRITTEN] = fields
    with contextlib.suppress(OSError):
        _write_json(session_dir() / FIELDS_FILE, fields)


def _restore_fields() -> None:
    try:
        fields = json.loads((session_dir() / FIELDS_FILE).read_text())
    except (OSError, ValueError):
        return
    if not isinstance(fields, dict):
        return
    for key in REMEMBERED_FIELDS:
        value = fields.get(key)
        if isinstance(value, str) and len(value) <= MAX_FIELD_CHARS:
            st.session_state[key] = value
    st.session_state[FIELDS_WRITTEN] = {k: v for k, v in fields.items() if k in REMEMBERED_FIELDS}


def model_data_ref(detector: Detector) -> DataRef | None:
    """The dataset a model was trained on, as recorded in its checkpoint."""
    return DataRef.from_dict(detector.info.get("dataset"))


def data_mismatch() -> str | None:
    """A warning when the current model was trained on other data than the current data."""
    model, data = current_model(), current_data()
    if model is None or data is None or data.ref is None:
        return None
    trained = model_data_ref(model.detector)
    category = model.detector.info.get("category")
    if trained is not None:
        same = (trained.source, trained.root, trained.category) == (
            data.ref.source,
            data.ref.root,
            data.ref.category,
        )
        what = trained.describe()
    elif isinstance(category, str) and category:
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
    detector = loaders.load_demo_detector(st.session_state.get(DEVICE_CHOICE, "auto"))
    if detector is None:
        return
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
    job = st.session_state.get(TRAIN_JOB)
    detector = job.take_detector() if job is not None else None
    if detector is None:
        return None
    origin = f"trained on {job.label}" if job.label else "trained here"
    return set_model(detector, origin=origin, path=job.saved_path)


def upload_store() -> dict[str, bytes]:
    """Images uploaded in this session (name → downscaled bytes), shared by every page."""
    return get(UPLOADS)


def _uploads_index() -> Path:
    return session_dir() / UPLOADED_IMAGES / UPLOADS_INDEX


def keep_upload(name: str, data: bytes) -> None:
    """Adds an uploaded image to the session: in memory and in its folder (a reload restores it).

    Raises:
        DataError: the session's storage is full.
    """
    store = upload_store()
    folder = session_dir() / UPLOADED_IMAGES
    hosting.require_room(session_dir(), len(data))
    folder.mkdir(mode=0o700, exist_ok=True)
    file = f"{len(store):04d}_{secrets.token_hex(4)}.img"
    (folder / file).write_bytes(data)
    store[name] = data
    index = _read_uploads_index()
    index.append([name, file])
    _write_json(_uploads_index(), index)


def forget_uploads() -> None:
    """Drops this session's uploaded images (memory and folder)."""
    upload_store().clear()
    shutil.rmtree(session_dir() / UPLOADED_IMAGES, ignore_errors=True)


def _read_uploads_index() -> list[list[str]]:
    try:
        index = json.loads(_uploads_index().read_text())
    except (OSError, ValueError):
        return []
    if not isinstance(index, list):
        return []
    return [
        [name, file]
        for name, file in (e for e in index if isinstance(e, list) and len(e) == 2)
        if isinstance(name, str)
        and len(name) <= MAX_UPLOAD_NAME
        and isinstance(file, str)
        and _FILE_RE.match(file)
    ]


def _restore_uploads() -> int:
    """Brings this session's uploaded images back after a reload; returns how many."""
    store = st.session_state[UPLOADS]
    folder = session_dir() / UPLOADED_IMAGES
    for name, file in _read_uploads_index():
        path = folder / file
        if path.is_file() and not path.is_symlink() and path.stat().st_size <= MAX_UPLOAD_BYTES:
            store.setdefault(name, path.read_bytes())
    return len(store)


def _write_json(path: Path, doc: object) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc))
    os.replace(tmp, path)
