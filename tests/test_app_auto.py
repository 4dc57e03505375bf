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


def _summary(kept: bool) -> None:
    from app.train_job import _auto_summary
    from cainnflow.auto_report import AutoCandidate, AutoReport

    default = AutoCandidate((1, 2, 3, 4), 4.0, "max", 0.97, 0.98, 0.975)
    other = AutoCandidate(
        (2, 3), 4.0, "max", 0.98, 0.985, 0.9825, lead_low=-0.001 if kept else 0.002, aupro=0.945
    )
    chosen = default if kept else other
    _auto_summary(AutoReport(chosen, (default, other), 30, 8, 72, ("crack",), None, 10.0))


def test_the_summary_says_whether_the_defaults_were_kept_and_shows_each_lead() -> None:
    from streamlit.testing.v1 import AppTest

    for kept, opening in ((True, "Kept the default settings"), (False, "Chose: stages 2, 3")):
        at = AppTest.from_function(_summary, args=(kept,)).run()
        assert not at.exception
        assert at.info[0].value.startswith(opening), at.info[0].value
        assert ("no other setting led them clearly" in at.info[0].value) is kept
        table = at.dataframe[0].value
        assert list(table["AUPRO"]) == ["–", "0.9450"]  # the default's record predates AUPRO here
        assert ("AUPRO 0.945" in at.info[0].value) is not kept
        assert list(table["lead over the defaults (95 % low)"]) == [
            "defaults",
            "-0.0010" if kept else "+0.0020",
        ]
