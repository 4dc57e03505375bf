"""Compare models, this session's models: every model trained or loaded here, scored on one test
split side by side, each deciding at its own threshold.

The models are this session's checkpoints (Train / load saves every one) and the current model;
each chosen one is loaded, scored on the current data's test split
(:meth:`cainnflow.detector.Detector.evaluate`) and summarised by
:func:`cainnflow.evaluation.comparison_figures`. Figures are kept per file (name, size, time) and
data, so only models not yet scored are scored again.
"""

from __future__ import annotations

import hashlib
from collections.abc import Hashable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from cainnflow.errors import CainnflowError
from cainnflow.evaluation import ComparisonFigures, comparison_figures

from . import figures, keys, loaders, session_store, state

__all__ = ["CURRENT", "SessionModel", "render_session_models", "session_models"]

CURRENT = "current model"
DEFAULT_CHOSEN = 4
"""The newest this many models are chosen at first (each is scored once)."""
BAR_METRICS = {
    "image_auroc": "image AUROC",
    "pixel_auroc": "pixel AUROC",
    "aupro": "AUPRO",
    "f1": "F1 at own threshold",
}


@dataclass(frozen=True)
class SessionModel:
    """A model this session can compare: a saved checkpoint, or the current model when it is not saved."""

    name: str
    path: Path | None  # None: the current model, not saved in the session's folder
    version: Hashable  # changes when the file (or the current model) changes

    def load(self, device: str):
        """The PyTorch detector (the current model as it is; a checkpoint loaded from its file)."""
        from cainnflow.detector import Detector

        if self.path is None:
            entry = state.current_model()
            if entry is None:
                raise CainnflowError("there is no current model any more")
            return entry.detector
        return Detector.load(self.path, device=device)


def session_models() -> list[SessionModel]:
    """This session's checkpoints, newest first, and the current model when it is not one of them."""
    folder = session_store.session_dir()
    paths = sorted(
        (p for p in folder.glob(f"*{loaders.CHECKPOINT_SUFFIX}") if p.is_file()),
        key=lambda p: p.stat().st_mtime_ns,
        reverse=True,
    )
    models = [
        SessionModel(
            p.name.removesuffix(loaders.CHECKPOINT_SUFFIX), p, (p.stat().st_size, p.stat().st_mtime_ns)
        )
        for p in paths
    ]
    entry = state.current_model()
    if (
        entry is not None
        and entry.detector.is_trained
        and (entry.path is None or entry.path.parent != folder)
    ):
        models.insert(0, SessionModel(f"{CURRENT}: {entry.origin}", None, ("current", entry.version)))
    return models


def _data_owner(data: state.DataEntry) -> tuple:
    d = data.data
    return (data.source, data.root, d.name, len(d.test))


def _figures_store(owner: tuple) -> dict[tuple, tuple[ComparisonFigures, dict[str, str]]]:
    """{(name, version): (figures, settings)} of the models scored on the data ``owner``."""
    stored = st.session_state.get(keys.K_COMPARE_SESSION)
    if stored is None or stored[0] != owner:
        stored = (owner, {})
        st.session_state[keys.K_COMPARE_SESSION] = stored
    return stored[1]


def _settings(detector) -> dict[str, str]:
    cfg = detector.config
    trained_on = detector.record.data.describe() if detector.record.data is not None else "–"
    return {
        "variant": cfg.variant,
        "steps": str(cfg.steps),
        "backbone": cfg.backbone,
        "stages": ", ".join(map(str, cfg.out_indices or ())),
        "image size": f"{cfg.image_size} px",
        "trained on": trained_on,
    }


def _score(models: list[SessionModel], data: state.DataEntry, store: dict) -> list[str]:
    """Scores ``models`` on the test split (progress bar); returns one line per model that failed."""
    device = str(st.session_state.get(keys.DEVICE_CHOICE, "auto"))
    failed: list[str] = []
    bar = st.progress(0.0, text="Scoring…")
    for i, model in enumerate(models):
        bar.progress(i / len(models), text=f"Scoring {model.name} on the test split ({i + 1}/{len(models)})…")
        try:
            detector = model.load(device)
            result = detector.evaluate(data.data)
        except CainnflowError as exc:
            failed.append(f"{model.name}: {exc}")
            continue
        store[(model.name, model.version)] = (
            comparison_figures(result, detector.threshold),
            _settings(detector),
        )
    bar.empty()
    return failed


def _rate(value: float | None) -> str:
    return figures.format_value(value)


def _column(f: ComparisonFigures, settings: dict[str, str]) -> dict[str, str]:
    """One model's column of the side-by-side table."""
    return {
        "trained on": settings["trained on"],
        "variant · steps": f"{settings['variant']} · {settings['steps']}",
        "backbone": settings["backbone"],
        "stages · size": f"{settings['stages']} · {settings['image size']}",
        "image AUROC": figures.format_value(f.image_auroc, "n/a (one class)"),
        "pixel AUROC": figures.format_value(f.pixel_auroc, "n/a (no masks)"),
        "AUPRO": figures.format_value(f.aupro, "n/a (no masks)"),
        "own threshold": f"{f.threshold:.4g}",
        "precision": _rate(f.precision),
        "recall": _rate(f.recall),
        "false positive rate": _rate(f.fpr),
        "F1": _rate(f.f1),
        "false alarms / missed": f"{f.fp} / {f.fn}",
    }


def _table(rows: list[tuple[str, ComparisonFigures, dict[str, str]]]) -> pd.DataFrame:
    """Models as columns (metrics as rows): a few models read side by side, and nothing is cut."""
    return pd.DataFrame({name: _column(f, settings) for name, f, settings in rows}).rename_axis("")


def _bars(rows: list[tuple[str, ComparisonFigures, dict[str, str]]]) -> go.Figure:
    fig = go.Figure()
    names = [name for name, _, _ in rows]
    for field, label in BAR_METRICS.items():
        values = [getattr(f, field) for _, f, _ in rows]
        fig.add_trace(go.Bar(name=label, x=names, y=[float("nan") if v is None else v for v in values]))
    fig.update_layout(
        barmode="group",
        yaxis={"range": [0, 1.02], "title": {"text": "on the test split"}},
        xaxis={"type": "category", "automargin": True},
        legend={"orientation": "h", "y": -0.25},
    )
    return figures.style(fig, "Side by side (each model at its own threshold for F1)", height=360)


def render_session_models(show_example) -> None:
    """The session's models on the current test split; ``show_example``: a button callback that
    switches the page to the shipped example sweep (for a session with nothing to compare yet)."""
    models = session_models()
    if not models:
        st.info(
            "No models in this session yet. Every model you train or load on **Train / load** is kept "
            "here; with two or more you can compare them on one test split. Meanwhile, look at the example "
            "sweep: eight small models on two demo categories."
        )
        c1, c2 = st.columns(2)
        c1.button(
            "Show the example sweep",
            icon=":material/table_view:",
            on_click=show_example,
            key="compare_example_empty",
        )
        with c2:
            st.page_link("pages/train.py", label="Train a model", icon=":material/model_training:")
        return
    data = state.current_data()
    if data is None or not data.data.has_test:
        st.info(
            "Comparing needs a test split to score the models on: choose the demo data or an MVTec category "
            "on **Train / load**."
        )
        st.page_link("pages/train.py", label="Go to Train / load", icon=":material/model_training:")
        return
    names = [m.name for m in models]
    # A new model (trained or loaded meanwhile) starts a new choice with the newest ones chosen.
    listed = hashlib.sha256("\n".join(names).encode()).hexdigest()[:12]
    chosen_names = st.multiselect(
        "Models", names, default=names[:DEFAULT_CHOSEN], key=f"{keys.K_COMPARE_SESSION_CHOICE}_{listed}"
    )
    chosen = [m for m in models if m.name in chosen_names]
    store = _figures_store(_data_owner(data))
    missing = [m for m in chosen if (m.name, m.version) not in store]
    d = data.data
    st.caption(
        f"Scored on the test split of **{data.ref.describe()}** ({len(d.test)} images, {d.n_anomalous} defective); "
        "each model decides at its own threshold. A model trained on other data is scored here all the same: "
        "see its **trained on** row."
    )
    if missing and st.button(
        f"Score {len(missing)} model(s) on this test split",
        type="primary",
        icon=":material/play_arrow:",
        key="compare_session_score",
    ):
        failed = _score(missing, data, store)
        if not failed:
            st.rerun()  # the figures without the button
        for line in failed:
            st.error(f"Could not score {line}")
    rows = [(m.name, *store[(m.name, m.version)]) for m in chosen if (m.name, m.version) in store]
    if not rows:
        if not chosen:
            st.caption("Choose the models to compare.")
        return
    st.table(_table(rows), width="stretch")
    st.plotly_chart(_bars(rows), config=figures.CONFIG, key="compare_session_bars")
    if len(models) < 2:
        st.caption(
            "Train another model (another variant, more steps, other stages) to compare it with this one."
        )
