"""UI pieces of the Learn page: a live 2-D toy flow, one affine coupling, CBAM gates, subnets."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import plotly.graph_objects as go
import streamlit as st
import torch

from cainnflow.model import AttentionMaps
from cainnflow.subnet import VARIANTS, subnet_parameter_counts
from cainnflow.toy import (
    TOY_DATASETS,
    CouplingParams,
    ToyFlow,
    affine_coupling,
    coupling_grid,
    make_toy_data,
    polygon_area,
)

from . import figures, state
from .figures import heatmap_figure
from .latent_view import LatentAnalysis, scale_label

__all__ = [
    "attention_panel",
    "coupling_panel",
    "subnet_panel",
    "toy_flow_panel",
]

TOY = "cf_learn_toy"  # ToySession
ATTENTION_CACHE = "cf_learn_attention"  # (version, id(analysis)) -> list[AttentionMaps]
TOY_POINTS = 1500
TOY_SAMPLES = 1500
TOY_LIM = 3.0
TOY_STEP_CHOICES = (25, 100, 200, 500)
TOY_DEFAULT_STEPS = 200
PROGRESS_EVERY = 5
ANIMATION_CHUNK = 25  # toy steps between redraws while it trains
FIG_HEIGHT = 330
COUPLING_Y_LIMIT = 8.0
MARGIN = {"l": 5, "r": 5, "t": 35, "b": 5}


@dataclass
class ToySession:
    """The toy flow being trained in this browser session, with its data and loss history."""

    dataset: str
    variant: str
    flow: ToyFlow
    data: np.ndarray
    step_losses: list[float] = field(default_factory=list)

    @classmethod
    def new(cls, dataset: str, variant: str) -> ToySession:
        return cls(dataset, variant, ToyFlow(variant=variant), make_toy_data(dataset, TOY_POINTS))


# --------------------------------------------------------------------------- (1) toy flow


def _toy_session(dataset: str, variant: str) -> ToySession:
    toy: ToySession | None = st.session_state.get(TOY)
    if toy is None or toy.dataset != dataset or toy.variant != variant:
        toy = st.session_state[TOY] = ToySession.new(dataset, variant)
    return toy


def _reset_toy() -> None:
    st.session_state.pop(TOY, None)


def _scatter(points: np.ndarray, colors: np.ndarray, title: str, circles: bool = False) -> go.Figure:
    fig = go.Figure(
        go.Scattergl(
            x=points[:, 0],
            y=points[:, 1],
            mode="markers",
            marker={"size": 3.5, "color": colors, "colorscale": "Turbo", "opacity": 0.8},
            hoverinfo="skip",
        )
    )
    if circles:
        for r in (1, 2, 3):
            fig.add_shape(
                type="circle", x0=-r, y0=-r, x1=r, y1=r, line={"color": "gray", "dash": "dot", "width": 1}
            )
    fig.update_layout(
        showlegend=False,
        xaxis={"range": [-TOY_LIM - 0.5, TOY_LIM + 0.5], "zeroline": False},
        yaxis={"range": [-TOY_LIM - 0.5, TOY_LIM + 0.5], "scaleanchor": "x", "zeroline": False},
    )
    return figures.style(fig, title, FIG_HEIGHT)


def _draw_toy(toy: ToySession, slots: list, loss_slot, frame: int = 0) -> None:
    """Data, latents, samples, density and loss of the toy flow, drawn into placeholders.

    ``frame`` numbers the redraws of one run (the animation): each frame's charts get their own
    keys, so redrawing a placeholder never repeats an element ID.
    """
    colors = toy.data[:, 0]  # colour by the first data coordinate, so points can be followed into z
    z, _ = toy.flow.forward(toy.data)
    z_samples = torch.randn(TOY_SAMPLES, 2, generator=torch.Generator().manual_seed(0)).numpy()
    samples = toy.flow.inverse(z_samples)
    clip = TOY_LIM + 0.4
    slots[0].plotly_chart(
        _scatter(toy.data, colors, "data x"), config=figures.CONFIG, key=f"cf_toy_data_{frame}"
    )
    slots[1].plotly_chart(
        _scatter(np.clip(z, -clip, clip), colors, "z = f(x), should look Gaussian", circles=True),
        config=figures.CONFIG,
        key=f"cf_toy_z_{frame}",
    )
    slots[2].plotly_chart(
        _scatter(np.clip(samples, -clip, clip), z_samples[:, 0], "x = f⁻¹(z), z ~ N(0, I)"),
        config=figures.CONFIG,
        key=f"cf_toy_samples_{frame}",
    )
    xs, ys, density = toy.flow.density_grid(lim=TOY_LIM, resolution=70)
    fig = go.Figure(go.Heatmap(x=xs, y=ys, z=density, colorscale="Viridis", showscale=False))
    fig.update_layout(yaxis={"scaleanchor": "x"})
    slots[3].plotly_chart(
        figures.style(fig, "learned density p(x)", FIG_HEIGHT),
        config=figures.CONFIG,
        key=f"cf_toy_density_{frame}",
    )
    trained = len(toy.step_losses)
    if trained:
        loss_fig = go.Figure(go.Scatter(y=toy.step_losses, mode="lines", line={"width": 1.5}))
        loss_fig.update_layout(xaxis_title="step")
        loss_slot.plotly_chart(
            figures.style(loss_fig, f"training loss (NLL, nats) · {trained} steps", 220),
            config=figures.CONFIG,
            key=f"cf_toy_loss_{frame}",
        )
    else:
        loss_slot.caption(
            "Untrained: the flow starts as the identity (its last convolutions are zero), so z = x."
        )


@st.fragment
def toy_flow_panel() -> None:
    """Train a small coupling flow on 2-D points and watch data → z and z → data."""
    st.markdown(
        "A flow is an invertible map $f$ from data $x$ to a latent $z$. Training maximises the exact "
        "likelihood given by the change of variables:"
    )
    st.latex(
        r"\log p_X(x) = \log p_Z\big(f(x)\big) + \log\left|\det \frac{\partial f(x)}{\partial x}\right|, \qquad p_Z = \mathcal{N}(0, I)"
    )
    c1, c2, c3, c4 = st.columns([1, 1, 1, 1], vertical_alignment="bottom")
    dataset = c1.selectbox("Toy data", TOY_DATASETS, key="cf_learn_toy_data")
    variant = c2.selectbox("Subnet", VARIANTS, index=VARIANTS.index("CC"), key="cf_learn_toy_variant")
    toy = _toy_session(dataset, variant)
    n_steps = c3.select_slider(
        "Steps per click", TOY_STEP_CHOICES, value=TOY_DEFAULT_STEPS, key="cf_learn_toy_steps"
    )
    train = c4.button(f"Train {n_steps} steps", type="primary", icon=":material/play_arrow:")
    st.button("Reset the toy flow", on_click=_reset_toy, icon=":material/restart_alt:")
    cols = st.columns(4)
    slots = [col.empty() for col in cols]
    loss_slot = st.empty()
    if train:
        bar = st.progress(0.0, text="Training…")
        done = 0
        while done < n_steps:  # train in chunks and redraw after each: the plots move as it learns
            chunk = min(ANIMATION_CHUNK, n_steps - done)

            def progress(i: int, loss: float, offset: int = done) -> None:
                toy.step_losses.append(loss)
                step = offset + i + 1
                if step % PROGRESS_EVERY == 0 or step == n_steps:
                    bar.progress(step / n_steps, text=f"step {step}/{n_steps} · NLL {loss:.3f} nats")

            toy.flow.train_steps(toy.data, chunk, callback=progress)
            done += chunk
            _draw_toy(toy, slots, loss_slot, frame=done)
        bar.empty()
    else:
        _draw_toy(toy, slots, loss_slot)
    st.caption(
        f"{toy.flow.steps} GLOW coupling blocks with {variant} subnets (1×1 kernels on a single position). "
        "Colours follow each data point into z; the samples on the third plot are coloured by their z."
    )


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
    cache: dict = st.session_state.setdefault(ATTENTION_CACHE, {})
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
    left, right = st.columns([1, 2])
    spatial = gates.spatial[0].numpy()
    left.plotly_chart(
        heatmap_figure(
            spatial, f"spatial gate Mₛ ({spatial.min():.2f}…{spatial.max():.2f})", colorscale="Cividis"
        ),
        key="cf_learn_att_spatial",
    )
    channel = gates.channel[0].numpy()
    bar = go.Figure(go.Bar(x=np.arange(channel.size), y=channel, marker_color="#5b8def"))
    bar.update_layout(
        title=f"channel gate M_c over {channel.size} hidden channels",
        height=300,
        margin=MARGIN,
        modebar={"orientation": "v"},
        yaxis={"range": [0, 1], "title": "gate"},
        xaxis_title="channel",
    )
    right.plotly_chart(bar, key="cf_learn_att_channel")
    st.markdown("All spatial gates of this scale:")
    cols = st.columns(max(len(here), 1))
    for col, m in zip(cols, here, strict=True):
        col.plotly_chart(
            heatmap_figure(
                m.spatial[0].numpy(), f"step {m.step} · subnet {m.subnet}", colorscale="Cividis", height=200
            ),
            key=f"cf_learn_att_small_{m.scale}_{m.step}_{m.subnet}",
        )
    st.caption(
        "Each map uses its own colour range (shown in the title); gates lie in (0, 1). Bright positions are "
        "passed on to the convolution that predicts s and t, dark ones damped. Gates that barely vary mean the "
        "attention has learned little (e.g. after few epochs)."
    )


# --------------------------------------------------------------------------- (4) subnets

_DIAGRAMS = {
    "CA": ["conv 3×3", "CBAM"],
    "AC": ["CBAM", "conv 3×3"],
    "CAC": ["conv 3×3", "ReLU", "CBAM", "conv 3×3"],
    "CC": ["conv 3×3", "ReLU", "conv 3×3"],
}
_EQUATIONS = {
    "CA": r"\mathrm{CBAM}(\mathrm{Con}(F)) \quad (9)",
    "AC": r"\mathrm{Con}(\mathrm{CBAM}(F)) \quad (10)",
    "CAC": r"\mathrm{Con}(\mathrm{CBAM}(\mathrm{Con}(F))) \quad (11)",
    "CC": r"\mathrm{Con}(\mathrm{Con}(F)) \quad (12)",
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
            st.latex(_EQUATIONS[variant])
            st.metric("parameters per block", f"{counts[variant]:,}")
            st.graphviz_chart(subnet_dot(variant))
    st.caption(
        f"Both subnets of one GLOW block for C = {channels}: one maps {channels // 2} → "
        f"{2 * (channels - channels // 2)} channels, the other {channels - channels // 2} → {2 * (channels // 2)}."
    )
