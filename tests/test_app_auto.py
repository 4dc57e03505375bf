"""The Train page's "choose settings for me": the background job runs auto-configuration."""

from __future__ import annotations

from pathlib import Path

from app import jobs
from cainnflow.data import load_mvtec_category
from cainnflow.demo_data import make_demo_dataset
from cainnflow.model import CAINNFlowConfig
from cainnflow.training import TrainConfig


def test_training_job_with_auto_reports_its_phases_and_keeps_the_evidence(tmp_path: Path) -> None:
    make_demo_dataset(
        tmp_path / "demo",
        categories=("blister_pack",),
        image_size=96,
        n_train=10,
        n_test_good=1,
        n_test_per_defect=1,
    )
    data = load_mvtec_category(tmp_path / "demo", "blister_pack")
    job = jobs.TrainingJob(
        data,
        CAINNFlowConfig(image_size=64),
        TrainConfig(max_steps=15, min_steps=15, batch_size=4),
        device="cpu",
        label="blister",
        save_dir=tmp_path / "models",
        alive=lambda: True,
        auto=True,
    )
    notes: list[str] = []
    original = job._on_progress

    def record(progress):
        if isinstance(progress, str):
            notes.append(progress)
        original(progress)

    job._on_progress = record
    job.start().join(timeout=600)
    snap = job.snapshot()
    assert snap.state == "done", snap.error
    assert len(notes) >= 3 and snap.note == notes[-1]
    detector = job.take_detector()
    assert job.auto_report is detector.record.auto
    assert detector.record.auto.chosen.stages == detector.config.out_indices
    assert job.saved_path is not None and job.saved_path.exists()
