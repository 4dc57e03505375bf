"""UI pieces of the Latent space page (paper §4.6, figure 11).

An image's forward pass (features, latents, anomaly map, colourings) is computed once per
(model version, image hash) and kept in session state; the panels are fragments that read
it, so selectors and sliders rerun only their own panel.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass

import numpy as np
import plotly.graph_objects as go
import streamlit as st
from PIL import Image
from torch import Tensor

from cainnflow.data import read_image
from cainnflow.errors import CainnflowError
from cainnflow.latent import (
    LatentInjection,
    PerturbationResult,
    analyse_image,
    generate_features,
    perturbation_experiment,
    random_points,
    squared_norm_maps,
)
from cainnflow.visualization import FeaturePCA

from . import figures, keys, state
from .display import ANOMALOUS, GOOD, ImageInput, file_digest, render_overlay, upload_picker, verdict
from .figures import heatmap_figure

__all__ = [
    "LatentAnalysis",
    "analyse",
    "analysed_panel",
    "inverse_panel",
    "per_scale_panel",
    "pick_image",
    "sampling_panel",
    "scale_label",
]

ROW, COL = "cf_latent_row", "cf_latent_col"  # the Row / Column number inputs
ANALYSIS_CACHE_SIZE = 6
EXPERIMENT_CACHE_SIZE = 8
DEFAULT_AMPLITUDE = 20.0  # σ of the injected noise: clearly visible on a good image
DEFAULT_EXTENT = 3.5  # radius in latent cells
MODES = ("Points (click the map)", "Rectangle", "Random points")


@dataclass(frozen=True)
class LatentAnalysis:
    """One image pushed through the model (CPU tensors, batch of one).

    Attributes:
        image: the input image.
        features: backbone features, one (1, C_i, H_i, W_i) per scale.
        z: latents, same shapes.
        amap: anomaly map (S, S); score: its image score.
        sq_norm: ‖z‖² per position, (H_i, W_i) per scale.
        pca: a colouring fitted on each scale's features (reused for perturbed / sampled maps).
    """

    image: Image.Image
    features: list[Tensor]
    z: list[Tensor]
    amap: np.ndarray
    score: float
    sq_norm: list[np.ndarray]
    pca: list[FeaturePCA]


def _lru(key: str) -> OrderedDict:
    cache = st.session_state.get(key)
    if cache is None:
        cache = st.session_state[key] = OrderedDict()
    return cache


def _remember(cache: OrderedDict, key: Hashable, value: object, size: int) -> None:
    cache[key] = value
    cache.move_to_end(key)
    while len(cache) > size:
        cache.popitem(last=False)


def scale_label(entry: state.ModelEntry, scale: int) -> str:
    c, h, w = entry.detector.model.feature_shapes[scale]
    return f"scale {scale} · {h}×{w}, {c} ch"


# --------------------------------------------------------------------------- image choice + forward pass


def pick_image(key: str, prefer_label: int = 1) -> ImageInput | None:
    """A test image of the current data or an upload; None when there is none yet.

    Args:
        key: widget key prefix.
        prefer_label: the label of the image chosen first (1: a defective one, 0: a good one).
    """
    data = state.current_data()
    samples = list(data.data.test or data.data.train) if data is not None else []
    options = (["Dataset image"] if samples else []) + ["Upload"]
    source = st.radio("Image", options, horizontal=True, key=f"{key}_source", label_visibility="collapsed")
    if source == "Upload":
        return upload_picker(f"{key}_upload")
    default = next((i for i, s in enumerate(samples) if s.label == prefer_label), 0)
    index = st.selectbox(
        f"{'Test' if data.data.test else 'Train'} image of {data.data.name}",
        range(len(samples)),
        index=default,
        format_func=lambda i: f"{samples[i].defect_type} / {samples[i].path.name}",
        key=f"{key}_index",
    )
    sample = samples[index]
    try:
        return ImageInput.from_path(
            sample.path, defect_type=sample.defect_type, label=sample.label, mask_path=sample.mask_path
        )
    except OSError:
        st.error(f"Could not read {sample.path.name}.")
        return None


def _compute(entry: state.ModelEntry, image: Image.Image) -> LatentAnalysis:
    result = analyse_image(entry.detector, image)
    return LatentAnalysis(
        image=image,
        features=result.features,
        z=result.z,
        amap=result.anomaly_map,
        score=result.score,
        sq_norm=result.squared_norms,
        pca=[FeaturePCA.fit(f[0]) for f in result.features],
    )


def analyse(entry: state.ModelEntry, item: ImageInput) -> LatentAnalysis | None:
    """The image's forward pass, cached per (model version, image bytes)."""
    cache = _lru(keys.LATENT_ANALYSES)
    key = (entry.version, file_digest(item.data))
    if key in cache:
        cache.move_to_end(key)
        return cache[key]
    try:
        image = read_image(item.data, name=item.name)
        with st.spinner("Running the backbone and the flows…"):
            analysis = _compute(entry, image)
    except CainnflowError as exc:
        st.error(str(exc))
        return None
    _remember(cache, key, analysis, ANALYSIS_CACHE_SIZE)
    return analysis


def _scale_choice(entry: state.ModelEntry, key: str) -> int:
    n = entry.detector.model.num_scales
    return st.radio("Scale", range(n), format_func=lambda s: scale_label(entry, s), horizontal=True, key=key)


# --------------------------------------------------------------------------- panels


@st.fragment
def analysed_panel(
    entry: state.ModelEntry,
    key: str,
    panel: Callable[[state.ModelEntry, LatentAnalysis], None],
    *,
    prefer_label: int = 1,
) -> None:
    """A tab: an image picker (session key ``key``), then ``panel`` on the picked image's analysis."""
    item = pick_image(key, prefer_label=prefer_label)
    analysis = analyse(entry, item) if item is not None else None
    if analysis is not None:
        panel(entry, analysis)


def per_scale_panel(entry: state.ModelEntry, analysis: LatentAnalysis) -> None:
    """‖z‖² of every scale side by side, then one scale in depth: a channel, the z distribution, PCA."""
    n = entry.detector.model.num_scales
    st.markdown("##### ‖z‖² per position, every scale (≈ C for normal features)")
    cols = st.columns(n + 1)
    with cols[0]:
        st.image(render_overlay(analysis.image, analysis.amap, entry.detector), width="stretch")
        st.caption(f"anomaly map · image score {analysis.score:.3f}")
    for scale in range(n):
        c = analysis.z[scale].shape[1]
        sq = analysis.sq_norm[scale]
        cols[scale + 1].plotly_chart(
            heatmap_figure(sq, scale_label(entry, scale), zmin=0, zmax=max(3.0 * c, float(sq.max()) * 0.6)),
            key=f"cf_latent_sqnorm_{scale}",
            config=figures.CONFIG,
        )
    st.markdown("##### One scale in depth")
    scale = _scale_choice(entry, "cf_latent_scale")
    z = analysis.z[scale][0]
    c = z.shape[0]
    channel = st.slider("Channel of z", 0, c - 1, 0, key="cf_latent_channel")
    cols = st.columns(3)
    cols[0].plotly_chart(
        heatmap_figure(
            z[channel].numpy(), f"z, channel {channel}", colorscale="RdBu_r", zmid=0, zmin=-4, zmax=4
        ),
        key="cf_latent_channel_map",
        config=figures.CONFIG,
    )
    with cols[1]:
        st.markdown("**Backbone features (PCA → RGB)**")
        st.image(analysis.pca[scale].to_rgb(analysis.features[scale][0], size=256), width="stretch")
        st.caption(f"{c} channels projected on their 3 main directions")
    cols[2].plotly_chart(figures.z_histogram(z.numpy()), key="cf_latent_hist", config=figures.CONFIG)
    left, right = st.columns([1, 2])
    left.plotly_chart(figures.qq_figure(z), key="cf_latent_qq", config=figures.CONFIG)
    right.caption(
        f"mean {float(z.mean()):+.3f} · std {float(z.std()):.3f} · mean ‖z‖²/C {float((z**2).mean()):.3f} "
        "(a perfectly normal latent gives 0, 1 and 1). Heavy tails in the QQ plot are the anomalous positions."
    )


def _add_point(scale: int, h: int, w: int) -> None:
    row = int(st.session_state.get(ROW, 0))
    col = int(st.session_state.get(COL, 0))
    points = st.session_state.setdefault(keys.LATENT_POINTS, {}).setdefault(scale, [])
    if (row, col) not in points and 0 <= row < h and 0 <= col < w:
        points.append((row, col))


def _clear_points(scale: int) -> None:
    st.session_state.setdefault(keys.LATENT_POINTS, {})[scale] = []
    st.session_state[keys.LATENT_CLICK_GEN] = st.session_state.get(keys.LATENT_CLICK_GEN, 0) + 1


GRID_TRACE = 1  # index of the clickable grid trace in the click figure


def _click_figure(values: np.ndarray) -> go.Figure:
    """The ‖z‖² map with an invisible marker on every cell, so cells can be clicked.

    Heatmaps themselves do not select. The figure must not change between clicks: Streamlit
    derives the chart's identity from its spec, and a new identity drops the selection.
    """
    h, w = values.shape
    rows, cols = np.mgrid[0:h, 0:w]
    fig = heatmap_figure(values, "‖z‖²: click cells to disturb", height=420)
    fig.add_trace(
        go.Scatter(
            x=cols.ravel(),
            y=rows.ravel(),
            mode="markers",
            marker={"size": max(4, 360 // max(h, w)), "color": "rgba(0,0,0,0)", "symbol": "square"},
            # Drawn by Plotly in the browser, so the spec (and the selection) stays the same.
            selected={"marker": {"color": "white", "opacity": 1.0}},
            unselected={"marker": {"opacity": 0.0}},
            hovertemplate="row %{y}, col %{x}<extra></extra>",
            showlegend=False,
        )
    )
    # Streamlit selects a point on click only while the drag mode is not a selection tool;
    # box selection stays available from the toolbar.
    fig.update_layout(dragmode="pan")
    return fig


def _selected_cells(event: object) -> list[tuple[int, int]]:
    """(row, col) cells selected on the click figure's grid trace."""
    if event is None:
        return []
    selection = event.get("selection") if isinstance(event, dict) else getattr(event, "selection", None)
    points = (
        selection.get("points") if isinstance(selection, dict) else getattr(selection, "points", None)
    ) or []
    cells = []
    for p in points:
        if p.get("curve_number", GRID_TRACE) == GRID_TRACE and "x" in p and "y" in p:
            cells.append((round(float(p["y"])), round(float(p["x"]))))
    return cells


def _follow_click(scale: int, clicked: list[tuple[int, int]], h: int, w: int) -> None:
    """Copies a newly clicked cell into the Row / Column inputs (before they are drawn)."""
    if not clicked:
        return
    row, col = clicked[-1]
    if st.session_state.get(keys.LATENT_LAST_CLICK) == (scale, row, col) or not (
        0 <= row < h and 0 <= col < w
    ):
        return
    st.session_state[keys.LATENT_LAST_CLICK] = (scale, row, col)
    st.session_state[ROW], st.session_state[COL] = row, col


def _injection_controls(entry: state.ModelEntry, analysis: LatentAnalysis, scale: int) -> LatentInjection:
    _, h, w = analysis.z[scale][0].shape
    a, b, c = st.columns(3)
    amplitude = a.slider("Amplitude (σ of the noise)", 0.5, 30.0, DEFAULT_AMPLITUDE, 0.5, key="cf_latent_amp")
    extent = b.slider(
        "Extent (radius in latent cells)", 0.0, 6.0, DEFAULT_EXTENT, 0.5, key="cf_latent_extent"
    )
    seed = int(c.number_input("Noise seed", 0, 10_000, 0, key="cf_latent_seed"))
    mode = st.radio("Where", MODES, horizontal=True, key="cf_latent_mode")
    if mode == MODES[1]:
        r1, r2 = st.columns(2)
        rows = r1.slider("Rows", 0, h - 1, (h // 3, h // 2), key=f"cf_latent_rect_rows_{scale}")
        cols = r2.slider("Columns", 0, w - 1, (w // 3, w // 2), key=f"cf_latent_rect_cols_{scale}")
        region = np.zeros((h, w), dtype=bool)
        region[rows[0] : rows[1] + 1, cols[0] : cols[1] + 1] = True
        return LatentInjection(scale=scale, amplitude=amplitude, extent=extent, region=region, seed=seed)
    if mode == MODES[2]:
        count = st.slider("Number of random points", 1, 20, 3, key="cf_latent_n_random")
        points = random_points(h, w, count, seed=seed)
        return LatentInjection(scale=scale, points=points, amplitude=amplitude, extent=extent, seed=seed)

    manual = st.session_state.setdefault(keys.LATENT_POINTS, {}).setdefault(scale, [])
    generation = st.session_state.get(keys.LATENT_CLICK_GEN, 0)
    chart_key = f"cf_latent_click_{scale}_{generation}"
    left, right = st.columns([3, 2])
    with left:
        event = st.plotly_chart(
            _click_figure(analysis.sq_norm[scale]),
            on_select="rerun",
            selection_mode=("points", "box"),
            key=chart_key,
            config=figures.CONFIG,
        )
    clicked = _selected_cells(event)
    _follow_click(scale, clicked, h, w)
    with right:
        st.caption(
            "Click a cell of the map (shift-click for several, or the box tool in its toolbar), or add cells by "
            "number; Row and Column follow the last click:"
        )
        r, cc = st.columns(2)
        r.number_input("Row", 0, h - 1, h // 2, key=ROW)
        cc.number_input("Column", 0, w - 1, w // 2, key=COL)
        st.button("Add point", on_click=_add_point, args=(scale, h, w), icon=":material/add:")
        st.button("Clear points", on_click=_clear_points, args=(scale,), icon=":material/delete:")
    points = tuple(dict.fromkeys([*manual, *clicked]))
    if not points:
        points = ((h // 2, w // 2),)
        right.caption("Nothing chosen yet: using the centre cell.")
    else:
        right.caption(
            f"{len(points)} cell(s): "
            + ", ".join(f"({r},{c})" for r, c in points[:8])
            + (" …" if len(points) > 8 else "")
        )
    return LatentInjection(scale=scale, points=points, amplitude=amplitude, extent=extent, seed=seed)


def _experiment(
    entry: state.ModelEntry, analysis: LatentAnalysis, injection: LatentInjection
) -> PerturbationResult:
    region = None if injection.region is None else injection.region.tobytes()
    key = (
        entry.version,
        id(analysis),
        injection.scale,
        injection.points,
        region,
        injection.amplitude,
        injection.extent,
        injection.seed,
    )
    cache = _lru(keys.LATENT_EXPERIMENTS)
    if key in cache:
        return cache[key]
    result = perturbation_experiment(entry.detector.model, analysis.features, injection, z=analysis.z)
    _remember(cache, key, result, EXPERIMENT_CACHE_SIZE)
    return result


@st.fragment
def inverse_panel(entry: state.ModelEntry, analysis: LatentAnalysis) -> None:
    """Inject noise into z, run the flow backwards, and score the generated features again."""
    scale = _scale_choice(entry, "cf_latent_inv_scale")
    injection = _injection_controls(entry, analysis, scale)
    result = _experiment(entry, analysis, injection)
    pca = analysis.pca[scale]
    sq_new = squared_norm_maps([result.z_perturbed[scale]])[0][0]
    marks = list(injection.points) if injection.region is None else None
    st.markdown("##### What the disturbed latent stands for")
    cols = st.columns(4)
    cols[0].plotly_chart(
        heatmap_figure(
            sq_new, "‖z‖² after injection", zmin=0, zmax=float(np.percentile(sq_new, 99.5)), points=marks
        ),
        key="cf_latent_inv_sq",
        config=figures.CONFIG,
    )
    cols[1].plotly_chart(
        heatmap_figure(
            result.difference[scale][0],
            "|Δ features|, channel mean",
            colorscale="Plasma",
            points=marks,
        ),
        key="cf_latent_inv_diff",
        config=figures.CONFIG,
    )
    with cols[2]:
        st.markdown("**Original features**")
        st.image(pca.to_rgb(analysis.features[scale][0], size=256), width="stretch")
    with cols[3]:
        st.markdown("**Generated features** (flow run backwards)")
        st.image(pca.to_rgb(result.features_perturbed[scale][0].cpu(), size=256), width="stretch")
        st.caption("same PCA colours as the original: what the disturbed z stands for in feature space")
    before = float(result.score_original[0])  # the model's image score, as its threshold judges it
    after = float(result.score_perturbed[0])
    a, b, c = st.columns([1, 1, 1])
    with a:
        st.markdown("**Anomaly map: original**")
        st.image(render_overlay(analysis.image, result.map_original[0], entry.detector), width="stretch")
    with b:
        st.markdown("**Anomaly map of the generated features**")
        st.image(render_overlay(analysis.image, result.map_perturbed[0], entry.detector), width="stretch")
    gain = result.map_perturbed[0] - result.map_original[0]
    peak = np.unravel_index(int(np.argmax(gain)), gain.shape)
    with c:
        _verdict(entry, before, after)
        st.metric("Image score", f"{after:.3f}", delta=f"{after - before:+.3f}", delta_color="inverse")
        st.metric(
            "Largest rise of the map",
            f"{float(gain.max()):+.3f}",
            help=f"at pixel (row {peak[0]}, col {peak[1]})",
        )
        direct = entry.detector.model.anomaly_map([t.to(entry.detector.device) for t in result.z_perturbed])
        error = float(np.abs(result.map_perturbed[0] - direct.cpu().numpy()[0]).max())
        st.caption(
            "**Invertibility check**: the generated features, forwarded again, give back the disturbed z, "
            f"so this map equals the map of the disturbed z (largest difference {error:.1e}). It lights up "
            "where the noise went in: those feature vectors are unlikely under the learned density."
        )


def _verdict(entry: state.ModelEntry, before: float, after: float) -> None:
    """The model's verdict on the generated features: score against its threshold."""
    threshold = entry.detector.threshold
    if threshold is None:
        st.caption("This model has no threshold, so there is no verdict.")
        return
    now = verdict(after, threshold)
    was = verdict(before, threshold)
    relation = "≥" if now == ANOMALOUS else "<"
    if now == ANOMALOUS:
        st.error(
            f"**{now}**: score {after:.4g} {relation} threshold {threshold:.4g}", icon=":material/warning:"
        )
    else:
        st.success(
            f"**{now}**: score {after:.4g} {relation} threshold {threshold:.4g}", icon=":material/check:"
        )
    if now == was == GOOD:
        st.caption(
            f"The injected anomaly raised the score by {after - before:+.3f}, not enough to cross the threshold: "
            "raise the amplitude or extent, or disturb more cells."
        )
    elif now != was:
        st.caption(
            f"The original image was **{was}** (score {before:.4g}): the injection changed the verdict."
        )
    else:
        st.caption(f"The original image was already **{was}** (score {before:.4g}).")


@st.fragment
def sampling_panel(entry: state.ModelEntry, analysis: LatentAnalysis) -> None:
    """Draw z ~ N(0, T²I) and invert it into feature maps."""
    a, b = st.columns(2)
    temperature = a.slider("Temperature T", 0.0, 1.5, 0.7, 0.05, key="cf_latent_temp")
    seed = int(b.number_input("Sample seed", 0, 10_000, 0, key="cf_latent_sample_seed"))
    model = entry.detector.model
    features = generate_features(model, n=1, temperature=temperature, seed=seed)
    cols = st.columns(model.num_scales)
    for scale, (col, feats) in enumerate(zip(cols, features, strict=True)):
        with col:
            st.markdown(f"**{scale_label(entry, scale)}**")
            st.image(analysis.pca[scale].to_rgb(feats[0].cpu(), size=256), width="stretch")
            st.image(analysis.pca[scale].to_rgb(analysis.features[scale][0], size=128), width=128)
            st.caption("generated (top) · the picked image's features (bottom), same colours")
    st.caption(
        "T = 0 maps the centre of the latent space (z = 0) back; larger T adds variety. The flow models "
        "features, not pixels, so these are feature maps, in the picked image's PCA colours. A few 3×3 coupling "
        "steps see only a small neighbourhood, so samples match the per-position feature statistics (colours) "
        "rather than the image's long-range structure."
    )
