"""Compare view: this session's models side by side, or a sweep's ``results.csv`` as the paper's
Tables 2–4.

This session's models (:mod:`app.compare_session`) are scored on the current test split. A
sweep (``python -m cainnflow sweep``) writes one row per trained model; this view reads such a
file — the example shipped in ``assets/example_sweep/``, an upload, or one found inside the
app's own runs folder (never an arbitrary server path) — and draws mean scores by subnet
variant × steps (Tables 2–3) and by backbone × category (Table 4), with the paper-format table
and every row below.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from cainnflow.errors import CainnflowError
from cainnflow.sweep import RESULTS_FILE, TrialResult, paper_table, parse_results

from . import compare_session, figures, hosting, keys, loaders

__all__ = ["METRICS", "pivot", "render", "results_frame", "runs_dir", "table_figure"]

METRICS = {"pixel_auroc": "pixel AUROC", "image_auroc": "image AUROC", "aupro": "AUPRO"}
RUNS_DIRNAME = "runs"
MAX_CSV_BYTES = 5 * 1024 * 1024
PERCENT = 100.0
SOURCES = {
    "session": "This session's models",
    "example": "Example sweep",
    "runs": "A sweep in the runs folder",
    "upload": "Upload a results.csv",
}
EXAMPLE_SWEEP = loaders.ASSETS / "example_sweep" / RESULTS_FILE
"""A real tiny sweep shipped with the app (assets/README.md says how it was run)."""
ALL = "all (mean)"
SHOWN_COLUMNS = (  # the metrics early: in a narrow window the last columns need scrolling
    "category",
    "variant",
    "steps",
    "image_auroc",
    "pixel_auroc",
    "aupro",
    "backbone",
    "image_size",
    "seed",
    "epochs",
    "train_s",
    "ms_per_image",
    "device",
)


def runs_dir() -> Path:
    """Where the app looks for sweeps: ``<app home>/runs`` (``--out`` a folder inside it)."""
    path = loaders.app_home() / RUNS_DIRNAME
    path.mkdir(parents=True, exist_ok=True)
    return path


def _found_results(folder: Path) -> list[Path]:
    """``results.csv`` files under ``folder`` (symlinks leading outside it are left out)."""
    base = folder.resolve()
    return [p for p in sorted(folder.rglob(RESULTS_FILE)) if p.resolve().is_relative_to(base) and p.is_file()]


def results_frame(results: list[TrialResult]) -> pd.DataFrame:
    """One row per trial with numeric columns (metrics in [0, 1], NaN where unavailable)."""
    frame = pd.DataFrame([r.to_row() for r in results])
    for column in (
        "steps",
        "image_size",
        "seed",
        "image_auroc",
        "pixel_auroc",
        "aupro",
        "train_s",
        "ms_per_image",
    ):
        frame[column] = pd.to_numeric(frame[column], errors="coerce")
    frame["epochs"] = frame["epochs"].replace("", "step budget")
    return frame


def pivot(frame: pd.DataFrame, rows: str, columns: str, metric: str) -> pd.DataFrame:
    """Mean ``metric`` in % over everything but ``rows`` × ``columns`` (seeds, other settings)."""
    table = frame.pivot_table(index=rows, columns=columns, values=metric, aggfunc="mean") * PERCENT
    return table.sort_index().sort_index(axis=1)


def table_figure(table: pd.DataFrame, title: str, label: str) -> go.Figure:
    """A table of percentages as an annotated heatmap (rows top to bottom)."""
    values = table.to_numpy(dtype=float)
    text = np.where(np.isnan(values), "", np.char.mod("%.2f", np.nan_to_num(values)))
    fig = go.Figure(
        go.Heatmap(
            z=values,
            x=[str(c) for c in table.columns],
            y=[str(i) for i in table.index],
            text=text,
            texttemplate="%{text}",
            colorscale="Viridis",
            colorbar={"thickness": 10, "title": {"text": "%"}},
            hovertemplate=f"%{{y}} · %{{x}}: %{{z:.2f}} % {label}<extra></extra>",
        )
    )
    fig.update_layout(
        xaxis={"title": table.columns.name, "type": "category"},
        yaxis={"title": table.index.name, "type": "category", "autorange": "reversed"},
    )
    return figures.style(fig, title, height=max(figures.HEIGHT, 60 + 40 * len(table.index)))


def show_example() -> None:
    """Button callback: the page shows the shipped example sweep."""
    st.session_state[keys.K_COMPARE_SOURCE] = "example"


def _read_source(source: str) -> tuple[str, str] | None:
    """(name, text) of the chosen results file, or None (with a hint shown)."""
    if source == "example":
        st.caption(
            "A real sweep, run with the command below on two synthetic demo categories at 128 px for 8 epochs "
            "(small and short, so its figures are lower than a full training's): "
            "`python -m cainnflow sweep --data-root DEMO --categories carpet_weave metal_plate --variants CAC CC "
            "--steps 1 2 --image-sizes 128 --epochs 8 --no-ray --out OUT`."
        )
        return "example sweep", EXAMPLE_SWEEP.read_text(encoding="utf-8")
    if source == "upload":
        upload = st.file_uploader("A sweep's results.csv", type=["csv"], key=keys.K_COMPARE_UPLOAD)
        if upload is None:
            return None
        if upload.size > MAX_CSV_BYTES:
            st.error(
                f"{upload.name} is larger than {MAX_CSV_BYTES // 1024**2} MB; not a sweep's results table."
            )
            return None
        return upload.name, upload.getvalue().decode("utf-8", errors="replace")
    folder = runs_dir()
    found = _found_results(folder)
    if not found:
        if hosting.is_hosted():  # strangers learn nothing about the server's folders
            st.info(
                "No sweeps in this server's runs folder yet. Its operator runs them with `--out` "
                f"inside `$CAINNFLOW_HOME/{RUNS_DIRNAME}`; you can upload a results.csv."
            )
        else:
            st.info(
                f"No sweeps in {folder} yet. Run one with its `--out` inside that folder, e.g. "
                f"`python -m cainnflow sweep --data-root ROOT --categories bottle --variants CAC CC "
                f"--out {folder / 'my_sweep'}`, or upload a results.csv."
            )
        st.button(
            "Show the example sweep",
            icon=":material/table_view:",
            on_click=show_example,
            key="compare_example_runs",
        )
        return None
    chosen = st.selectbox(
        "Sweep",
        found,
        format_func=lambda p: str(p.parent.relative_to(folder)) or ".",
        key=keys.K_COMPARE_FILE,
    )
    return str(chosen.parent.relative_to(folder)), chosen.read_text(encoding="utf-8")


def render() -> None:
    """The whole view: pick what to compare; a sweep's two tables as heatmaps and its rows."""
    source = st.radio(
        "Compare", list(SOURCES), format_func=SOURCES.get, horizontal=True, key=keys.K_COMPARE_SOURCE
    )
    if source == "session":
        compare_session.render_session_models(show_example)
        return
    picked = _read_source(source)
    if picked is None:
        return
    name, text = picked
    try:
        results = parse_results(text, name=name)
    except (CainnflowError, UnicodeError) as exc:
        st.error(str(exc))
        return
    if not results:
        st.warning(f"{name} has no finished trials yet.")
        return
    frame = results_frame(results)
    c1, c2 = st.columns(2)
    metric = c1.selectbox("Metric", list(METRICS), format_func=METRICS.get, key=keys.K_COMPARE_METRIC)
    backbones = sorted(frame["backbone"].unique())
    backbone = ALL
    if len(backbones) > 1:
        backbone = c2.selectbox(
            "Backbone for variant × steps", [ALL, *backbones], key=keys.K_COMPARE_BACKBONE
        )
    label = METRICS[metric]
    if frame[metric].isna().all():
        st.warning(f"No trial of {name} has a {label} (no masks or no test split).")
        return
    left, right = st.columns(2, gap="large")
    subset = frame if backbone == ALL else frame[frame["backbone"] == backbone]
    with left:
        table = pivot(subset, "variant", "steps", metric)
        st.plotly_chart(
            table_figure(table, f"{label}: variant × steps", label),
            config=figures.CONFIG,
            key="compare_variant_steps",
        )
        st.caption("The paper's Tables 2–3: mean over categories and seeds.")
    with right:
        table = pivot(frame, "category", "backbone", metric)
        st.plotly_chart(
            table_figure(table, f"{label}: category × backbone", label),
            config=figures.CONFIG,
            key="compare_backbone_cat",
        )
        st.caption("The paper's Table 4: mean over the other settings.")
    st.markdown("**Paper-format table** (image / pixel AUROC in %)")
    st.markdown(paper_table(results))
    st.caption(f"{len(frame)} trials in {name}")
    st.dataframe(frame[list(SHOWN_COLUMNS)], hide_index=True)
