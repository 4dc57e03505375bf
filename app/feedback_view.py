"""Operator feedback on Inspect: mark an image "good (false alarm)" or "defective (missed)",
see the image threshold recalibrated at once, and retrain with the images marked good.

The data model and the rule are the library's (:mod:`cainnflow.feedback`); this module lays
out the buttons and the summary, keeps each marked image in the session's folder
(:func:`app.session_store.keep_feedback_image`, which a retraining reads) and writes the
feedback into the current model's record, saved with the new threshold in the model's file
(:func:`app.state.save_threshold`): a reload, which loads that file again, and a download of
the model bring the feedback back.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from cainnflow.data import DEFAULT_VAL_FRACTION, read_image, split_train_val
from cainnflow.errors import CainnflowError
from cainnflow.feedback import (
    DEFECTIVE,
    GOOD,
    FeedbackItem,
    FeedbackSet,
    Recalibration,
    content_hash,
    recalibrate,
    verdict_flips,
)

from . import display, hosting, jobs, keys, session_store, state
from .feedback_job import RetrainJob, kept_images, recorded_train_config, with_marked_good

__all__ = ["Change", "batch_marks", "feedback_set", "mark_buttons", "summary_panel"]


@dataclass(frozen=True)
class Change:
    """What the last mark (or unmark) did to the image threshold."""

    what: str
    before: float | None
    after: float | None
    recalibration: Recalibration | None
    saved: bool


# --------------------------------------------------------------------------- the feedback of a model


def _recorded(detector: object) -> FeedbackSet:
    """The feedback in a model's record (checked when its checkpoint was read); none for an export."""
    record = getattr(detector, "record", None)
    raw = record.feedback if record is not None else None
    try:
        return FeedbackSet() if raw is None else FeedbackSet.from_dict(raw)
    except ValueError:
        return FeedbackSet()


def feedback_set(entry: state.ModelEntry) -> FeedbackSet:
    """The feedback given to the current model: this session's, else its record's."""
    stored = st.session_state.get(keys.FEEDBACK)
    if stored is not None and stored[0] == entry.version:
        return stored[1]
    marks = _recorded(entry.detector)
    st.session_state[keys.FEEDBACK] = (entry.version, marks)
    return marks


def _validation_scores(entry: state.ModelEntry) -> np.ndarray:
    """Scores of the model's held-out good images, when the current data is the model's (else none).

    The split is the one training carved (:func:`cainnflow.data.split_train_val`, the
    model's recorded seed); they are scored once per model.
    """
    cache = st.session_state.get(keys.FEEDBACK_VALIDATION) or {}
    if entry.version in cache:
        return cache[entry.version]
    data, detector = state.current_data(), entry.detector
    scores = np.empty(0)
    same_data = data is not None and state.data_mismatch() is None
    if same_data and data.data.train and state.model_category(detector) in ("", data.data.name):
        record = getattr(detector, "record", None)  # an export records no training
        seed = ((record.train_config if record is not None else None) or {}).get("seed", 0)
        seed = seed if isinstance(seed, int) and not isinstance(seed, bool) else 0
        _, val = split_train_val(data.data.train, DEFAULT_VAL_FRACTION, seed=seed)
        if val:
            scores = np.asarray(detector.predict([s.path for s in val]).scores, dtype=np.float64)
    st.session_state[keys.FEEDBACK_VALIDATION] = {entry.version: scores}
    return scores


def _base(entry: state.ModelEntry, marks: FeedbackSet) -> float | None:
    return marks.base_threshold if marks.base_threshold is not None else entry.detector.threshold


def _recalibration(entry: state.ModelEntry, marks: FeedbackSet) -> Recalibration | None:
    """The threshold ``marks`` give the current model (None: nothing marked)."""
    if not len(marks):
        return None
    defective = marks.scores(DEFECTIVE)
    validation = _validation_scores(entry) if defective.size else ()
    return recalibrate(_base(entry, marks), marks.scores(GOOD), defective, validation=validation)


def _apply(entry: state.ModelEntry, marks: FeedbackSet, what: str) -> None:
    """Records ``marks`` in the model, sets the threshold they give and saves the model's file."""
    detector = entry.detector
    if getattr(detector, "record", None) is None:  # the demo model's export, PyTorch not there
        st.toast("Feedback needs the PyTorch model, which is not loaded.", icon=":material/error:")
        return
    before = detector.threshold
    recalibration = _recalibration(entry, marks)
    after = recalibration.after if recalibration is not None else _base(entry, marks)
    detector.record = replace(detector.record, feedback=marks.to_dict())
    saved = after is not None and state.save_threshold(after, origin="feedback") is not None
    st.session_state[keys.FEEDBACK] = (entry.version, marks)
    st.session_state[keys.FEEDBACK_LAST] = (entry.version, Change(what, before, after, recalibration, saved))
    if after is not None:  # Inspect's threshold slider follows (it starts at its lowest colour)
        low = display.color_range(detector)[0] if detector.stats is not None else after
        st.session_state[f"{keys.K_INSPECT_THRESHOLD}{entry.version}"] = max(float(after), low)


def _last_change(entry: state.ModelEntry) -> Change | None:
    last = st.session_state.get(keys.FEEDBACK_LAST)
    return last[1] if last is not None and last[0] == entry.version else None


# --------------------------------------------------------------------------- marking


def _png(data: bytes, name: str) -> bytes:
    image = read_image(data, name=name, max_side=hosting.KEEP_SIDE, max_pixels=hosting.MAX_UPLOAD_PIXELS)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _mark(entry: state.ModelEntry, name: str, data: bytes, label: str, source: str, score: float) -> None:
    state.upgrade_quick_model(wait=True)  # the record is saved with the PyTorch model's file
    try:
        item = FeedbackItem.create(name, data, label, source, score=score)
        session_store.keep_feedback_image(item.sha256, _png(data, name))
        marks = feedback_set(entry).mark(item, base_threshold=entry.detector.threshold)
        _apply(entry, marks, f"{item.name} marked {label}")
    except (CainnflowError, ValueError, OSError) as exc:
        st.toast(f"Not marked: {exc}", icon=":material/error:")


def _unmark(entry: state.ModelEntry, sha256: str, name: str) -> None:
    state.upgrade_quick_model(wait=True)
    _apply(entry, feedback_set(entry).unmark(sha256), f"{name} unmarked")


def _forget_all(entry: state.ModelEntry) -> None:
    state.upgrade_quick_model(wait=True)
    marks = feedback_set(entry)
    _apply(entry, FeedbackSet(base_threshold=marks.base_threshold), "all feedback forgotten")


def mark_buttons(
    entry: state.ModelEntry, name: str, data: bytes, score: float, source: str, *, key: str
) -> None:
    """ "Mark good" (a false alarm) / "Mark defective" (a missed defect) for one scored image, or its mark
    and an undo when it is marked already."""
    sha256 = content_hash(data)
    marked = feedback_set(entry).get(sha256)
    if marked is not None:
        icon = ":material/check:" if marked.label == GOOD else ":material/report:"
        st.caption(f"{icon} Marked **{marked.label}** by you")
        st.button(
            "Unmark",
            key=f"feedback_unmark_{key}",
            on_click=_unmark,
            args=(entry, sha256, name),
            icon=":material/undo:",
            type="tertiary",
        )
        return
    args = (entry, name, data)
    st.button(
        "Mark good",
        key=f"feedback_good_{key}",
        on_click=_mark,
        args=(*args, GOOD, source, score),
        icon=":material/thumb_up:",
        help="A false alarm: this image is fine. It joins the good images (a retraining uses it) and the "
        "threshold is recalibrated at once.",
    )
    st.button(
        "Mark defective",
        key=f"feedback_defective_{key}",
        on_click=_mark,
        args=(*args, DEFECTIVE, source, score),
        icon=":material/thumb_down:",
        help="A missed defect: this image shows one. It joins the labelled defects and the threshold is "
        "recalibrated at once.",
    )


def _read(source: bytes | Path) -> bytes | None:
    try:
        return source if isinstance(source, bytes) else Path(source).read_bytes()
    except OSError:
        return None


def batch_marks(entry: state.ModelEntry, table: pd.DataFrame, sources: dict[str, bytes | Path]) -> None:
    """Pick an image of a scored batch and mark it (while its files are still there)."""
    scores = dict(zip(table["image"], table["score"], strict=True))
    names = [name for name in scores if name in sources]
    if not names:
        st.caption("The batch's images are gone from the uploader: add them again to mark one.")
        return
    threshold = entry.detector.threshold
    left, right = st.columns([3, 2], vertical_alignment="bottom")
    name = left.selectbox(
        "Mark an image of this batch",
        names,
        format_func=lambda n: f"{n} · {scores[n]:.4g} · {display.verdict(scores[n], threshold)}",
        key="inspect_batch_mark_pick",
    )
    data = _read(sources[name])
    with right:
        if data is None:
            st.caption(f"{name} cannot be read any more.")
        else:
            mark_buttons(
                entry, name, data, float(scores[name]), "batch", key=f"batch_{content_hash(data)[:16]}"
            )


# --------------------------------------------------------------------------- the summary and retraining


def _retrain_problem(entry: state.ModelEntry, marks: FeedbackSet) -> str | None:
    """Why a retraining with the marked good images cannot start now (None: it can)."""
    data = state.current_data()
    job = st.session_state.get(keys.TRAIN_JOB)
    if not marks.with_label(GOOD):
        return "Mark at least one image good to retrain with it."
    if data is None or not data.data.train or data.ref is None or state.data_mismatch() is not None:
        return "Open the model's training data on **Train / load** to retrain with the marked images."
    if job is not None and job.snapshot().running:
        return "A training of this session is running (see **Train / load**)."
    return None


def _retrain(entry: state.ModelEntry) -> None:
    """Starts a background training on the training images plus the marked good ones."""
    state.upgrade_quick_model(wait=True)
    marks, data, detector = feedback_set(entry), state.current_data(), entry.detector
    good = kept_images(marks, session_store.feedback_image, GOOD)
    if data is None or data.ref is None or not good:
        st.toast("Not retrained: the marked images or the data are gone.", icon=":material/error:")
        return
    origin = getattr(getattr(detector.backbone, "weights", None), "origin", None)
    job = RetrainJob(
        with_marked_good(data.data, list(good.values())),
        detector.config,
        recorded_train_config(detector.record.train_config),
        weights="random" if origin == "random" else "auto",
        device=state.get(keys.DEVICE_CHOICE),
        label=f"{data.ref.describe()} + {len(good)} marked good",
        dataset=data.ref,
        save_dir=session_store.session_dir(),
        feedback=marks,
        images=kept_images(marks, session_store.feedback_image),
    )
    try:
        st.session_state[keys.TRAIN_JOB] = jobs.start_job(session_store.session_token(), job)
    except CainnflowError as exc:
        st.toast(f"Not retrained: {exc}", icon=":material/error:")


def _use_recalibration(entry: state.ModelEntry) -> None:
    state.upgrade_quick_model(wait=True)
    _apply(entry, feedback_set(entry), "recalibrated on this model")


def _marked_table(marks: FeedbackSet) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "image": i.name,
                "marked": i.label,
                "from": i.source,
                "score": i.score,
                "when (UTC)": i.marked_at,
            }
            for i in reversed(marks.items)
        ],
        columns=["image", "marked", "from", "score", "when (UTC)"],
    )


def _fmt(value: float | None) -> str:
    return "none" if value is None else f"{value:.4g}"


def _flips_text(scores: Sequence[float], before: float | None, after: float | None, where: str) -> str:
    if after is None or not len(scores):
        return ""
    to_good, to_bad = verdict_flips(scores, before, after)
    if not to_good + to_bad:
        return f"no verdict {where} changed"
    parts = [f"{n} {what}" for n, what in ((to_good, "anomalous → good"), (to_bad, "good → anomalous")) if n]
    return f"**{to_good + to_bad}** verdict(s) {where} flipped ({', '.join(parts)})"


def summary_panel(entry: state.ModelEntry, scores: Sequence[float], *, key: str, where: str = "here") -> None:
    """The feedback given so far: the threshold before → after, verdicts flipped among ``scores``
    (the images on this panel), the marked images, and retraining with the good ones."""
    marks = feedback_set(entry)
    threshold = entry.detector.threshold
    with st.container(border=True):
        if not len(marks):
            st.caption(
                ":material/rate_review: **Feedback.** A false alarm or a missed defect? Mark the image "
                "below its verdict: the image threshold is recalibrated at once, good images join the "
                "training set for a retraining."
            )
            return
        base, counts = marks.base_threshold, marks.counts()
        recalibration = _recalibration(entry, marks)
        c1, c2, c3 = st.columns(3)
        c1.metric(
            "Image threshold",
            _fmt(threshold),
            delta=None if base is None or threshold is None else f"{threshold - base:+.4g} by feedback",
            delta_color="off",
            help=f"Before any feedback it was {_fmt(base)}.",
        )
        c2.metric("Marked good", counts[GOOD])
        c3.metric("Marked defective", counts[DEFECTIVE])
        text = f"Threshold **{_fmt(base)} → {_fmt(threshold)}**"
        if recalibration is not None:
            text += f": {recalibration.describe()}"
        flips = _flips_text(scores, base, threshold, where)
        st.markdown(text + (f"; {flips} since the first mark." if flips else "."))
        last = _last_change(entry)
        if last is not None:
            flips = _flips_text(scores, last.before, last.after, where)
            st.caption(
                f"Last: {last.what}, threshold {_fmt(last.before)} → {_fmt(last.after)}"
                + (f"; {flips}" if flips else "")
                + ("." if last.saved else " (not saved: the session's storage is full or read-only).")
            )
        if recalibration is not None and threshold is not None and recalibration.after != threshold:
            st.warning(
                f"The model's threshold ({threshold:.4g}) is not the one its feedback gives "
                f"({recalibration.after:.4g}): it was set elsewhere, or the model was retrained.",
                icon=":material/sync_problem:",
            )
            st.button(
                f"Use {recalibration.after:.4g}",
                key=f"feedback_apply_{key}",
                on_click=_use_recalibration,
                args=(entry,),
            )
        problem = _retrain_problem(entry, marks)
        st.button(
            f"Retrain with the {counts[GOOD]} marked good image(s)",
            key=f"feedback_retrain_{key}",
            on_click=_retrain,
            args=(entry,),
            disabled=problem is not None,
            icon=":material/model_training:",
            help=problem
            or "Trains a new model in the background on the training images plus the marked good ones, "
            "with this model's settings; it becomes the current model when it finishes.",
        )
        job = st.session_state.get(keys.TRAIN_JOB)
        if isinstance(job, RetrainJob) and job.snapshot().running:
            st.caption(f"Retraining on {job.label}… Progress on **Train / load**.")
        with st.expander(f"{len(marks)} marked image(s)"):
            st.dataframe(
                _marked_table(marks),
                hide_index=True,
                column_config={"score": st.column_config.NumberColumn(format="%.4g")},
            )
            st.button(
                "Forget all feedback",
                key=f"feedback_forget_{key}",
                on_click=_forget_all,
                args=(entry,),
                icon=":material/delete:",
                type="tertiary",
                help=f"Unmarks every image; the threshold goes back to {_fmt(base)}.",
            )
