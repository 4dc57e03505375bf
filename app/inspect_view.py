"""UI pieces of the Inspect page: choose images, the results panel, and batch inspection.

Scoring goes through :func:`app.display.score_images` (the library's ``Detector.predict``
with a per-session cache); this module only lays out pictures, sliders and downloads.
"""

from __future__ import annotations

import io
import secrets
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd
import streamlit as st
from PIL import Image

from cainnflow.data import Sample, find_images, read_image
from cainnflow.errors import CainnflowError

from . import display, feedback_view, hosting, jobs, keys, loaders, session_store, state

__all__ = ["BatchResult", "batch_panel", "choose_images", "results_panel", "score_batch"]

GALLERY_COLUMNS = 4
DEFAULT_PICKS_PER_TYPE = 1
MAX_DEFAULT_PICKS = 5
THRESHOLD_STEPS = 200
THRESHOLD_HEADROOM = 0.5  # the slider reaches this much past the colour range, in units of the range
SORTS = {"score_desc": "score, highest first", "score_asc": "score, lowest first", "name": "name"}
MAX_BATCH_IMAGES = 200
BATCH_CHUNK = 8


def _default_picks(samples: tuple[Sample, ...]) -> list[int]:
    """A few test images to start with: the first of each type (good first)."""
    picks: list[int] = []
    counts: dict[str, int] = {}
    for i, sample in enumerate(samples):
        if counts.get(sample.defect_type, 0) < DEFAULT_PICKS_PER_TYPE:
            counts[sample.defect_type] = counts.get(sample.defect_type, 0) + 1
            picks.append(i)
    return picks[:MAX_DEFAULT_PICKS]


def choose_images(data: state.DataEntry | None) -> list[display.ImageInput]:
    """The picked test images of ``data`` (the current data) plus this session's uploaded images.

    Picks come first, so an upload of a dataset image is shown with its ground truth.
    """
    left, right = st.columns(2, gap="large")
    with left:
        uploaded = display.uploaded_images(keys.K_INSPECT_UPLOADS)
    if data is None or not data.data.test:
        right.caption("Choose a dataset with a test split on **Train / load** to pick test images here.")
        return uploaded
    inputs: list[display.ImageInput] = []
    samples = data.data.test
    picked = right.multiselect(
        f"Test images of {data.ref.describe()}",
        range(len(samples)),
        default=_default_picks(samples),
        format_func=lambda i: f"{samples[i].defect_type} · {samples[i].path.name}",
        key=f"inspect_pick_{data.source}_{data.root}_{data.data.name}",
        persist_state="session",
    )
    for i in picked:
        s = samples[i]
        try:
            inputs.append(
                display.ImageInput.from_path(
                    s.path, defect_type=s.defect_type, label=s.label, mask_path=s.mask_path
                )
            )
        except OSError:
            st.warning(f"Could not read {s.path.name}.")
    return inputs + uploaded


def _label(item: display.ScoredImage) -> str:
    known = item.input.defect_type
    return item.input.name if known is None else f"{item.input.name} ({known})"


def _verdict_badge(score: float, threshold: float) -> None:
    if display.verdict(score, threshold) == display.ANOMALOUS:
        st.badge("anomalous", icon=":material/warning:", color="red")
    else:
        st.badge("good", icon=":material/check:", color="green")


@dataclass(frozen=True)
class Thresholds:
    """The image threshold (verdict) and the pixel threshold (outlined region) of the page."""

    image: float
    pixel: float


def _detail(
    item: display.ScoredImage, entry: state.ModelEntry, alpha: float, limits: Thresholds, show_gt: bool
) -> None:
    detector = entry.detector
    gt = item.gt_mask(detector.config.image_size) if show_gt else None
    st.markdown(f"#### {_label(item)}")
    c_img, c_map, c_info = st.columns(3)  # the info column keeps its labels whole at 1000 px
    c_img.image(display.display_image(item.image, detector), caption="input", width="stretch")
    overlay = display.render_overlay(
        item.image, item.amap, detector, alpha=alpha, threshold=limits.pixel, gt_mask=gt
    )
    caption = "anomaly map · white: map ≥ pixel threshold" + (
        " · green: ground truth" if gt is not None else ""
    )
    c_map.image(overlay, caption=caption, width="stretch")
    with c_info:
        _verdict_badge(item.score, limits.image)
        st.metric("Image score", f"{item.score:.4g}", help=display.score_help(detector))
        z = display.normalized_score(detector, item.score)
        if z is not None:
            st.metric(
                "Normalized score", f"{z:+.1f} σ", help="Standard deviations above the mean normal score."
            )
        st.caption(f"{100 * float(np.mean(item.amap >= limits.pixel)):.2f} % of pixels ≥ pixel threshold")
        if item.input.label is not None:
            st.caption(f"Ground truth: **{item.input.defect_type}**")
        st.download_button(
            "Heatmap PNG",
            data=hosting.png_bytes(overlay),
            file_name=f"{Path(item.input.name).stem}_heatmap.png",
            mime="image/png",
            icon=":material/download:",
            on_click="ignore",
            key=f"inspect_png_{item.key}",
        )
        source = "upload" if item.input.defect_type is None else "dataset"
        feedback_view.mark_buttons(entry, item.input.name, item.input.data, item.score, source, key=item.key)


def _show_detail(digest: str) -> None:
    st.session_state[keys.K_DETAIL] = digest


def _gallery(
    items: list[display.ScoredImage], entry: state.ModelEntry, alpha: float, limits: Thresholds
) -> None:
    for start in range(0, len(items), GALLERY_COLUMNS):
        columns = st.columns(GALLERY_COLUMNS)
        for column, item in zip(columns, items[start : start + GALLERY_COLUMNS], strict=False):
            with column:
                overlay = display.render_overlay(
                    item.image, item.amap, entry.detector, alpha=alpha, threshold=limits.pixel
                )
                st.image(overlay, width="stretch")
                verdict = display.verdict(item.score, limits.image)
                mark = ":red[**anomalous**]" if verdict == display.ANOMALOUS else ":green[good]"
                st.markdown(f"{_label(item)}  \nscore **{item.score:.4g}** · {mark}")
                st.button(
                    "Details",
                    key=f"inspect_detail_btn_{item.key}",
                    on_click=_show_detail,
                    args=(item.key,),
                    type="tertiary",
                    icon=":material/zoom_in:",
                )


VMAX_WORDS = {True: "largest normal pixel or threshold", False: "largest normal pixel"}


def _threshold_controls(entry: state.ModelEntry) -> tuple[float, Thresholds, bool, str]:
    detector = entry.detector
    vmin, vmax = display.color_range(detector)
    image_default = detector.threshold if detector.threshold is not None else vmax
    pixel_default = float(detector.stats.pixel_max) if detector.stats is not None else image_default
    upper = max(vmax + THRESHOLD_HEADROOM * (vmax - vmin), image_default, pixel_default)
    step = (upper - vmin) / THRESHOLD_STEPS
    c1, c2, c3 = st.columns([2, 3, 3], vertical_alignment="bottom")
    alpha = c1.slider("Heatmap opacity", 0.0, 1.0, 0.5, 0.05, key="inspect_alpha")
    image_thr = c2.slider(
        "Image threshold (verdict)",
        float(vmin),
        float(upper),
        float(image_default),
        step,
        format="%.4g",
        key=f"{keys.K_INSPECT_THRESHOLD}{entry.version}",
        help="An image is anomalous when its image score reaches this. Starts at the model's "
        "threshold; store a new one on **Evaluate & threshold**.",
    )
    pixel_thr = c3.slider(
        "Pixel threshold (outlined region)",
        float(vmin),
        float(upper),
        float(pixel_default),
        step,
        format="%.4g",
        key=f"inspect_pixel_threshold_{entry.version}",
        help="Outlines the pixels whose map value reaches this (segmentation). It starts at the largest map "
        "value seen on the validation normals, so a normal image has (almost) nothing outlined.",
    )
    c1, c2, c3 = st.columns([2, 3, 3], vertical_alignment="bottom")  # bar clear of the slider's labels
    show_gt = c1.toggle("Ground truth", value=True, key="inspect_show_gt")  # outlined in green
    order = c2.selectbox("Sort by", list(SORTS), format_func=SORTS.get, key="inspect_sort")
    with c3:  # the bar spans the sliders' range, so a threshold's colour sits right below it
        st.space("small")  # clear of the slider's min / max labels, which show on hover
        st.image(display.color_bar(detector, upper, marker=pixel_thr, ticks=True), width="stretch")
        st.caption(
            f"Map colours over the sliders' range {vmin:.4g} → {upper:.4g}: {vmin:.4g} is the median normal "
            f"pixel, dark red from {vmax:.4g} ({VMAX_WORDS[display.score_is_map_max(detector)]}) up; "
            "▲ pixel threshold"
        )
    return alpha, Thresholds(image_thr, pixel_thr), show_gt, order


@st.fragment
def results_panel(items: list[display.ScoredImage], entry: state.ModelEntry) -> None:
    """Sliders and pictures; reruns alone, so moving a slider never scores again."""
    alpha, limits, show_gt, order = _threshold_controls(entry)
    if order == "name":
        items = sorted(items, key=lambda it: it.input.name)
    else:
        items = sorted(items, key=lambda it: it.score, reverse=order == "score_desc")
    n_bad = sum(display.verdict(it.score, limits.image) == display.ANOMALOUS for it in items)
    st.markdown(f"**{len(items)}** image(s) scored · **{n_bad}** anomalous at threshold {limits.image:.4g}")
    feedback_view.summary_panel(entry, [it.score for it in items], key="images", where="on this page")
    same = [f"{it.input.name} = {it.same_as}" for it in items if it.same_as]
    if same:
        st.caption("Same image under two names (scored once, shown under both): " + "; ".join(same[:6]))
    if len(items) == 1:
        _detail(items[0], entry, alpha, limits, show_gt)
        return
    item_keys = [it.key for it in items]
    if st.session_state.get(keys.K_DETAIL) not in item_keys:
        st.session_state[keys.K_DETAIL] = item_keys[0]
    chosen = st.selectbox(
        "Detail view", item_keys, format_func=lambda k: _label(items[item_keys.index(k)]), key=keys.K_DETAIL
    )
    with st.container(border=True):
        _detail(items[item_keys.index(chosen)], entry, alpha, limits, show_gt)
    st.markdown("##### Gallery")
    _gallery(items, entry, alpha, limits)


# --------------------------------------------------------------------------- batch inspection


@dataclass(frozen=True)
class BatchResult:
    """A batch run: one row per image, the CSV report and a zip of heatmap PNGs."""

    table: pd.DataFrame
    csv: bytes
    heatmaps_zip: bytes
    problems: tuple[str, ...]
    model_version: int


def _heatmap_name(name: str) -> str:
    """``a/x.png`` → ``a/x_heatmap.png``: the folders of a batch name are kept."""
    path = PurePosixPath(name)
    return str(path.with_name(f"{path.stem}_heatmap.png"))


def score_batch(entry: state.ModelEntry, named: list[tuple[str, bytes | Path]], progress=None) -> BatchResult:
    """Scores images in chunks, streaming: each is read (through the decode guard, at most
    :data:`app.hosting.KEEP_SIDE` wide) only when its chunk is scored, and a heatmap PNG per
    image goes into a zip as it goes (no maps kept)."""
    detector = entry.detector
    rows: list[dict] = []
    problems: list[str] = []
    buffer = io.BytesIO()
    threshold = detector.threshold
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        for start in range(0, len(named), BATCH_CHUNK):
            chunk: list[tuple[str, Image.Image]] = []
            for name, source in named[start : start + BATCH_CHUNK]:
                try:
                    image = read_image(
                        source, name=name, max_side=hosting.KEEP_SIDE, max_pixels=hosting.MAX_UPLOAD_PIXELS
                    )
                except CainnflowError as exc:
                    problems.append(str(exc))
                    continue
                chunk.append((name, image))
            if chunk:
                prediction = detector.predict([image for _, image in chunk])
                for (name, image), amap, score in zip(chunk, prediction.maps, prediction.scores, strict=True):
                    overlay = display.render_overlay(image, amap, detector, threshold=threshold)
                    archive.writestr(_heatmap_name(name), hosting.png_bytes(overlay))
                    rows.append(
                        {
                            "image": name,
                            "score": float(score),
                            "normalized (σ)": display.normalized_score(detector, float(score)),
                            "verdict": display.verdict(float(score), threshold),
                        }
                    )
            if progress is not None:
                progress(min(start + BATCH_CHUNK, len(named)), len(named))
    table = pd.DataFrame(rows, columns=["image", "score", "normalized (σ)", "verdict"])
    return BatchResult(
        table, table.to_csv(index=False).encode(), buffer.getvalue(), tuple(problems), entry.version
    )


def _unique_names(named: list[tuple[str, bytes | Path]]) -> list[tuple[str, bytes | Path]]:
    """Names made unique (``x.png``, ``x (2).png``) so rows and heatmaps can be told apart."""
    seen: set[str] = set()
    out = []
    for name, source in named:
        candidate, n = name, 2
        while candidate in seen:
            path = PurePosixPath(name)
            candidate, n = str(path.with_name(f"{path.stem} ({n}){path.suffix}")), n + 1
        seen.add(candidate)
        out.append((candidate, source))
    return out


def _unpacked_zip(file) -> tuple[list[tuple[str, Path]], list[str]]:
    """A batch zip unpacked once per upload into the session's folder: (name, path) per image,
    named by its path inside the zip, and the members skipped (not images)."""
    unpacked: dict[str, tuple[Path, list[tuple[str, Path]], list[str]]] = st.session_state.setdefault(
        keys.K_BATCH_UNPACKED, {}
    )
    if file.file_id not in unpacked:
        session = session_store.session_dir()
        staging = session / session_store.BATCH_DIR / secrets.token_urlsafe(6)
        skipped: list[str] = []
        written = hosting.extract_zip(
            file.getvalue(), staging, room=hosting.session_room(session), skipped=skipped
        )
        named = [(p.relative_to(staging).as_posix(), p) for p in sorted(written)]
        unpacked[file.file_id] = (staging, named, skipped)
    _, named, skipped = unpacked[file.file_id]
    return named, skipped


def _drop_unpacked(keep: set[str]) -> None:
    """Removes unpacked batch zips whose upload is gone from the widget."""
    unpacked = st.session_state.get(keys.K_BATCH_UNPACKED) or {}
    for file_id in [f for f in unpacked if f not in keep]:
        shutil.rmtree(unpacked.pop(file_id)[0], ignore_errors=True)


def _batch_inputs(mode: str) -> list[tuple[str, bytes | Path]] | None:
    if mode == "server":
        folder = st.text_input(
            "Server folder with images", key=keys.K_BATCH_FOLDER, persist_state="session"
        ).strip()
        if hosting.allowed_roots(loaders.app_home()) is not None:
            st.caption("Server folders are limited to the data folders this app is allowed to read.")
        if not folder:
            return None
        try:
            paths = find_images(hosting.allowed_path(folder, loaders.app_home()))
        except CainnflowError as exc:
            st.error(str(exc))
            return None
        return [(p.name, p) for p in paths]
    files = st.file_uploader(
        "A zip of images, or several images",
        type=["zip", *display.UPLOAD_IMAGE_TYPES],
        accept_multiple_files=True,
        key="inspect_batch_upload",
    )
    _drop_unpacked({f.file_id for f in files or []})
    if not files:
        return None
    named: list[tuple[str, bytes | Path]] = []
    zips = [f for f in files if f.name.lower().endswith(".zip")]
    for file in files:
        if file not in zips:
            named.append((file.name, file.getvalue()))
            continue
        try:
            images, skipped = _unpacked_zip(file)
        except CainnflowError as exc:
            st.error(f"{file.name}: {exc}")
            continue
        prefix = f"{Path(file.name).stem}/" if len(zips) > 1 else ""
        named.extend((prefix + name, path) for name, path in images)
        if skipped:
            st.caption(
                f"{file.name}: {len(skipped)} file(s) that are not images left out: "
                + ", ".join(skipped[:5])
                + (" …" if len(skipped) > 5 else "")
            )
    return _unique_names(named)


def batch_panel(entry: state.ModelEntry) -> None:
    """Score a whole folder or zip: a table, a CSV report and a zip of heatmaps."""
    mode = st.radio(
        "Images from",
        ["upload", "server"],
        format_func={"upload": "a zip or several files", "server": "a server folder"}.get,
        horizontal=True,
        key="inspect_batch_mode",
    )
    named = _batch_inputs(mode)
    if named is not None and not named:
        st.warning("No images found there.")
    elif named:
        if len(named) > MAX_BATCH_IMAGES:
            st.warning(f"{len(named)} images: the first {MAX_BATCH_IMAGES} are scored.")
            named = named[:MAX_BATCH_IMAGES]
        if st.button(
            f"Score {len(named)} image(s)",
            type="primary",
            icon=":material/play_arrow:",
            key="inspect_batch_go",
        ):
            bar = st.progress(0.0, text="Scoring…")
            try:
                with jobs.batch_slot():  # a batch takes one of the server's job slots
                    result = score_batch(
                        entry,
                        named,
                        progress=lambda done, total: bar.progress(
                            done / total, text=f"Scoring… {done}/{total}"
                        ),
                    )
            except CainnflowError as exc:
                st.error(f"Batch not scored: {exc}")
            else:
                st.session_state[keys.K_BATCH] = result
            bar.empty()
    result: BatchResult | None = st.session_state.get(keys.K_BATCH)
    if result is None or result.model_version != entry.version:
        return
    for problem in result.problems:
        st.warning(f"Skipped an image: {problem}", icon=":material/broken_image:")
    threshold = entry.detector.threshold  # the verdicts follow the threshold (feedback moves it)
    table = result.table.assign(verdict=[display.verdict(s, threshold) for s in result.table["score"]])
    n_bad = int((table["verdict"] == display.ANOMALOUS).sum())
    at = "" if threshold is None else f" {threshold:.4g}"
    st.markdown(f"**{len(table)}** image(s) scored · **{n_bad}** anomalous at the model's threshold{at}")
    st.dataframe(
        table,
        hide_index=True,
        column_config={
            "score": st.column_config.NumberColumn(format="%.4g"),
            "normalized (σ)": st.column_config.NumberColumn(format="%+.1f"),
        },
    )
    downloads = st.container(horizontal=True)  # side by side at the left, whatever the width
    downloads.download_button(
        "CSV report",
        result.csv,
        "cainnflow_report.csv",
        "text/csv",
        icon=":material/table:",
        on_click="ignore",
    )
    downloads.download_button(
        "Heatmaps (zip)",
        result.heatmaps_zip,
        "cainnflow_heatmaps.zip",
        "application/zip",
        icon=":material/folder_zip:",
        on_click="ignore",
    )
    feedback_view.batch_marks(entry, table, dict(named or []))
    feedback_view.summary_panel(entry, list(table["score"]), key="batch", where="in this batch")
