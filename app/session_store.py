"""The session's own folder and what it keeps on disk, so that a reload brings the work back.

Each browser session gets an unguessable token, kept in the URL (``?s=<token>``) and naming
its folder ``<app home>/sessions/<token>/``. Every model the session trains or loads is saved
there under a unique name, together with ``session.json`` (the current model and data), the
last evaluation (arrays in an ``.npz``, never a pickle), the form fields and the uploaded
images. Another session cannot open the folder without the token, and the app never lists
other sessions' folders.

This module reads and writes those files; :mod:`app.state` decides what becomes current.
No PyTorch import here.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import streamlit as st

from cainnflow.data import CategoryData
from cainnflow.errors import CainnflowError
from cainnflow.record import DataReference

from . import hosting, keys, loaders

if TYPE_CHECKING:
    from cainnflow.evaluation import EvaluationResult

__all__ = [
    "DataRef",
    "adopt_evaluation",
    "clear_batch_folder",
    "feedback_image",
    "forget_uploads",
    "keep_feedback_image",
    "keep_upload",
    "load_evaluation",
    "parse_data_ref",
    "read_session_file",
    "remember_fields",
    "restore_fields",
    "restore_uploads",
    "save_evaluation",
    "session_dir",
    "session_file",
    "session_token",
    "write_json",
    "write_session_file",
]

EVAL_FILE = "evaluation.json"
EVAL_ARRAYS = "evaluation.npz"
FIELDS_FILE = "fields.json"
MAX_FIELD_CHARS = 4096
UPLOADED_IMAGES = "images"  # the session's uploaded images (folder), with their index
BATCH_DIR = "batch"  # batch zips unpacked while Inspect scores them (app.inspect_view)
UPLOADS_INDEX = "index.json"
FEEDBACK_DIR = "feedback"  # images an operator marked, <sha256>.png (app.feedback_view)
MAX_UPLOAD_NAME = 300
MAX_UPLOAD_BYTES = 64 * 1024**2
URL_PARAM = "s"
SESSION_FILE = "session.json"
_TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{22,64}$")
_FILE_RE = re.compile(r"^[A-Za-z0-9._-]{1,100}$")


DataRef = DataReference
"""Where a dataset comes from, enough to open it again (saved in checkpoints and sessions):
:class:`cainnflow.record.DataReference` (``source`` demo / mvtec / custom / upload, ``root``,
``category``, a custom set's ``test_good`` / ``defect`` / ``masks`` folders)."""


def parse_data_ref(raw: object) -> DataRef | None:
    """A data reference the app recorded (session file, checkpoint); None if absent, malformed or not the app's."""
    try:
        ref = DataReference.from_dict(raw)
    except ValueError:
        return None
    return ref if ref.reopenable else None


# ----------------------------------------------------------------- token and folder


def _valid_token(token: object) -> bool:
    return isinstance(token, str) and bool(_TOKEN_RE.match(token))


def session_token() -> str:
    """This session's token: from session state, else the URL (a reload), else a new one."""
    token = st.session_state.get(keys.TOKEN)
    if not _valid_token(token):
        from_url = st.query_params.get(URL_PARAM)
        if _valid_token(from_url) and (loaders.sessions_dir() / from_url).is_dir():
            token = from_url
        else:
            token = secrets.token_urlsafe(24)
        st.session_state[keys.TOKEN] = token
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


def session_file(name: object) -> Path | None:
    """A file of this session by its bare name, or None (a path, an odd name, or no such file)."""
    if isinstance(name, str) and _FILE_RE.match(name) and (session_dir() / name).is_file():
        return session_dir() / name
    return None


def write_json(path: Path, doc: object) -> None:
    """Writes ``doc`` as JSON atomically (a reader never sees half a file)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc))
    os.replace(tmp, path)


# ----------------------------------------------------------------- current model and data


def write_session_file(model: tuple[str | None, str] | None, data: DataRef | None) -> None:
    """Records the current model (``(file name or None for the demo model, origin)``) and data."""
    doc: dict[str, Any] = {}
    if model is not None:
        doc["model"] = {"file": model[0], "origin": model[1]}
    if data is not None:
        doc["data"] = data.to_dict()
    write_json(session_dir() / SESSION_FILE, doc)


def read_session_file() -> tuple[dict[str, Any], DataRef | None]:
    """The recorded model (``{"file", "origin"}``, empty when none) and data of the last visit."""
    path = session_dir() / SESSION_FILE
    try:
        doc = json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):
        doc = {}
    if not isinstance(doc, dict):
        doc = {}
    model = doc.get("model") if isinstance(doc.get("model"), dict) else {}
    return model, parse_data_ref(doc.get("data"))


# ----------------------------------------------------------------- the last evaluation


def save_evaluation(result: EvaluationResult, model_file: str | None, ref: DataRef) -> None:
    """Keeps ``result`` (of the model in ``model_file``, None: the demo model, on ``ref``)."""
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
        "model": model_file,
        "data": ref.to_dict(),
        "threshold": result.threshold,
        "ms_per_image": result.ms_per_image,
    }
    write_json(folder / EVAL_FILE, doc)


def load_evaluation(model_file: str | None, ref: DataRef, data: CategoryData) -> EvaluationResult | None:
    """The kept evaluation when it belongs to this model file and data; else None."""
    from cainnflow.evaluation import evaluation_result

    folder = session_dir()
    if not (folder / EVAL_FILE).is_file():
        return None
    try:
        doc = json.loads((folder / EVAL_FILE).read_text())
        same = (
            isinstance(doc, dict)
            and doc.get("model") == model_file
            and parse_data_ref(doc.get("data")) == ref
        )
        if not same:
            return None
        with np.load(folder / EVAL_ARRAYS, allow_pickle=False) as arrays:
            maps, scores = arrays["maps"], arrays["scores"]
            masks, has_mask = arrays["masks"].astype(bool), arrays["has_mask"].astype(bool)
        n = len(data.test)
        if maps.ndim != 3 or maps.shape[0] != n or scores.shape != (n,) or masks.shape != maps.shape:
            return None
        threshold = float(doc["threshold"])
        elapsed = float(doc.get("ms_per_image", 0.0)) * n / 1000.0
        return evaluation_result(data, maps, scores, masks, has_mask, threshold, elapsed)
    except (OSError, ValueError, KeyError, TypeError, CainnflowError):
        return None


def adopt_evaluation(model_file: str) -> None:
    """The kept evaluation of the demo model (no file) now belongs to ``model_file``."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        doc = json.loads((session_dir() / EVAL_FILE).read_text())
        if doc.get("model") is None:
            write_json(session_dir() / EVAL_FILE, {**doc, "model": model_file})


# ----------------------------------------------------------------- form fields


def remember_fields() -> None:
    """Writes the form fields a reload brings back, when they changed since the last run."""
    fields = {
        key: st.session_state[key]
        for key in keys.REMEMBERED_FIELDS
        if isinstance(st.session_state.get(key), str) and len(st.session_state[key]) <= MAX_FIELD_CHARS
    }
    if fields == st.session_state.get(keys.FIELDS_WRITTEN):
        return
    st.session_state[keys.FIELDS_WRITTEN] = fields
    with contextlib.suppress(OSError):
        write_json(session_dir() / FIELDS_FILE, fields)


def restore_fields() -> None:
    try:
        fields = json.loads((session_dir() / FIELDS_FILE).read_text())
    except (OSError, ValueError):
        return
    if not isinstance(fields, dict):
        return
    for key in keys.REMEMBERED_FIELDS:
        value = fields.get(key)
        if isinstance(value, str) and len(value) <= MAX_FIELD_CHARS:
            st.session_state[key] = value
    st.session_state[keys.FIELDS_WRITTEN] = {k: v for k, v in fields.items() if k in keys.REMEMBERED_FIELDS}


# ----------------------------------------------------------------- uploaded images


def _uploads() -> dict[str, bytes]:
    return st.session_state.setdefault(keys.UPLOADS, {})


def _uploads_index() -> Path:
    return session_dir() / UPLOADED_IMAGES / UPLOADS_INDEX


def keep_upload(name: str, data: bytes) -> None:
    """Adds an uploaded image to the session: in memory and in its folder (a reload restores it).

    Raises:
        DataError: the session's storage is full.
    """
    store = _uploads()
    folder = session_dir() / UPLOADED_IMAGES
    hosting.require_room(session_dir(), len(data))
    folder.mkdir(mode=0o700, exist_ok=True)
    file = f"{len(store):04d}_{secrets.token_hex(4)}.img"
    (folder / file).write_bytes(data)
    store[name] = data
    index = _read_uploads_index()
    index.append([name, file])
    write_json(_uploads_index(), index)


def forget_uploads() -> None:
    """Drops this session's uploaded images (memory and folder)."""
    _uploads().clear()
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


def restore_uploads() -> int:
    """Brings this session's uploaded images back after a reload; returns how many."""
    store = _uploads()
    folder = session_dir() / UPLOADED_IMAGES
    for name, file in _read_uploads_index():
        path = folder / file
        if path.is_file() and not path.is_symlink() and path.stat().st_size <= MAX_UPLOAD_BYTES:
            store.setdefault(name, path.read_bytes())
    return len(store)


def clear_batch_folder() -> None:
    """Removes batch zips unpacked by an earlier page of this session."""
    shutil.rmtree(session_dir() / BATCH_DIR, ignore_errors=True)


# ----------------------------------------------------------------- images marked on Inspect

_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


def keep_feedback_image(sha256: str, png: bytes) -> Path:
    """Keeps an image an operator marked as ``feedback/<sha256>.png`` (a retraining reads it).

    Raises:
        DataError: the session's storage is full.
        ValueError: ``sha256`` is not a content hash.
    """
    if not _SHA256_RE.match(sha256):
        raise ValueError("not a content hash")
    folder = session_dir() / FEEDBACK_DIR
    path = folder / f"{sha256}.png"
    if not path.is_file():
        hosting.require_room(session_dir(), len(png))
        folder.mkdir(mode=0o700, exist_ok=True)
        path.write_bytes(png)
    return path


def feedback_image(sha256: str) -> Path | None:
    """The kept marked image of this content hash, or None."""
    if not isinstance(sha256, str) or not _SHA256_RE.match(sha256):
        return None
    path = session_dir() / FEEDBACK_DIR / f"{sha256}.png"
    return path if path.is_file() and not path.is_symlink() else None
