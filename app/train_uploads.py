"""Train / load, data from uploads: images or a zip placed in this session's folder (MVTec layout)."""

from __future__ import annotations

import secrets
import shutil
from pathlib import Path

import streamlit as st

from cainnflow.data import find_images
from cainnflow.errors import CainnflowError, DataError

from . import display, hosting, keys, loaders, session_store
from .session_store import DataRef

__all__ = ["store_upload", "upload_data_panel"]

DATA_UPLOAD_TYPES = ("zip", *display.UPLOAD_IMAGE_TYPES)
MAX_DATA_UPLOAD_FILES = 500
UPLOAD_ID_BYTES = 9


def upload_data_panel() -> DataRef | None:
    """Upload images or a zip; returns the stored upload's DataRef once it is ready (else None)."""
    st.caption(
        "Good images as files or a **.zip**; a zip in the MVTec layout (`train/good`, optional "
        "`test/<type>` and `ground_truth/<type>/<name>_mask.png`) also gives a test split with masks."
    )
    files = st.file_uploader(
        "Images or a zip",
        type=list(DATA_UPLOAD_TYPES),
        accept_multiple_files=True,
        key=keys.K_DATA_UPLOAD,
    )
    name = st.text_input("Name of this dataset", value="my_data", key=keys.K_UPLOAD_NAME, max_chars=40)
    note = st.session_state.pop(keys.K_UPLOAD_NOTE, None)
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
            return None
        if skipped:
            st.session_state[keys.K_UPLOAD_NOTE] = (
                f"Left out {len(skipped)} file(s) of the zip that are not images: "
                + ", ".join(skipped[:5])
                + (" …" if len(skipped) > 5 else "")
            )
        return data_ref
    return None


def store_upload(files: list, name: str, *, skipped: list[str] | None = None) -> DataRef:
    """Writes uploaded images / zips into this session's folder as ``<id>/<name>/train/good`` (+ test).

    Raises:
        DataError: too many files, a zip over its limits, or no images at all.
    """
    if len(files) > MAX_DATA_UPLOAD_FILES:
        raise DataError(f"{len(files)} files; at most {MAX_DATA_UPLOAD_FILES} at once (or one zip)")
    category = loaders.safe_name(name, "my_data")
    upload_id = secrets.token_urlsafe(UPLOAD_ID_BYTES)
    session = session_store.session_dir()
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
    return DataRef("upload", upload_id, category)


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
