"""Inspect: score images with the current model and look at their anomaly maps."""

from __future__ import annotations

import numpy as np
import streamlit as st

from app import display, state
from cainnflow.data import Sample
from cainnflow.errors import CainnflowError

GALLERY_COLUMNS = 4
DEFAULT_PICKS_PER_TYPE = 1
MAX_DEFAULT_PICKS = 5
THRESHOLD_STEPS = 200
THRESHOLD_HEADROOM = 0.5  # the slider reaches this much past the colour range, in units of the range
SORTS = {"score_desc": "score, highest first", "score_asc": "score, lowest first", "name": "name"}
K_DETAIL = "inspect_detail"


def _default_picks(samples: tuple[Sample, ...]) -> list[int]:
    """A few test images to start with: the first of each type (good first)."""
    picks: list[int] = []
    counts: dict[str, int] = {}
    for i, sample in enumerate(samples):
        if counts.get(sample.defect_type, 0) < DEFAULT_PICKS_PER_TYPE:
            counts[sample.defect_type] = counts.get(sample.defect_type, 0) + 1
            picks.append(i)
    return picks[:MAX_DEFAULT_PICKS]


def choose_images() -> list[display.ImageInput]:
    """The picked test images of the current dataset plus uploaded images.

    Picks come first, so an upload of a dataset image is shown with its ground truth.
    """
    data = state.current_data()
    left, right = st.columns(2, gap="large")
    uploads = left.file_uploader(
        "Upload images",
        type=list(display.UPLOAD_IMAGE_TYPES),
        accept_multiple_files=True,
        key="inspect_uploads",
    )
    uploaded = [display.ImageInput(f.name, f.getvalue()) for f in uploads or []]
    if data is None or not data.data.test:
        right.caption("Choose a dataset with a test split on **Train / load** to pick test images here.")
        return uploaded
    inputs: list[display.ImageInput] = []
    samples = data.data.test
    picked = right.multiselect(
        f"Test images of {data.source} / {data.data.name}",
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
        except OSError as exc:
            st.warning(f"Could not read {s.path.name}: {exc}")
    return inputs + uploaded


def _label(item: display.ScoredImage) -> str:
    known = item.input.defect_type
    return item.input.name if known is None else f"{item.input.name} ({known})"


def _verdict_badge(score: float, threshold: float) -> None:
    if display.verdict(score, threshold) == display.ANOMALOUS:
        st.badge("anomalous", icon=":material/warning:", color="red")
    else:
        st.badge("good", icon=":material/check:", color="green")


def _detail(
    item: display.ScoredImage, entry: state.ModelEntry, alpha: float, threshold: float, show_gt: bool
) -> None:
    detector = entry.detector
    size = detector.config.image_size
    gt = item.gt_mask(size) if show_gt else None
    st.markdown(f"#### {_label(item)}")
    c_img, c_map, c_info = st.columns([2, 2, 1.3])
    c_img.image(display.display_image(item.image, detector), caption="input", width="stretch")
    overlay = display.render_overlay(
        item.image, item.amap, detector, alpha=alpha, threshold=threshold, gt_mask=gt
    )
    caption = "anomaly map · white: map ≥ threshold" + (" · green: ground truth" if gt is not None else "")
    c_map.image(overlay, caption=caption, width="stretch")
    with c_info:
        _verdict_badge(item.score, threshold)
        st.metric("Image score (max of map)", f"{item.score:.4g}")
        z = display.normalized_score(detector, item.score)
        if z is not None:
            st.metric(
                "Normalized score", f"{z:+.1f} σ", help="Standard deviations above the mean normal score."
            )
        st.caption(f"{100 * float(np.mean(item.amap >= threshold)):.2f} % of pixels ≥ threshold")
        if item.input.label is not None:
            st.caption(f"Ground truth: **{item.input.defect_type}**")


def _show_detail(digest: str) -> None:
    st.session_state[K_DETAIL] = digest


def _gallery(
    items: list[display.ScoredImage], entry: state.ModelEntry, alpha: float, threshold: float
) -> None:
    for start in range(0, len(items), GALLERY_COLUMNS):
        columns = st.columns(GALLERY_COLUMNS)
        for column, item in zip(columns, items[start : start + GALLERY_COLUMNS], strict=False):
            with column:
                overlay = display.render_overlay(
                    item.image, item.amap, entry.detector, alpha=alpha, threshold=threshold
                )
                st.image(overlay, width="stretch")
                verdict = display.verdict(item.score, threshold)
                mark = ":red[**anomalous**]" if verdict == display.ANOMALOUS else ":green[good]"
                st.markdown(f"{_label(item)}  \nscore **{item.score:.4g}** · {mark}")
                st.button(
                    "Details",
                    key=f"inspect_detail_btn_{item.digest}",
                    on_click=_show_detail,
                    args=(item.digest,),
                    type="tertiary",
                    icon=":material/zoom_in:",
                )


@st.fragment
def results_panel(items: list[display.ScoredImage], entry: state.ModelEntry) -> None:
    """Sliders and pictures; reruns alone, so moving a slider never scores again."""
    detector = entry.detector
    vmin, vmax = display.color_range(detector)
    default = detector.threshold if detector.threshold is not None else vmax
    upper = max(vmax + THRESHOLD_HEADROOM * (vmax - vmin), default)
    c1, c2, c3, c4 = st.columns([2, 3, 2, 2], vertical_alignment="bottom")
    alpha = c1.slider("Heatmap opacity", 0.0, 1.0, 0.5, 0.05, key="inspect_alpha")
    threshold = c2.slider(
        "Threshold (this page only)",
        float(vmin),
        float(upper),
        float(default),
        (upper - vmin) / THRESHOLD_STEPS,
        format="%.4g",
        key=f"inspect_threshold_{entry.version}",
        help="Starts at the model's threshold; set the model's own threshold on **Evaluate & threshold**.",
    )
    show_gt = c3.toggle("Ground-truth outline", value=True, key="inspect_show_gt")
    order = c4.selectbox("Sort by", list(SORTS), format_func=SORTS.get, key="inspect_sort")
    st.caption(
        f"Colours use the model's fixed scale {vmin:.4g} (median normal pixel) … {vmax:.4g} "
        "(largest normal pixel or threshold), the same on every image."
    )
    if order == "name":
        items = sorted(items, key=lambda it: it.input.name)
    else:
        items = sorted(items, key=lambda it: it.score, reverse=order == "score_desc")

    n_bad = sum(display.verdict(it.score, threshold) == display.ANOMALOUS for it in items)
    st.markdown(f"**{len(items)}** image(s) scored · **{n_bad}** anomalous at threshold {threshold:.4g}")
    if len(items) == 1:
        _detail(items[0], entry, alpha, threshold, show_gt)
        return
    digests = [it.digest for it in items]
    if st.session_state.get(K_DETAIL) not in digests:
        st.session_state[K_DETAIL] = digests[0]
    chosen = st.selectbox(
        "Detail view", digests, format_func=lambda d: _label(items[digests.index(d)]), key=K_DETAIL
    )
    with st.container(border=True):
        _detail(items[digests.index(chosen)], entry, alpha, threshold, show_gt)
    st.markdown("##### Gallery")
    _gallery(items, entry, alpha, threshold)


entry = state.require_model()
st.title("Inspect")
st.caption(
    "Score images with the current model. The heatmap is the per-pixel anomaly map from the flows' likelihood "
    "(high = unlikely for a normal image); the image score is its maximum."
)
inputs = choose_images()
if not inputs:
    st.info("Upload images or pick test images to score them.")
    st.stop()
try:
    with st.spinner("Scoring…"):
        scored, problems = display.score_images(entry, inputs)
except CainnflowError as exc:
    st.error(str(exc))
    st.stop()
for problem in problems:
    st.warning(f"Skipped an image: {problem}", icon=":material/broken_image:")
if scored:
    results_panel(scored, entry)
