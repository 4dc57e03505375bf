"""UI pieces of the Evaluate & threshold page: metrics, curves and a live threshold explorer.

Scoring happens once (``Detector.evaluate``, stored in session state); everything that
depends on the threshold reads the stored scores and maps, inside ``st.fragment`` so moving
the slider reruns only the explorer.
"""

from __future__ import annotations

from collections.abc import Hashable
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from cainnflow.data import read_image
from cainnflow.detector import DEFAULT_THRESHOLD_PERCENTILE, Detector
from cainnflow.errors import CainnflowError
from cainnflow.evaluation import EvaluationResult, comparison_figures
from cainnflow.metrics import confusion_at, misclassified_first, percentile_threshold

from . import figures, keys, loaders, session_store, state
from .display import render_overlay
from .threshold import MIN_VALIDATION_IMAGES, few_validation_images, synthetic_threshold

__all__ = [
    "compare_panel",
    "evaluation_for",
    "render_curves",
    "render_metrics",
    "render_per_defect",
    "require_test_data",
    "threshold_explorer",
]


SLIDER_STEPS = 1000
EXAMPLE_COLUMNS = 4
NA_NO_MASKS = "n/a (no masks)"


def _owner(entry: state.ModelEntry, data: state.DataEntry) -> tuple[Hashable, ...]:
    return state.evaluation_owner(entry, data)


def require_test_data() -> state.DataEntry:
    """The current data when it has a test split; otherwise a message and a stop."""
    data = state.current_data()
    if data is None or not data.data.has_test:
        what = "No dataset is chosen" if data is None else f"**{data.data.name}** has no test images"
        st.info(
            f"{what}. Evaluation needs a test split (good and defective images): choose the demo data "
            "or an MVTec category on **Train / load**, or give a custom folder with test images."
        )
        st.page_link("pages/train.py", label="Go to Train / load", icon=":material/model_training:")
        st.stop()
    return data


def calibrated_threshold(entry: state.ModelEntry) -> float | None:
    """The threshold the model had when first seen here (from its validation normals)."""
    remembered: dict[int, float | None] = st.session_state.setdefault(keys.EVAL_CALIBRATED, {})
    if entry.version not in remembered:
        remembered[entry.version] = entry.detector.threshold
    return remembered[entry.version]


def evaluation_for(entry: state.ModelEntry, data: state.DataEntry) -> EvaluationResult | None:
    """The stored evaluation of this model on this data, or a button that computes it."""
    calibrated_threshold(entry)
    result = state.current_evaluation()
    if result is not None and state.evaluation_is_current(result, entry, data):
        label = "Evaluate again"
    else:
        result, label = None, "Evaluate on test split"
    d = data.data
    st.caption(
        f"Test split of **{d.name}**: {len(d.test)} images ({d.n_anomalous} defective)"
        + ("" if d.has_masks else " — no masks, so image-level metrics only")
    )
    if st.button(label, type="primary" if result is None else "secondary", icon=":material/play_arrow:"):
        bar = st.progress(0.0, text="Scoring the test images…")

        def progress(step: int, total: int) -> None:
            bar.progress(step / max(total, 1), text=f"Scoring the test images… batch {step}/{total}")

        try:
            result = entry.detector.evaluate(d, callback=progress)
        except CainnflowError as exc:
            bar.empty()
            st.error(f"Evaluation failed: {exc}")
            return None
        state.set_evaluation(result)  # kept in the session's folder too: a reload brings it back
        st.rerun()  # shows "Evaluate again" and drops the progress bar
    return result


def render_metrics(result: EvaluationResult) -> None:
    rows = [
        ("Image AUROC", figures.format_value(result.image_auroc, "n/a (one class only)")),
        ("Pixel AUROC", figures.format_value(result.pixel_auroc, NA_NO_MASKS)),
        ("AUPRO (FPR ≤ 0.3)", figures.format_value(result.aupro, NA_NO_MASKS)),
        ("Best F1 on test", figures.format_value(result.f1)),
        ("Time per image", f"{result.ms_per_image:.1f} ms"),
        ("Test images (defective)", f"{result.n_test} ({result.n_anomalous})"),
    ]
    st.table(pd.DataFrame(rows, columns=["metric", "value"]).set_index("metric"), width="content")


def render_curves(result: EvaluationResult) -> None:
    """Image ROC, pixel ROC and the image precision-recall curve."""
    cols = st.columns(3)
    with cols[0]:
        if result.image_roc is not None:
            roc = figures.RocCurve("", result.image_roc.fpr, result.image_roc.tpr, result.image_auroc)
            st.plotly_chart(figures.roc_figure([roc], "Image ROC"), config=figures.CONFIG)
        else:
            st.caption("Image ROC needs both good and defective test images.")
    with cols[1]:
        if result.pixel_roc is not None:
            roc = figures.RocCurve("", result.pixel_roc.fpr, result.pixel_roc.tpr, result.pixel_auroc)
            st.plotly_chart(figures.roc_figure([roc], "Pixel ROC"), config=figures.CONFIG)
        else:
            st.caption(f"Pixel ROC: {NA_NO_MASKS}.")
    with cols[2]:
        if result.image_pr is not None:
            base = result.n_anomalous / max(result.n_test, 1)
            fig = figures.pr_figure(result.image_pr.recall, result.image_pr.precision, base)
            st.plotly_chart(fig, config=figures.CONFIG)
        else:
            st.caption("The PR curve needs defective test images.")


def render_per_defect(result: EvaluationResult) -> None:
    if not result.per_defect:
        st.caption("No defect types in this test split.")
        return
    rows = [
        {
            "defect type": row.defect_type,
            "images": row.n,
            "image AUROC (vs good)": row.image_auroc,
            "pixel AUROC": row.pixel_auroc,
            "mean score": row.mean_score,
        }
        for row in result.per_defect
    ]
    good = result.scores[result.labels == 0]
    if good.size:
        rows.insert(0, {"defect type": "good", "images": int(good.size), "mean score": float(good.mean())})
    st.dataframe(
        pd.DataFrame(rows),
        hide_index=True,
        column_config={
            "image AUROC (vs good)": st.column_config.NumberColumn(format="%.3f"),
            "pixel AUROC": st.column_config.NumberColumn(format="%.3f"),
            "mean score": st.column_config.NumberColumn(format="%.3f"),
        },
    )


# --------------------------------------------------------------------------- threshold explorer


def _slider_range(result: EvaluationResult, extra: list[float | None]) -> tuple[float, float]:
    values = [float(result.scores.min()), float(result.scores.max())] + [v for v in extra if v is not None]
    lo, hi = min(values), max(values)
    pad = 0.02 * max(hi - lo, 1e-6)
    return lo - pad, hi + pad


def _set_threshold(value: float, origin: str = "user") -> None:
    """Shows ``value`` on the slider; ``origin`` says how it was set (:data:`cainnflow.record.THRESHOLD_ORIGINS`)."""
    st.session_state[keys.EVAL_THRESHOLD] = float(value)
    st.session_state[keys.EVAL_THRESHOLD_ORIGIN] = (float(value), origin)


def _shown_origin(threshold: float) -> str:
    """How the shown threshold was set: by the button that set it, ``"user"`` once the slider moved."""
    value, origin = st.session_state.get(keys.EVAL_THRESHOLD_ORIGIN) or (None, "user")
    same = value is not None and abs(threshold - value) <= 1e-9 * max(1.0, abs(threshold))
    return origin if same else "user"


def _set_good_percentile(result: EvaluationResult) -> None:
    good = result.scores[result.labels == 0]
    percentile = float(st.session_state.get(keys.EVAL_GOOD_PERCENTILE, DEFAULT_THRESHOLD_PERCENTILE))
    _set_threshold(percentile_threshold(good, percentile), "test_split")


def results_table(result: EvaluationResult, threshold: float) -> pd.DataFrame:
    """Per-image results at a threshold (the CSV export)."""
    return pd.DataFrame(
        {
            "name": [r.name for r in result.images],
            "defect_type": [r.defect_type for r in result.images],
            "label": result.labels.astype(int),
            "score": result.scores,
            "predicted": (result.scores >= threshold).astype(int),
            "has_mask": result.has_mask.astype(bool),
        }
    )


def _examples(result: EvaluationResult, entry: state.ModelEntry, threshold: float, count: int) -> None:
    order = misclassified_first(result.labels, result.scores, threshold)[:count]
    n_wrong = int(np.sum((result.scores >= threshold) != result.labels.astype(bool)))
    st.caption(
        f"{n_wrong} misclassified at this threshold; they come first (most confidently wrong first), then the "
        "correct images closest to the threshold. White outline: map ≥ threshold; green: ground truth."
    )
    cols = st.columns(EXAMPLE_COLUMNS)
    for k, i in enumerate(order):
        info = result.images[i]
        predicted = result.scores[i] >= threshold
        wrong = bool(predicted) != bool(result.labels[i])
        gt = result.masks[i] if result.masks is not None and result.has_mask[i] else None
        with cols[k % EXAMPLE_COLUMNS]:
            try:
                image = read_image(Path(info.path))
            except CainnflowError as exc:
                st.warning(str(exc))
                continue
            overlay = render_overlay(image, result.maps[i], entry.detector, threshold=threshold, gt_mask=gt)
            verdict = "defective" if predicted else "good"
            mark = "✗ wrong" if wrong else "✓"
            st.image(overlay, width="stretch")
            st.caption(f"{mark} · **{info.defect_type}** → {verdict}  \n{info.name} · score {info.score:.3f}")


def threshold_explorer(entry: state.ModelEntry, data: state.DataEntry, result: EvaluationResult) -> None:
    """The threshold slider and everything that follows from it (a fragment)."""
    owner = _owner(entry, data)
    calibrated = calibrated_threshold(entry)
    if (
        st.session_state.get(keys.EVAL_THRESHOLD_OWNER) != owner
        or keys.EVAL_THRESHOLD not in st.session_state
    ):
        start = entry.detector.threshold if entry.detector.threshold is not None else result.threshold
        st.session_state[keys.EVAL_THRESHOLD] = float(start)
        st.session_state[keys.EVAL_THRESHOLD_OWNER] = owner
    few_validation_warning(entry, data)
    _explorer_fragment(entry, result, calibrated)


def few_validation_warning(entry: state.ModelEntry, data: state.DataEntry) -> None:
    """Flags a threshold set from fewer than ~10 validation images; offers one from synthetic anomalies."""
    n_val = few_validation_images(entry.detector)
    if n_val is None:
        return
    st.warning(
        f"The model's threshold was set from only **{n_val} validation image(s)** (carved from the "
        f"training images); with fewer than {MIN_VALIDATION_IMAGES} it is little more than their highest "
        "score, and good images often land above it. Set it from synthetic anomalies (pasted into the "
        "good training images; the test split is not used), or from the test split below.",
        icon=":material/warning:",
    )
    same_data = state.data_mismatch() is None
    st.button(
        "Set from synthetic anomalies",
        icon=":material/auto_awesome:",
        on_click=_set_synthetic_threshold,
        args=(entry, data),
        disabled=not same_data or not data.data.train,
        help="Needs the data the model was trained on." if not same_data else None,
        key="eval_synthetic_threshold",
    )
    note = st.session_state.get(keys.EVAL_SYNTHETIC_NOTE)
    if note is not None and note[0] == _owner(entry, data):
        st.caption(note[1])


def _set_synthetic_threshold(entry: state.ModelEntry, data: state.DataEntry) -> None:
    try:
        found = synthetic_threshold(entry.detector, data.data)
    except CainnflowError as exc:
        st.session_state[keys.EVAL_SYNTHETIC_NOTE] = (_owner(entry, data), f"Could not set it: {exc}")
        return
    _set_threshold(found.threshold, "synthetic_f1")
    st.session_state[keys.EVAL_SYNTHETIC_NOTE] = (
        _owner(entry, data),
        f"Shown threshold {found.threshold:.4g}: F1-optimal between {found.n_good} validation image(s) and "
        f"{found.n_synthetic} synthetic anomalies. **Save threshold with the model** below to keep it.",
    )


@st.fragment
def _explorer_fragment(entry: state.ModelEntry, result: EvaluationResult, calibrated: float | None) -> None:
    lo, hi = _slider_range(
        result, [calibrated, result.f1_threshold, st.session_state.get(keys.EVAL_THRESHOLD)]
    )
    st.session_state[keys.EVAL_THRESHOLD] = float(np.clip(st.session_state[keys.EVAL_THRESHOLD], lo, hi))

    # Two by two: four in a row cut their labels in a 1000 px window.
    b1, b2 = st.columns(2, vertical_alignment="bottom")
    b3, b4 = st.columns(2, vertical_alignment="bottom")
    b1.button(
        "Calibrated threshold",
        on_click=_set_threshold,
        args=(calibrated if calibrated is not None else result.threshold, "validation_quantile"),
        help="The threshold stored with the model when it was trained: the "
        f"{DEFAULT_THRESHOLD_PERCENTILE:g}th percentile of scores of validation normals (carved from train/good).",
    )
    b2.button(
        "F1-optimal on test",
        on_click=_set_threshold,
        args=(result.f1_threshold if result.f1_threshold is not None else result.threshold, "test_split"),
        disabled=result.f1_threshold is None,
        help="Maximises F1 on this test split — optimistic, since it is chosen on the data it is judged on.",
    )
    b3.slider(
        "Percentile of good test scores",
        50.0,
        100.0,
        DEFAULT_THRESHOLD_PERCENTILE,
        0.5,
        key=keys.EVAL_GOOD_PERCENTILE,
    )
    b4.button(
        "Use percentile",
        on_click=_set_good_percentile,
        args=(result,),
        disabled=not np.any(result.labels == 0),
        help="Threshold at this percentile of the scores of the *good test* images (peeks at the test set).",
    )
    threshold = st.slider(
        "Threshold on the image score (predict defective when score ≥ threshold)",
        min_value=lo,
        max_value=hi,
        step=(hi - lo) / SLIDER_STEPS,
        format="%.4f",
        key=keys.EVAL_THRESHOLD,
    )

    if result.f1_threshold is not None and abs(threshold - result.f1_threshold) <= 1e-9 * max(
        1.0, abs(threshold)
    ):
        st.warning(
            "This threshold is fitted to the test set (F1-optimal on it), so the metrics below are "
            "optimistic: new images will do worse. Keep the calibrated threshold for real use.",
            icon=":material/warning:",
        )
    stats = confusion_at(result.labels, result.scores, threshold)
    m = st.columns(5)
    m[0].metric("Precision", f"{stats.precision:.3f}")
    m[1].metric("Recall", f"{stats.recall:.3f}")
    m[2].metric("F1", f"{stats.f1:.3f}")
    m[3].metric("Accuracy", f"{stats.accuracy:.3f}")
    m[4].metric("FPR", f"{stats.fpr:.3f}", help="False positive rate: good images called defective.")
    left, right = st.columns([2, 1])
    bounds = _slider_range(result, [threshold, calibrated])
    left.plotly_chart(
        figures.score_histogram(result.scores, result.labels, threshold, calibrated, bounds),
        config=figures.CONFIG,
    )
    right.plotly_chart(
        figures.confusion_figure(stats.tp, stats.fp, stats.tn, stats.fn), config=figures.CONFIG
    )

    st.markdown("##### Examples")
    count = st.select_slider("Examples shown", [4, 8, 12, 16], value=8, key=keys.EVAL_N_EXAMPLES)
    _examples(result, entry, threshold, count)

    st.markdown("##### Keep this threshold")
    s1, s2 = st.columns(2)  # one button under the other in each: three in a row cut their labels
    saved = entry.detector.threshold
    if s1.button(
        "Save threshold with the model",
        icon=":material/save:",
        disabled=saved is not None and abs(saved - threshold) < 1e-12,
        help="Sets the model's decision threshold (used by Inspect and in saved checkpoints).",
        width="stretch",
    ):
        path = state.save_threshold(threshold, _shown_origin(threshold))
        where = (
            f" and written to {path.name}"
            if path is not None
            else " (this session's file could not be written)"
        )
        st.toast(f"Threshold {threshold:.4f} saved with the model{where}.")
        st.rerun(scope="app")  # the sidebar shows the threshold
    category = state.model_category(entry.detector) or result.category
    s2.download_button(
        "Download checkpoint",
        data=entry.detector.to_bytes,
        file_name=f"cainnflow_{category}_{entry.detector.config.variant}.safetensors",
        mime="application/octet-stream",
        icon=":material/download:",
        on_click="ignore",
        help=f"The model as a .safetensors checkpoint with its saved threshold ({figures.format_value(saved)}).",
        width="stretch",
    )
    s2.download_button(
        "Per-image results (CSV)",
        data=results_table(result, threshold).to_csv(index=False),
        file_name=f"cainnflow_{result.category}_results.csv",
        mime="text/csv",
        icon=":material/table:",
        on_click="ignore",
        width="stretch",
    )
    s1.caption(
        f"Model's saved threshold: {figures.format_value(saved)} · calibrated: {figures.format_value(calibrated)} · shown: {threshold:.4f}"
    )


# --------------------------------------------------------------------------- comparing two checkpoints


COMPARE_NAME_CHARS = 32
"""Model names longer than this are shortened in the comparison table's headers."""


def _short(name: str, limit: int = COMPARE_NAME_CHARS) -> str:
    if len(name) <= limit:
        return name
    keep = limit - 1
    return f"{name[: keep - keep // 3]}…{name[-(keep // 3) :]}"


def _rate(value: float | None) -> str:
    return figures.format_value(value, "n/a")


def comparison_rows(result: EvaluationResult, threshold: float | None) -> dict[str, str]:
    """A model's column of the comparison table: its metrics and its verdicts at its own threshold."""
    f = comparison_figures(result, threshold)
    at = "at its own threshold"
    return {
        "Image AUROC": figures.format_value(f.image_auroc, "n/a (one class only)"),
        "Pixel AUROC": figures.format_value(f.pixel_auroc, NA_NO_MASKS),
        "AUPRO (FPR ≤ 0.3)": figures.format_value(f.aupro, NA_NO_MASKS),
        "Own threshold (score ≥ it: defective)": f"{f.threshold:.4g}",
        f"Precision {at}": _rate(f.precision),
        f"Recall {at}": _rate(f.recall),
        f"False positive rate {at}": _rate(f.fpr),
        f"F1 {at}": _rate(f.f1),
        "False alarms / missed (of good / defective)": f"{f.fp} / {f.fn} (of {f.n_test - f.n_anomalous} / "
        f"{f.n_anomalous})",
        "Best F1 on test (optimistic)": figures.format_value(f.best_f1),
    }


def _other_checkpoint() -> tuple[str, bytes | Path] | None:
    saved = sorted(p.name for p in session_store.session_dir().glob(f"*{loaders.CHECKPOINT_SUFFIX}"))
    c1, c2 = st.columns(2)
    choice = c1.selectbox(
        "One of this session's checkpoints",
        ["—", *saved],
        key="cf_eval_compare_saved",
        format_func=lambda name: name.removesuffix(loaders.CHECKPOINT_SUFFIX),  # all are; saves width
    )
    upload = c2.file_uploader("or upload one", type=["safetensors"], key="cf_eval_compare_upload")
    if upload is not None:
        return upload.name, upload.getvalue()
    if choice != "—":
        return choice, session_store.session_dir() / choice
    return None


def compare_panel(entry: state.ModelEntry, data: state.DataEntry, result: EvaluationResult) -> None:
    """The current model against another checkpoint on the same test split: ROC overlay, metrics side by side."""
    other = _other_checkpoint()
    owner = _owner(entry, data)
    if other is not None and st.button("Compare on this test split", icon=":material/compare_arrows:"):
        name, source = other
        try:
            with st.spinner(f"Loading and evaluating {name}…"):
                detector = Detector.load(source, device=str(entry.detector.device))
                other_result = detector.evaluate(data.data)
        except CainnflowError as exc:
            st.error(f"Could not compare with {name}: {exc}")
            return
        st.session_state[keys.EVAL_COMPARE] = (owner, name, other_result)
    stored = st.session_state.get(keys.EVAL_COMPARE)
    if stored is None or stored[0] != owner:
        st.caption("Pick a checkpoint to score the same test images with it.")
        return
    _, name, other_result = stored
    current_name = entry.path.name if entry.path else entry.origin
    own = entry.detector.threshold  # saved on this page after the evaluation: that one counts
    columns = {
        f"A (current): {_short(current_name)}": comparison_rows(result, own),
        f"B: {_short(name.removesuffix(loaders.CHECKPOINT_SUFFIX))}": comparison_rows(other_result, None),
    }
    st.table(pd.DataFrame(columns).rename_axis("metric"), width="stretch")  # HTML: wraps, never clips
    st.caption(
        f"A: {current_name} · B: {name}. Each model decides at **its own threshold** (the one saved with it), "
        "not at one shared number: their scores need not share a scale. AUROC and AUPRO need no threshold."
    )
    curves = [
        figures.RocCurve(label, r.image_roc.fpr, r.image_roc.tpr, r.image_auroc)
        for label, r in (("A (current)", result), ("B", other_result))
        if r.image_roc is not None
    ]
    if curves:
        left, _ = st.columns([2, 1])
        left.plotly_chart(figures.roc_figure(curves, "Image ROC, both models"), config=figures.CONFIG)
