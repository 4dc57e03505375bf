"""Train / load, step 3: start a training job, follow its progress, see what it chose."""

from __future__ import annotations

import streamlit as st

from cainnflow.errors import CainnflowError
from cainnflow.model import CAINNFlowConfig
from cainnflow.record import AutoReport
from cainnflow.training import TrainConfig

from . import display, figures, hosting, jobs, keys, loaders, session_store, state
from .jobs import TrainingJob
from .model_actions import notify

__all__ = ["train_section"]

POLL_SECONDS = 1.0


def _ray_address() -> str | None:
    typed = str(st.session_state.get(keys.K_RAY_ADDRESS) or "").strip()
    return None if hosting.is_hosted() or not typed else typed


def _start_training(
    data: state.DataEntry, config: CAINNFlowConfig, train_config: TrainConfig, random: bool
) -> None:
    job = TrainingJob(
        data.data,
        config,
        train_config,
        weights="random" if random else "auto",
        device=state.get(keys.DEVICE_CHOICE),
        label=data.ref.describe(),
        dataset=data.ref,
        save_dir=session_store.session_dir(),
        address=_ray_address(),
        auto=bool(st.session_state.get(keys.K_AUTO)) and _ray_address() is None,
    )
    try:
        st.session_state[keys.TRAIN_JOB] = jobs.start_job(session_store.session_token(), job)
    except CainnflowError as exc:
        notify("error", f"Training not started: {exc}")


def _auto_summary(auto: AutoReport) -> None:
    """What "choose settings for me" tried and chose, on held-out good images + synthetic defects."""
    chosen, proposed = auto.chosen, auto.proposed_threshold
    verb, why = "Chose", ""
    if auto.kept_defaults:
        verb = "Kept the default settings"
        why = (
            " — no other setting led them clearly (by more than a tenth of an AUROC point in 95 % of "
            "resamples of the held-out images)"
        )
    elif chosen.lead_low is not None:
        why = (
            f" — it led the defaults in 95 % of resamples of the held-out images (by ≥ {chosen.lead_low:.4f})"
        )
    st.info(
        f"{verb}: stages {', '.join(map(str, chosen.stages))}, smoothing σ = {chosen.sigma:g}{why}. On "
        f"{auto.n_holdout} held-out good images and {auto.n_synthetic} synthetic "
        f"defects they gave image AUROC {chosen.image_auroc:.3f}, pixel AUROC {chosen.pixel_auroc:.3f}"
        + (f", AUPRO {chosen.aupro:.3f}." if chosen.aupro is not None else ".")
        + (f" Proposed threshold {proposed:.4g} (Evaluate page)." if proposed is not None else ""),
        icon=":material/auto_awesome:",
    )
    with st.expander(f"All {len(auto.candidates)} settings tried"):
        st.dataframe(
            [
                {
                    "stages": " ".join(map(str, c.stages)),
                    "σ": c.sigma,
                    "image AUROC": round(c.image_auroc, 4),
                    "pixel AUROC": round(c.pixel_auroc, 4),
                    "AUPRO": "–" if c.aupro is None else f"{c.aupro:.4f}",
                    "lead over the defaults (95 % low)": "defaults"
                    if c.lead_low is None
                    else f"{c.lead_low:+.4f}",
                }
                for c in auto.candidates
            ],
            hide_index=True,
        )


def _adopt_cancelled(job: TrainingJob) -> None:
    detector = job.take_detector(include_cancelled=True)
    if detector is not None:
        state.set_model(detector, origin=f"trained on {job.label} (cancelled early)")


def _progress_panel(polling: bool) -> None:
    """Progress of this session's training job; polled every second while it runs."""
    job: TrainingJob | None = state.get(keys.TRAIN_JOB)
    if job is None:
        st.caption("No training started in this session yet.")
        return
    snap = job.snapshot()
    progress = snap.progress
    if snap.running:
        if snap.note:
            st.caption(f"Choosing settings: {snap.note}")
        if progress is None:
            st.progress(0.0, text=f"Preparing {snap.label}: building the backbone…")
        elif progress.phase == "features":
            st.progress(
                progress.fraction,
                text=f"Caching backbone features: batch {progress.step}/{progress.steps} · "
                f"ETA {display.format_seconds(progress.eta_s)}",
            )
        else:
            val = "" if progress.val_loss is None else f" · val {progress.val_loss:.4f}"
            loss = "" if progress.loss is None else f" · loss {progress.loss:.4f}"
            st.progress(
                progress.fraction,
                text=f"Training flows: epoch {progress.epoch}/{progress.epochs}, step {progress.step}/"
                f"{progress.steps}{loss}{val} · ETA {display.format_seconds(progress.eta_s)}",
            )
        st.button("Cancel training", icon=":material/stop_circle:", on_click=job.cancel)
    elif snap.state == "done":
        took = display.format_seconds((snap.finished or snap.started) - snap.started)
        entry = state.current_model()
        current = entry is not None and job.saved_path is not None and entry.path == job.saved_path
        saved = f" Saved as {job.saved_path.name}." if job.saved_path else ""
        st.success(
            f"Training on {snap.label} finished in {took}"
            + ("; it is the current model." if current else ".")
            + saved,
            icon=":material/check:",
        )
        if job.auto_report is not None:
            _auto_summary(job.auto_report)
    elif snap.state == "failed":
        st.error(f"Training failed: {snap.error}")
    elif snap.state == "cancelled":
        st.warning(snap.error or "Training was cancelled; the best epoch so far was kept.")
        if job.detector is not None and not job.taken:
            st.button("Use the partly trained model", on_click=_adopt_cancelled, args=(job,))
    if snap.loss_points:
        st.plotly_chart(figures.loss_figure(snap.loss_points), key="train_loss_chart", config=figures.CONFIG)
    if polling and not snap.running:
        st.rerun()  # the whole app: adopt the model, update the sidebar, stop polling


def _estimate_caption(config: CAINNFlowConfig, train_config: TrainConfig, n_images: int) -> None:
    """The expected training time, from this server's measured speed for this configuration."""
    from cainnflow.estimate import estimate_from_timings  # PyTorch is loaded by now (step_timings)

    timings = loaders.step_timings(config.to_json(), state.get(keys.DEVICE_CHOICE))
    if timings is None:
        return
    backbone_s, step_s, batch = timings
    est = estimate_from_timings(
        n_images, backbone_s * min(batch, n_images) / batch, step_s, int(batch), train_config
    )
    busy = jobs.running_jobs()
    st.caption(
        f"Expected training time here: about **{display.format_seconds(est.total_s)}** for {n_images} good images "
        f"({display.format_seconds(est.feature_s)} of features, then up to {est.steps} steps × {est.step_s:.2f} s; "
        "early stopping often ends sooner)"
        + (f". {busy} other training job(s) running on this server will slow it." if busy else ".")
    )


def train_section(config: CAINNFlowConfig | None, train_config: TrainConfig, random: bool) -> None:
    st.subheader("3 · Train")
    job: TrainingJob | None = state.get(keys.TRAIN_JOB)
    running = job is not None and job.snapshot().running
    data = state.current_data()
    if (
        st.button(
            "Train",
            type="primary",
            icon=":material/play_arrow:",
            disabled=running or data is None or config is None,
            help="Trains in the background: you can open other pages and come back. The model is saved "
            "in this session's folder when it finishes.",
        )
        and data is not None
        and config is not None
    ):
        _start_training(data, config, train_config, random)
        st.rerun()
    if data is None:
        st.caption("Choose a dataset first.")
    elif config is not None and not running:
        _estimate_caption(config, train_config, len(data.data.train))
    st.caption(f"Server: {jobs.running_jobs()} of {hosting.max_jobs()} training slot(s) in use.")
    st.fragment(run_every=POLL_SECONDS if running else None)(_progress_panel)(polling=running)
