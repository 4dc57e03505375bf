"""The Learn page's 2-D toy flow, trained live: data → z, z → samples, density and loss.

Each animation frame is one picture (matplotlib, drawn off screen) put into one placeholder:
the browser swaps it like any image. Interactive charts were remounted at every frame and
went blank while they drew again, so the plots vanished while the flow trained.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import numpy as np
import streamlit as st
import torch
from matplotlib.figure import Figure  # not pyplot: no global state, safe from any session's thread
from matplotlib.patches import Circle
from PIL import Image

from cainnflow.subnet import VARIANTS
from cainnflow.toy import TOY_DATASETS, TOY_LR, ToyFlow, gaussian_nll, make_toy_data

from . import keys

__all__ = ["ToySession", "toy_figure", "toy_flow_panel"]

TOY_POINTS = 1500  # trained on; as many again are held out
TOY_SAMPLES = 1500
TOY_LIM = 3.0
TOY_STEP_CHOICES = (50, 100, 300, 600)
TOY_DEFAULT_STEPS = 300
TOY_DEFAULT_VARIANT = "CAC"
PROGRESS_EVERY = 5
ANIMATION_CHUNK = 50  # toy steps between frames while it trains (a frame costs ~0.3 s)
DENSITY_RESOLUTION = 80
FIGURE_SIZE_IN = (14.0, 5.6)
FIGURE_DPI = 100
POINT_SIZE = 3.0


@dataclass
class ToySession:
    """The toy flow being trained in this browser session, with its data and loss history.

    ``held_out`` are points of the same distribution the flow never trains on: their NLL, beside
    that of a single Gaussian fitted to the data, says whether the flow has learned the shape.
    """

    dataset: str
    variant: str
    flow: ToyFlow
    data: np.ndarray
    held_out: np.ndarray
    gaussian_nll: float
    step_losses: list[float] = field(default_factory=list)

    @classmethod
    def new(cls, dataset: str, variant: str) -> ToySession:
        points = make_toy_data(dataset, 2 * TOY_POINTS)
        data, held_out = points[:TOY_POINTS], points[TOY_POINTS:]
        return cls(dataset, variant, ToyFlow(variant=variant), data, held_out, gaussian_nll(data, held_out))


def _toy_session(dataset: str, variant: str) -> ToySession:
    toy: ToySession | None = st.session_state.get(keys.LEARN_TOY)
    if toy is None or toy.dataset != dataset or toy.variant != variant:
        toy = st.session_state[keys.LEARN_TOY] = ToySession.new(dataset, variant)
    return toy


def _reset_toy() -> None:
    st.session_state.pop(keys.LEARN_TOY, None)


def _square(ax, title: str) -> None:
    lim = TOY_LIM + 0.4
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    ax.set_aspect("equal")
    ax.set_title(title, loc="left", fontsize=11)
    ax.tick_params(labelsize=8)
    ax.grid(alpha=0.25)


def toy_figure(toy: ToySession) -> Image.Image:
    """One frame: data x, z = f(x), samples f⁻¹(z), the density p(x) and the loss so far."""
    colors = toy.data[:, 0]  # colour by the first data coordinate, so points can be followed into z
    z, _ = toy.flow.forward(toy.data)
    z_samples = torch.randn(TOY_SAMPLES, 2, generator=torch.Generator().manual_seed(0)).numpy()
    samples = toy.flow.inverse(z_samples)
    clip = TOY_LIM + 0.4
    xs, ys, density = toy.flow.density_grid(lim=TOY_LIM, resolution=DENSITY_RESOLUTION)
    held_out = toy.flow.point_nll(toy.held_out)  # one unlikely point can move the mean: median too

    # Fixed margins: a layout engine measured every text again at each frame (most of its time).
    fig = Figure(figsize=FIGURE_SIZE_IN, dpi=FIGURE_DPI)
    grid = fig.add_gridspec(
        2, 4, height_ratios=[3, 1.3], left=0.04, right=0.99, top=0.95, bottom=0.08, wspace=0.25, hspace=0.35
    )
    panels = [fig.add_subplot(grid[0, i]) for i in range(4)]
    scatter = {"s": POINT_SIZE, "cmap": "turbo", "alpha": 0.8, "linewidths": 0}
    panels[0].scatter(toy.data[:, 0], toy.data[:, 1], c=colors, **scatter)
    _square(panels[0], "data x")
    panels[1].scatter(*np.clip(z, -clip, clip).T, c=colors, **scatter)
    for r in (1, 2, 3):
        panels[1].add_patch(Circle((0, 0), r, fill=False, ls=":", color="gray", lw=0.8))
    _square(panels[1], "z = f(x): should look Gaussian")
    panels[2].scatter(*np.clip(samples, -clip, clip).T, c=z_samples[:, 0], **scatter)
    _square(panels[2], "x = f⁻¹(z), z ~ N(0, I)")
    panels[3].imshow(
        density, origin="lower", extent=(xs[0], xs[-1], ys[0], ys[-1]), cmap="viridis", aspect="equal"
    )
    _square(panels[3], "learned density p(x)")

    loss = fig.add_subplot(grid[1, :])
    loss.axhline(toy.gaussian_nll, ls=":", color="gray", lw=1)
    loss.annotate(
        f"one Gaussian fitted to the data: {toy.gaussian_nll:.2f}",
        (1.0, toy.gaussian_nll),
        xycoords=("axes fraction", "data"),
        ha="right",
        va="bottom",
        fontsize=9,
        color="gray",
    )
    if toy.step_losses:
        loss.plot(np.arange(1, len(toy.step_losses) + 1), toy.step_losses, lw=1.2, color="#2e86de")
    loss.set_xlim(0, max(len(toy.step_losses), TOY_DEFAULT_STEPS))
    loss.set_xlabel("step", fontsize=9)
    loss.tick_params(labelsize=8)
    loss.grid(alpha=0.25)
    loss.set_title(
        f"training loss (NLL of each batch, nats) · {len(toy.step_losses)} steps · "
        f"held-out points: {held_out.mean():.2f} nats (median {np.median(held_out):.2f})",
        loc="left",
        fontsize=11,
    )
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    buffer.seek(0)
    return Image.open(buffer)


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
    variant = c2.selectbox(
        "Subnet", VARIANTS, index=VARIANTS.index(TOY_DEFAULT_VARIANT), key="cf_learn_toy_variant"
    )
    toy = _toy_session(dataset, variant)
    n_steps = c3.select_slider(
        "Steps per click", TOY_STEP_CHOICES, value=TOY_DEFAULT_STEPS, key="cf_learn_toy_steps"
    )
    train = c4.button(f"Train {n_steps} steps", type="primary", icon=":material/play_arrow:")
    st.button("Reset the toy flow", on_click=_reset_toy, icon=":material/restart_alt:")
    frame = st.empty()
    frame.image(toy_figure(toy), width="stretch")  # at once: the picture is never empty
    status = st.empty()
    if train:
        done = 0
        bar = status.progress(0.0, text="Training…")
        while done < n_steps:  # train in chunks and draw a frame after each: the plots move as it learns
            chunk = min(ANIMATION_CHUNK, n_steps - done)

            def progress(i: int, loss: float, offset: int = done) -> None:
                toy.step_losses.append(loss)
                step = offset + i + 1
                if step % PROGRESS_EVERY == 0 or step == n_steps:
                    bar.progress(step / n_steps, text=f"step {step}/{n_steps} · NLL {loss:.3f} nats")

            toy.flow.train_steps(
                toy.data, chunk, callback=progress, schedule_steps=n_steps, schedule_offset=done
            )
            done += chunk
            frame.image(toy_figure(toy), width="stretch")
        status.empty()
    if not toy.step_losses:
        status.caption(
            "Untrained: the flow starts as the identity (its last convolutions are zero), so z = x. "
            "Press Train and watch it learn."
        )
    st.caption(
        f"{toy.flow.steps} GLOW coupling blocks with {variant} subnets (1×1 kernels on a single position). "
        f"Each click trains with Adam, its step size falling from {TOY_LR:g} to 0 along a cosine. Colours "
        "follow each data point into z; the samples on the third plot are coloured by their z. The held-out "
        "points are drawn from the same distribution but never trained on."
    )
