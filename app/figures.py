"""Every Plotly figure of the app, built from plain arrays (no Streamlit, no model calls).

All figures go through :func:`style`: titles sit at the left and Plotly's toolbar is a
vertical strip at the right, so the toolbar never covers a title. Pass :data:`CONFIG` to
``st.plotly_chart(..., config=CONFIG)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import plotly.graph_objects as go

from cainnflow.latent import normal_pdf, normal_qq

__all__ = [
    "CONFIG",
    "RocCurve",
    "confusion_figure",
    "format_value",
    "heatmap_figure",
    "loss_figure",
    "pr_figure",
    "qq_figure",
    "roc_figure",
    "score_histogram",
    "style",
    "z_histogram",
]

CONFIG = {"displaylogo": False, "modeBarButtonsToRemove": ["lasso2d", "autoScale2d", "toImage"]}
HEIGHT = 300
MARGIN = {"l": 10, "r": 40, "t": 40, "b": 10}  # room at the right for the vertical toolbar
HIST_BINS = 80
HIST_RANGE = 5.0
GOOD_COLOR, DEFECT_COLOR = "#2e86de", "#e4572e"


def style(fig: go.Figure, title: str | None = None, height: int = HEIGHT) -> go.Figure:
    """Left title, vertical toolbar at the right, the app's margins and height."""
    layout: dict = {"height": height, "margin": MARGIN, "modebar": {"orientation": "v"}}
    if title is not None:
        layout["title"] = {"text": title, "x": 0.01, "xanchor": "left", "font": {"size": 14}}
    fig.update_layout(**layout)
    return fig


def format_value(value: float | None, none: str = "n/a") -> str:
    """A metric with three decimals, or ``none`` when it is not available."""
    return none if value is None else f"{value:.3f}"


LOSS_TICKS = 6
"""At most this many step ticks on the loss chart's x-axis (Plotly picks round numbers)."""


def loss_figure(points: Sequence[tuple[int, float, float | None]], height: int = 280) -> go.Figure:
    """Train and validation loss (nats per dimension) by optimiser step.

    Args:
        points: ``(step, train loss, validation loss or None)`` per validation round.
    """
    steps = [s for s, _, _ in points]
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=steps, y=[t for _, t, _ in points], mode="lines+markers", name="train"))
    val = [(s, v) for s, _, v in points if v is not None]
    if val:
        fig.add_trace(
            go.Scatter(x=[s for s, _ in val], y=[v for _, v in val], mode="lines+markers", name="validation")
        )
    fig.update_layout(
        xaxis={"title": {"text": "step"}, "nticks": LOSS_TICKS, "tickformat": "d", "rangemode": "tozero"},
        yaxis_title="NLL per dim",
        # Inside the plot's top right, where falling losses leave room: below it, it met the axis title.
        legend={
            "x": 0.99,
            "xanchor": "right",
            "y": 0.99,
            "yanchor": "top",
            "bgcolor": "rgba(255,255,255,0.7)",
        },
    )
    return style(fig, "Training loss", height)


def heatmap_figure(
    values: np.ndarray,
    title: str,
    *,
    colorscale: str = "Viridis",
    zmin: float | None = None,
    zmax: float | None = None,
    zmid: float | None = None,
    points: Sequence[tuple[int, int]] | None = None,
    height: int = HEIGHT,
) -> go.Figure:
    """A (H, W) map as a square heatmap, row 0 at the top; optional marked (row, col) cells."""
    fig = go.Figure(
        go.Heatmap(
            z=values,
            colorscale=colorscale,
            zmin=zmin,
            zmax=zmax,
            zmid=zmid,
            colorbar={"thickness": 10},
            hovertemplate="row %{y}, col %{x}: %{z:.3g}<extra></extra>",
        )
    )
    if points:
        fig.add_trace(
            go.Scatter(
                x=[c for _, c in points],
                y=[r for r, _ in points],
                mode="markers",
                marker={"symbol": "square-open", "size": 12, "line": {"width": 2, "color": "white"}},
                hoverinfo="skip",
                showlegend=False,
            )
        )
    h, w = values.shape
    fig.update_layout(
        xaxis={"range": [-0.5, w - 0.5], "showticklabels": False, "constrain": "domain"},
        yaxis={"range": [h - 0.5, -0.5], "showticklabels": False, "scaleanchor": "x", "constrain": "domain"},
    )
    return style(fig, title, height)


def z_histogram(z: np.ndarray) -> go.Figure:
    """Histogram of latent values against the N(0, 1) density."""
    values = np.asarray(z).ravel()
    counts, edges = np.histogram(
        np.clip(values, -HIST_RANGE, HIST_RANGE),
        bins=HIST_BINS,
        range=(-HIST_RANGE, HIST_RANGE),
        density=True,
    )
    centres = 0.5 * (edges[1:] + edges[:-1])
    xs = np.linspace(-HIST_RANGE, HIST_RANGE, 200)
    fig = go.Figure()
    fig.add_trace(
        go.Bar(x=centres, y=counts, name="z values", marker_color="#5b8def", width=edges[1] - edges[0])
    )
    fig.add_trace(go.Scatter(x=xs, y=normal_pdf(xs), name="N(0, 1)", line={"color": "black", "width": 2}))
    fig.update_layout(
        bargap=0,
        xaxis_title="z (values beyond ±5 clipped)",
        yaxis_title="density",
        legend={"x": 0.02, "y": 0.98},
    )
    return style(fig, "Histogram of z vs N(0, 1)")


def qq_figure(z: object) -> go.Figure:
    """QQ plot of latent values against N(0, 1)."""
    theo, sample = normal_qq(z)
    lim = float(max(np.abs(theo).max(), np.abs(sample).max()))
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(x=[-lim, lim], y=[-lim, lim], mode="lines", line={"dash": "dot", "color": "gray"})
    )
    fig.add_trace(
        go.Scatter(x=theo, y=sample, mode="markers", marker={"size": 5, "color": "#e4572e"}, name="z")
    )
    fig.update_layout(xaxis_title="normal quantiles", yaxis_title="quantiles of z", showlegend=False)
    return style(fig, "QQ plot against N(0, 1)")


@dataclass(frozen=True)
class RocCurve:
    """One ROC curve to draw."""

    name: str
    fpr: np.ndarray
    tpr: np.ndarray
    auc: float | None


def roc_figure(curves: Sequence[RocCurve], title: str, height: int = 320) -> go.Figure:
    """One or more ROC curves over the chance diagonal (an overlay compares models)."""
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(x=[0, 1], y=[0, 1], mode="lines", line={"dash": "dot", "color": "gray"}, name="chance")
    )
    for curve in curves:
        fig.add_trace(
            go.Scatter(
                x=curve.fpr,
                y=curve.tpr,
                mode="lines",
                name=f"{curve.name} AUROC {format_value(curve.auc)}",
                line={"width": 2.5},
            )
        )
    fig.update_layout(
        xaxis={"title": "false positive rate", "range": [0, 1]},
        yaxis={"title": "true positive rate", "range": [0, 1.02]},
        legend={"x": 0.35, "y": 0.05},
    )
    return style(fig, title, height)


def pr_figure(recall: np.ndarray, precision: np.ndarray, base_rate: float, height: int = 320) -> go.Figure:
    """Image-level precision-recall curve with the chance level."""
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=[0, 1],
            y=[base_rate, base_rate],
            mode="lines",
            line={"dash": "dot", "color": "gray"},
            name="chance",
        )
    )
    fig.add_trace(go.Scatter(x=recall, y=precision, mode="lines", name="PR", line={"width": 2.5}))
    fig.update_layout(
        xaxis={"title": "recall", "range": [0, 1]},
        yaxis={"title": "precision", "range": [0, 1.02]},
        showlegend=False,
    )
    return style(fig, "Precision-recall (images)", height)


def score_histogram(
    scores: np.ndarray,
    labels: np.ndarray,
    threshold: float,
    calibrated: float | None,
    bounds: tuple[float, float],
    height: int = 320,
) -> go.Figure:
    """Image scores of good and defective test images with the threshold (and calibrated one)."""
    fig = go.Figure()
    lo, hi = bounds
    bins = {"start": lo, "end": hi, "size": (hi - lo) / 40}
    for label, name, color in ((0, "good", GOOD_COLOR), (1, "defective", DEFECT_COLOR)):
        chosen = scores[labels == label]
        if chosen.size:
            fig.add_trace(
                go.Histogram(
                    x=chosen, name=f"{name} ({chosen.size})", xbins=bins, marker_color=color, opacity=0.65
                )
            )
    fig.add_vline(
        x=threshold, line_width=3, line_color="black", annotation_text="threshold", annotation_position="top"
    )
    if calibrated is not None and abs(calibrated - threshold) > 1e-9:
        fig.add_vline(
            x=calibrated,
            line_dash="dash",
            line_color="gray",
            annotation_text="calibrated",
            annotation_position="bottom",
        )
    fig.update_layout(
        barmode="overlay",
        xaxis_title="image score (max of the anomaly map)",
        yaxis_title="images",
        legend={"orientation": "h", "y": -0.25},
    )
    return style(fig, "Image scores: good vs defective", height)


def confusion_figure(tp: int, fp: int, tn: int, fn: int) -> go.Figure:
    """The 2×2 confusion matrix at a threshold."""
    z = [[tn, fp], [fn, tp]]
    text = [[f"TN<br>{tn}", f"FP<br>{fp}"], [f"FN<br>{fn}", f"TP<br>{tp}"]]
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=["good", "defective"],  # short: long labels turn sideways and are cut in a narrow column
            y=["good", "defective"],
            text=text,
            texttemplate="%{text}",
            textfont={"size": 18},
            colorscale="Blues",
            showscale=False,
        )
    )
    fig.update_layout(
        xaxis={"title": {"text": "predicted"}, "side": "bottom"},
        yaxis={"autorange": "reversed", "title": "truth"},
    )
    return style(fig, "Confusion matrix", 280)
