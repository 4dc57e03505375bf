"""UI pieces of the Learn page: a live 2-D toy flow (:mod:`app.toy_view`), one affine coupling,
CBAM gates, subnets."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from cainnflow.attention import SPATIAL_KERNEL_SIZE
from cainnflow.model import AttentionMaps
from cainnflow.subnet import VARIANTS, subnet_parameter_counts
from cainnflow.toy import CouplingParams, affine_coupling, coupling_grid, polygon_area

from . import figures, keys, state
from .display import display_image
from .figures import heatmap_figure
from .latent_view import LatentAnalysis, scale_label
from .toy_view import toy_flow_panel

__all__ = [
    "attention_panel",
    "coupling_panel",
    "subnet_panel",
    "toy_flow_panel",
]

COUPLING_Y_LIMIT = 8.0
MARGIN = {"l": 5, "r": 5, "t": 35, "b": 5}


# --------------------------------------------------------------------------- (2) one coupling layer


@st.fragment
def coupling_panel() -> None:
    """An interactive 2-D affine coupling: grid deformation and its determinant."""
    st.markdown(
        "One coupling block splits the input into halves. One half passes unchanged and conditions a "
        "scale $s$ and shift $t$ for the other — the paper's Eq. 1 (GLOW), which does this twice, once per half:"
    )
    st.latex(r"v_1 = u_1 \odot e^{s_2(u_2)} + t_2(u_2), \qquad v_2 = u_2 \odot e^{s_1(v_1)} + t_1(v_1)")
    st.markdown(
        "The Jacobian is triangular, so its determinant is the product of the diagonal: "
        r"$\log|\det J| = \sum_i s_i$ — cheap, whatever the subnets $s, t$ are. Inverting needs no inverse "
        r"of $s$ or $t$: $u_2 = (v_2 - t_1(v_1))\, e^{-s_1(v_1)}$. In 2-D with one half each:"
    )
    st.latex(
        r"v_1 = x_1,\quad v_2 = x_2\, e^{s(x_1)} + t(x_1),\quad s(x_1) = s_0 + s_1 x_1,\quad t(x_1) = t_0 + t_1 \sin x_1"
    )
    sliders, plot = st.columns([1, 2])
    with sliders:
        s0 = st.slider("s₀ (scale)", -1.5, 1.5, 0.4, 0.05, key="cf_learn_s0")
        s1 = st.slider("s₁ (scale varies with x₁)", -1.0, 1.0, 0.3, 0.05, key="cf_learn_s1")
        t0 = st.slider("t₀ (shift)", -2.0, 2.0, 0.0, 0.1, key="cf_learn_t0")
        t1 = st.slider("t₁ (shift varies with x₁)", -2.0, 2.0, 0.8, 0.1, key="cf_learn_t1")
        x1 = st.slider("Probe square at x₁ =", -1.5, 1.5, 0.5, 0.1, key="cf_learn_probe")
    params = CouplingParams(s0, s1, t0, t1)
    before, after = coupling_grid(params, lim=2.0, lines=9)
    side = 0.4
    square = np.array([[x1, 0.0], [x1 + side, 0.0], [x1 + side, side], [x1, side], [x1, 0.0]])
    dense = np.concatenate([np.linspace(square[i], square[i + 1], 20) for i in range(4)])
    moved, _ = affine_coupling(dense, params)
    ratio = polygon_area(moved) / polygon_area(dense)
    s_mid = float(params.s(np.array(x1 + side / 2)))
    y_all = np.concatenate([line[:, 1] for line in [*before, *after]])
    y_low, y_high = (
        max(float(y_all.min()), -COUPLING_Y_LIMIT) - 0.3,
        min(float(y_all.max()), COUPLING_Y_LIMIT) + 0.3,
    )
    fig = go.Figure()
    for line in before:
        fig.add_trace(
            go.Scatter(
                x=line[:, 0],
                y=line[:, 1],
                mode="lines",
                line={"color": "lightgray", "width": 1},
                hoverinfo="skip",
            )
        )
    for line in after:
        fig.add_trace(
            go.Scatter(
                x=line[:, 0],
                y=line[:, 1],
                mode="lines",
                line={"color": "#2e86de", "width": 1.5},
                hoverinfo="skip",
            )
        )
    fig.add_trace(
        go.Scatter(
            x=dense[:, 0], y=dense[:, 1], fill="toself", mode="lines", line={"color": "gray"}, opacity=0.5
        )
    )
    fig.add_trace(
        go.Scatter(
            x=moved[:, 0], y=moved[:, 1], fill="toself", mode="lines", line={"color": "#e4572e"}, opacity=0.6
        )
    )
    fig.update_layout(
        height=520,
        margin=MARGIN,
        modebar={"orientation": "v"},
        showlegend=False,
        title="grid before (gray) and after (blue) the coupling; probe square in orange",
        xaxis={"range": [-2.4, 2.4], "title": "x₁ / v₁", "constrain": "domain"},
        yaxis={"range": [y_low, y_high], "scaleanchor": "x", "title": "x₂ / v₂", "constrain": "domain"},
    )
    plot.plotly_chart(fig, key="cf_learn_coupling")
    with sliders:
        st.metric("Area after / before", f"{ratio:.3f}")
        st.caption(
            f"exp(s) at the square's centre = {np.exp(s_mid):.3f} — the determinant. Vertical lines stay "
            "vertical (x₁ passes unchanged); each is stretched by exp(s(x₁)) and shifted by t(x₁)."
        )


# --------------------------------------------------------------------------- (3) CBAM


def _attention(entry: state.ModelEntry, analysis: LatentAnalysis) -> list[AttentionMaps]:
    cache: dict = st.session_state.setdefault(keys.LEARN_ATTENTION, {})
    key = (entry.version, id(analysis))
    if key not in cache:
        cache.clear()
        model = entry.detector.model
        cache[key] = model.attention_maps([f.to(model.device) for f in analysis.features])
    return cache[key]


def cbam_equations() -> None:
    st.markdown(
        "CBAM (Woo et al. 2018) re-weights a feature map first per channel, then per position (paper Eq. 6–8):"
    )
    st.latex(r"F' = M_c(F) \otimes F, \qquad F'' = M_s(F') \otimes F'")
    st.latex(
        r"M_c(F) = \sigma\big(\mathrm{MLP}(\mathrm{AvgPool}(F)) + \mathrm{MLP}(\mathrm{MaxPool}(F))\big)"
    )
    st.latex(r"M_s(F) = \sigma\big(f^{7\times 7}([\mathrm{AvgPool}_c(F);\ \mathrm{MaxPool}_c(F)])\big)")


@st.fragment
def attention_panel(entry: state.ModelEntry, analysis: LatentAnalysis) -> None:
    """The channel and spatial gates of every coupling subnet for one image."""
    if entry.detector.config.variant == "CC":
        st.info(
            "This model uses the **CC** subnets (two plain convolutions, Eq. 12): it has no attention, so "
            "there are no gates to show. Train a CA, AC or CAC model to see them."
        )
        return
    maps = _attention(entry, analysis)
    if not maps:
        st.info("No attention gates were recorded for this model.")
        return
    scales = sorted({m.scale for m in maps})
    c1, c2 = st.columns(2)
    scale = c1.radio(
        "Scale",
        scales,
        format_func=lambda s: scale_label(entry, s),
        horizontal=True,
        key="cf_learn_att_scale",
    )
    here = [m for m in maps if m.scale == scale]
    choice = c2.selectbox(
        "Subnet",
        range(len(here)),
        format_func=lambda i: (
            f"step {here[i].step}, subnet {here[i].subnet} ({'s₁,t₁' if here[i].subnet == 0 else 's₂,t₂'})"
        ),
        key=f"cf_learn_att_subnet_{scale}",
    )
    gates = here[min(choice, len(here) - 1)]
    spatial = gates.spatial[0].numpy()
    gate_range = GateRange.of(spatial)
    image_col, gate_col, channel_col = st.columns([1, 1, 2])
    with image_col:
        st.image(display_image(analysis.image, entry.detector), width="stretch")
        st.caption("the input image")
    gate_col.plotly_chart(
        _gate_figure(spatial, gate_range, "Mₛ", overall=False),
        key="cf_learn_att_spatial",
        config=figures.CONFIG,
    )
    channel = gates.channel[0].numpy()
    bar = go.Figure(go.Bar(x=np.arange(channel.size), y=channel, marker_color="#5b8def"))
    bar.update_layout(yaxis={"range": [0, 1], "title": "gate"}, xaxis_title="channel")
    channel_col.plotly_chart(
        figures.style(bar, f"channel gate M_c over {channel.size} hidden channels", 300),
        key="cf_learn_att_channel",
        config=figures.CONFIG,
    )
    st.caption(gate_range.reading())
    st.markdown("All spatial gates of this scale (colours stretched to each one's inside):")
    cols = st.columns(max(len(here), 1))
    for col, m in zip(cols, here, strict=True):
        values = m.spatial[0].numpy()
        col.plotly_chart(
            _gate_figure(values, GateRange.of(values), f"step {m.step} · subnet {m.subnet}", height=220),
            key=f"cf_learn_att_small_{m.scale}_{m.step}_{m.subnet}",
            config=figures.CONFIG,
        )


BORDER = SPATIAL_KERNEL_SIZE // 2  # cells whose 7×7 window reaches into the zero padding
STRETCH_PERCENTILES = (1.0, 99.0)
NEARLY_UNIFORM_SPREAD = 0.05  # an inside spread below this: the gate passes (almost) everything alike


@dataclass(frozen=True)
class GateRange:
    """A spatial gate's values: ``low``…``high`` overall, and inside the border (the cells
    whose 7×7 window stays off the zero padding), where the stretch ``lo``…``hi`` (1st–99th
    percentile) is taken from."""

    low: float
    high: float
    inside_low: float
    inside_high: float
    lo: float
    hi: float

    @classmethod
    def of(cls, gate: np.ndarray) -> GateRange:
        h, w = gate.shape
        inside = gate[BORDER : h - BORDER, BORDER : w - BORDER] if min(h, w) > 2 * BORDER + 1 else gate
        lo, hi = np.percentile(inside, STRETCH_PERCENTILES)
        return cls(
            float(gate.min()),
            float(gate.max()),
            float(inside.min()),
            float(inside.max()),
            float(lo),
            float(hi),
        )

    def reading(self) -> str:
        """What the range means, in words."""
        where = (
            f"Inside the border the gate lies between {self.inside_low:.3f} and {self.inside_high:.3f}"
            + (
                f"; its lowest values ({self.low:.2f}) are on the {BORDER}-cell border, where the 7×7 "
                "convolution reads the zero padding, not the image"
                if self.low < self.inside_low - 1e-3
                else ""
            )
            + ". "
        )
        stretch = (
            f"The colours are stretched to {self.lo:.3f}…{self.hi:.3f} (1st–99th percentile inside), so the "
            "pattern shows however faint: dark is where it damps most."
        )
        if self.inside_high - self.inside_low < NEARLY_UNIFORM_SPREAD:
            return (
                where
                + "So this gate is nearly uniform: it passes every position on to the convolution that predicts "
                "s and t almost unchanged. Training on normal images has not taught it to single out places; "
                "what selecting this subnet does is in the channel gate beside it. " + stretch
            )
        return where + "It passes some positions on and damps others. " + stretch


def _gate_figure(
    values: np.ndarray, gate_range: GateRange, title: str, height: int = 300, *, overall: bool = True
) -> go.Figure:
    """A spatial gate stretched to its inside; ``overall``: the whole range in the title too."""
    whole = f" (all {gate_range.low:.2f}…{gate_range.high:.2f})" if overall else ""
    return heatmap_figure(
        values,
        f"{title}: {gate_range.lo:.3f}…{gate_range.hi:.3f}{whole}",
        colorscale="Cividis",
        zmin=gate_range.lo,
        zmax=max(gate_range.hi, gate_range.lo + 1e-6),
        height=height,
    )


# --------------------------------------------------------------------------- (4) subnets

_DIAGRAMS = {
    "CA": ["conv 3×3", "CBAM"],
    "AC": ["CBAM", "conv 3×3"],
    "CAC": ["conv 3×3", "ReLU", "CBAM", "conv 3×3"],
    "CC": ["conv 3×3", "ReLU", "conv 3×3"],
}
# (paper equation number, the arrangement) — inline math in markdown: a display equation in a
# quarter-width column was cut at its edge ("(1" of "(11)").
_EQUATIONS = {
    "CA": (9, r"\mathrm{CBAM}(\mathrm{Con}(F))"),
    "AC": (10, r"\mathrm{Con}(\mathrm{CBAM}(F))"),
    "CAC": (11, r"\mathrm{Con}(\mathrm{CBAM}(\mathrm{Con}(F)))"),
    "CC": (12, r"\mathrm{Con}(\mathrm{Con}(F))"),
}


def subnet_dot(variant: str) -> str:
    """A Graphviz description of one subnet arrangement."""
    fills = {"CBAM": "#ffd6a5", "ReLU": "#e0e0e0"}
    nodes = ['in [label="passive half u", shape=plaintext]']
    for i, layer in enumerate(_DIAGRAMS[variant]):
        nodes.append(
            f'n{i} [label="{layer}", style="filled,rounded", shape=box, fillcolor="{fills.get(layer, "#cfe3ff")}"]'
        )
    nodes.append('out [label="s, t", shape=plaintext]')
    names = ["in", *(f"n{i}" for i in range(len(_DIAGRAMS[variant]))), "out"]
    edges = " -> ".join(names)
    return (
        "digraph { rankdir=TB; node [fontname=Helvetica, fontsize=11]; " + "; ".join(nodes) + f"; {edges}; }}"
    )


def subnet_panel(default_channels: int) -> None:
    """The four arrangements side by side, with their parameter counts."""
    st.markdown(
        "The subnet predicts the coupling's $s$ and $t$ from the passive half. CAINNFlow keeps it "
        "convolutional (no flattening), so positions keep their neighbours, and adds CBAM so it can focus "
        "on informative channels and places. The paper compares four arrangements (Table 2; CAC is best):"
    )
    channels = int(
        st.number_input("Feature channels C of a scale", 2, 2048, default_channels, key="cf_learn_channels")
    )
    a, b = st.columns(2)
    hidden = a.select_slider("Hidden ratio", [0.5, 1.0, 2.0, 4.0], value=1.0, key="cf_learn_hidden")
    reduction = b.select_slider("CBAM reduction r", [2, 4, 8, 16, 32], value=16, key="cf_learn_reduction")
    counts = subnet_parameter_counts(channels, hidden_ratio=hidden, reduction=reduction)
    cols = st.columns(len(VARIANTS))
    for col, variant in zip(cols, VARIANTS, strict=True):
        with col:
            st.markdown(f"#### {variant}")
            number, equation = _EQUATIONS[variant]
            st.markdown(f"${equation}$")
            st.caption(f"paper Eq. {number}")
            st.metric("parameters per block", f"{counts[variant]:,}")
            st.graphviz_chart(subnet_dot(variant))
    st.caption(
        f"Both subnets of one GLOW block for C = {channels}: one maps {channels // 2} → "
        f"{2 * (channels - channels // 2)} channels, the other {channels - channels // 2} → {2 * (channels // 2)}. "
        "The grey ReLU boxes are not in the paper's equations. CC needs its ReLU: two convolutions "
        "with nothing between them are one linear map. CAC does not (CBAM's sigmoid gates are "
        "non-linear), but this app's models keep it because it measured better; "
        "`CAINNFlowConfig(subnet_relu=False)` trains CAC exactly as Eq. 11."
    )
