"""Inspect's live inputs: the browser's camera, and a watched folder on a line PC.

Both score through the same path as an upload (:func:`app.display.score_images`, the decode
guard of :mod:`cainnflow.image_io`) with the current model, show the verdict at the model's
threshold and offer the feedback buttons (:mod:`app.feedback_view`). The folder watch reads
the server's disk, so it exists only when the app runs locally (never with
``CAINNFLOW_HOSTED=1``): it polls the folder (:data:`WATCH_SECONDS`) and scores each image
that appears, into a running table of verdicts.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import streamlit as st

from cainnflow.data import find_images
from cainnflow.errors import CainnflowError

from . import display, feedback_view, hosting, keys, loaders, state

__all__ = ["WatchLog", "camera_panel", "poll_folder", "watch_panel"]

WATCH_SECONDS = 2.0
"""How often a watched folder is looked at."""
WATCH_BATCH = 8
"""Images scored per look (the rest wait for the next)."""
MAX_WATCH_ROWS = 500
SETTLE_SECONDS = 1.0
"""A file younger than this may still be being written: it waits for the next look."""


def _result(entry: state.ModelEntry, scored: display.ScoredImage, source: str) -> None:
    """One scored live image: input, heatmap, verdict, score and the feedback buttons."""
    detector = entry.detector
    threshold = detector.threshold
    c_img, c_map, c_info = st.columns([2, 2, 1.4])
    c_img.image(display.display_image(scored.image, detector), caption=scored.input.name, width="stretch")
    outline = detector.stats.pixel_max if detector.stats is not None else None
    overlay = display.render_overlay(scored.image, scored.amap, detector, threshold=outline)
    c_map.image(overlay, caption="anomaly map · white: map ≥ largest normal pixel", width="stretch")
    with c_info:
        if display.verdict(scored.score, threshold) == display.ANOMALOUS:
            st.badge("anomalous", icon=":material/warning:", color="red")
        else:
            st.badge("good", icon=":material/check:", color="green")
        st.metric("Image score", f"{scored.score:.4g}", help=display.score_help(detector))
        st.caption(f"threshold {threshold:.4g}" if threshold is not None else "no threshold")
        feedback_view.mark_buttons(
            entry, scored.input.name, scored.input.data, scored.score, source, key=f"{source}_{scored.digest}"
        )


def camera_panel(entry: state.ModelEntry) -> None:
    """A picture from the browser's camera, scored as soon as it is taken."""
    if not st.toggle(
        "Use the camera",
        key="inspect_camera_on",
        help="The browser asks for the camera once; nothing is recorded until you take a picture.",
    ):
        st.caption("Turn the camera on to photograph a part and score it at once with the current model.")
        return
    shot = st.camera_input("Take a picture of the part", key=keys.K_CAMERA)
    if shot is None:
        return
    try:
        data = hosting.decode_upload(shot.getvalue(), "camera.jpg")
    except CainnflowError as exc:
        st.error(f"The picture cannot be scored: {exc}")
        return
    name = f"camera_{display.file_digest(data)[:8]}.png"
    scored, problems = display.score_images(entry, [display.ImageInput(name, data)])
    for problem in problems:
        st.error(f"The picture cannot be scored: {problem}")
    if scored:
        _result(entry, scored[0], "camera")
        feedback_view.summary_panel(entry, [scored[0].score], key="camera", where="for this picture")


# --------------------------------------------------------------------------- folder watch


@dataclass
class WatchLog:
    """What a watched folder showed so far: the files seen (and their size and time) and a row
    per scored image."""

    folder: Path
    model_version: int
    seen: dict[Path, tuple[int, int]] = field(default_factory=dict)
    rows: list[dict] = field(default_factory=list)
    started: float = field(default_factory=time.time)


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        info = path.stat()
    except OSError:
        return None
    return info.st_mtime_ns, info.st_size


def poll_folder(log: WatchLog, entry: state.ModelEntry, now: float | None = None) -> int:
    """Scores the images that appeared (or changed) in the folder since the last look.

    At most :data:`WATCH_BATCH` per look, oldest first; a file younger than
    :data:`SETTLE_SECONDS` waits (it may still be being written). Returns how many were scored.
    """
    now = time.time() if now is None else now
    fresh: list[tuple[Path, tuple[int, int]]] = []
    for path in find_images(log.folder):
        stamp = _stamp(path)
        if stamp is None or log.seen.get(path) == stamp or now - stamp[0] / 1e9 < SETTLE_SECONDS:
            continue
        fresh.append((path, stamp))
    fresh.sort(key=lambda pair: pair[1][0])
    batch = fresh[:WATCH_BATCH]
    inputs = []
    for path, stamp in batch:
        log.seen[path] = stamp
        try:
            inputs.append(display.ImageInput(path.name, path.read_bytes()))
        except OSError as exc:
            log.rows.append(_row(path.name, None, f"unreadable ({type(exc).__name__})"))
    if inputs:
        scored, problems = display.score_images(entry, inputs)
        for item in scored:
            log.rows.append(_row(item.input.name, item.score, "", path=log.folder / item.input.name))
        log.rows.extend(_row("?", None, f"unreadable: {problem}") for problem in problems)
    del log.rows[:-MAX_WATCH_ROWS]
    return len(inputs)


def _row(name: str, score: float | None, note: str, path: Path | None = None) -> dict:
    return {"time": time.strftime("%H:%M:%S"), "image": name, "score": score, "note": note, "path": path}


def _watch_log(folder: Path, entry: state.ModelEntry) -> WatchLog:
    """The log of ``folder``; a new folder or model starts a new one, the images already
    there counted as seen (only new ones are scored)."""
    log: WatchLog | None = st.session_state.get(keys.K_WATCH_LOG)
    if log is None or log.folder != folder or log.model_version != entry.version:
        log = WatchLog(folder, entry.version)
        for path in find_images(folder):
            if (stamp := _stamp(path)) is not None:
                log.seen[path] = stamp
        st.session_state[keys.K_WATCH_LOG] = log
    return log


def _watch_table(log: WatchLog, entry: state.ModelEntry) -> None:
    threshold = entry.detector.threshold
    rows = [
        {
            "time": r["time"],
            "image": r["image"],
            "score": r["score"],
            "verdict": r["note"] or display.verdict(r["score"], threshold),
        }
        for r in reversed(log.rows)
    ]
    scored = [r for r in log.rows if r["score"] is not None]
    n_bad = sum(display.verdict(r["score"], threshold) == display.ANOMALOUS for r in scored)
    st.markdown(
        f"Watching **{log.folder.name or log.folder}** since {time.strftime('%H:%M:%S', time.localtime(log.started))} "
        f"· **{len(scored)}** new image(s) scored · **{n_bad}** anomalous"
        + (f" at threshold {threshold:.4g}" if threshold is not None else "")
    )
    if rows:
        st.dataframe(
            pd.DataFrame(rows, columns=["time", "image", "score", "verdict"]),
            hide_index=True,
            column_config={"score": st.column_config.NumberColumn(format="%.4g")},
            height=min(36 * (len(rows) + 1) + 2, 320),
        )
    latest = next((r for r in reversed(log.rows) if r["score"] is not None and r["path"] is not None), None)
    if latest is None:
        st.caption("No new image yet: images saved into the folder from now on are scored as they appear.")
        return
    try:
        data = latest["path"].read_bytes()
    except OSError:
        return
    scored_latest, _ = display.score_images(entry, [display.ImageInput(latest["image"], data)])
    if scored_latest:
        st.markdown("##### Latest image")
        _result(entry, scored_latest[0], "folder")


def watch_panel(entry: state.ModelEntry) -> None:
    """Local mode only: score the images saved into a folder (a line camera's output) as they appear."""
    if hosting.is_hosted():
        st.caption("Folder watch reads the server's disk, so it is only offered when the app runs locally.")
        return
    folder_text = st.text_input(
        "Folder to watch",
        key=keys.K_WATCH_FOLDER,
        placeholder="/path/to/the/line/camera/output",
        persist_state="session",
    ).strip()
    if not folder_text:
        st.caption("A folder the line camera saves into: each new image is scored with the current model.")
        return
    try:
        folder = hosting.allowed_path(folder_text, loaders.app_home())
    except CainnflowError as exc:
        st.error(str(exc))
        return
    if not folder.is_dir():
        st.error(f"{folder_text} is not a folder.")
        return
    watching = st.toggle(f"Watch (every {WATCH_SECONDS:g} s)", key=keys.K_WATCH_ON)
    log = _watch_log(folder, entry)

    def look() -> None:
        if watching:
            poll_folder(log, entry)
        _watch_table(log, entry)

    c1, _ = st.columns([1, 3])
    if c1.button("Look now", key="inspect_watch_now", icon=":material/refresh:"):
        poll_folder(log, entry)
    st.fragment(run_every=WATCH_SECONDS if watching else None)(look)()
