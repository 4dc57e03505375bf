"""Sweeps (serial and on a local Ray), resumability, the paper table and remote training."""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from cainnflow.cli import add_sweep_parser, run_sweep_command
from cainnflow.data import load_mvtec_category
from cainnflow.demo_data import make_demo_dataset
from cainnflow.detector import Detector
from cainnflow.errors import CainnflowError, DataError, WeightsUnavailableError
from cainnflow.model import CAINNFlowConfig
from cainnflow.sweep import (
    RESULT_COLUMNS,
    RESULTS_FILE,
    TABLE_FILE,
    RayUnavailableError,
    SweepGrid,
    SweepProgress,
    Trial,
    TrialResult,
    paper_table,
    parse_results,
    read_results,
    results_csv,
    run_sweep,
    train_remote,
)
from cainnflow.training import TrainConfig, TrainProgress

SIZE = 64
CATEGORIES = ("carpet_weave", "pill_disc")


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_demo_dataset(
        tmp_path_factory.mktemp("demo"),
        categories=CATEGORIES,
        image_size=SIZE,
        n_train=20,
        n_test_good=5,
        n_test_per_defect=2,
    )


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray for the module (2 CPUs), connected the way the library connects."""
    ray = pytest.importorskip("ray")
    from cainnflow.sweep import connect_ray, disconnect_ray

    connect_ray(None)
    yield ray
    disconnect_ray()


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_sweep_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["sweep", *argv])


def _grid(**changes) -> SweepGrid:
    settings = dict(
        categories=CATEGORIES, variants=("CAC", "CC"), image_sizes=(SIZE,), epochs=1, batch_size=8
    )
    return SweepGrid(**{**settings, **changes})


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_grid_expands_every_combination_with_stable_distinct_keys() -> None:
    trials = _grid(steps=(1, 2), seeds=(0, 1)).trials()
    assert len(trials) == 2 * 2 * 2 * 2
    assert len({t.key for t in trials}) == len(trials)
    assert [t.key for t in trials] == [t.key for t in _grid(steps=(1, 2), seeds=(0, 1)).trials()]
    assert all(t.image_size == SIZE and t.epochs == 1 for t in trials)
    default_size = SweepGrid(categories=("a",)).trials()[0]
    assert default_size.image_size == CAINNFlowConfig().image_size
    assert default_size.epochs == TrainConfig().epochs


@pytest.mark.parametrize(
    "changes",
    [{"variants": ("XYZ",)}, {"backbones": ("nope",)}, {"steps": (0,)}, {"categories": ()}, {"epochs": 0}],
)
def test_bad_grid_is_one_clear_error(changes: dict) -> None:
    with pytest.raises(CainnflowError):
        _grid(**changes).trials()


def test_no_ray_sweep_writes_rows_checkpoints_and_table_and_resumes(
    demo_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # the serial path needs no Ray at all
    out = tmp_path / "sweep"
    argv = ["--data-root", str(demo_root), "--categories", *CATEGORIES, "--variants", "CAC"]
    argv += ["--image-sizes", str(SIZE), "--epochs", "1", "--batch-size", "8", "--out", str(out), "--no-ray"]
    assert run_sweep_command(_parse(argv)) == 0
    printed = capsys.readouterr().out
    assert "sweep: 2 trials, 0 already finished, 2 to run" in printed
    assert "[1/2] carpet_weave" in printed and "[2/2] pill_disc" in printed and "| **mean** |" in printed
    grid = _grid(variants=("CAC",))
    rows = _rows(out / RESULTS_FILE)
    assert [r["category"] for r in rows] == list(CATEGORIES)
    assert set(rows[0]) == set(RESULT_COLUMNS)
    for row in rows:
        assert 0.0 <= float(row["image_auroc"]) <= 1.0
        assert 0.0 <= float(row["pixel_auroc"]) <= 1.0
        assert float(row["train_s"]) > 0 and float(row["ms_per_image"]) > 0
        detector = Detector.load(out / row["checkpoint"], device="cpu")
        assert detector.is_trained and detector.record.sweep_key == row["key"]
        assert detector.config.variant == "CAC" and detector.config.image_size == SIZE
    table = (out / TABLE_FILE).read_text()
    assert "carpet_weave" in table and "**mean**" in table

    # A crash after the first trial: only the missing one runs again.
    with (out / RESULTS_FILE).open() as f:
        header, first_row, _ = f.readlines()
    (out / RESULTS_FILE).write_text(header + first_row)
    again = run_sweep(grid, out, demo_root, use_ray=False)
    assert (again.ran, again.skipped) == (1, 1)
    assert [r["key"] for r in _rows(out / RESULTS_FILE)] == [r["key"] for r in rows]

    # Same arguments once more: nothing to do.
    reports: list[SweepProgress] = []
    assert run_sweep(grid, out, demo_root, use_ray=False, on_progress=reports.append).ran == 0
    assert reports == [SweepProgress(2, 2, skipped=2)]
    assert len(read_results(out / RESULTS_FILE)) == 2


def _sweep_process(demo_root: Path, out: Path, variant: str) -> subprocess.Popen:
    argv = ["--data-root", str(demo_root), "--categories", *CATEGORIES, "--variants", variant]
    argv += ["--image-sizes", str(SIZE), "--epochs", "1", "--batch-size", "8", "--out", str(out), "--no-ray"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    return subprocess.Popen(
        [sys.executable, "-m", "cainnflow", "sweep", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def test_two_concurrent_sweeps_into_one_out_keep_every_row(demo_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "shared"
    first, second = _sweep_process(demo_root, out, "CAC"), _sweep_process(demo_root, out, "CC")
    for proc in (first, second):
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err
    rows = _rows(out / RESULTS_FILE)
    assert sorted((r["category"], r["variant"]) for r in rows) == sorted(
        (c, v) for c in CATEGORIES for v in ("CAC", "CC")
    )
    assert all((out / r["checkpoint"]).is_file() for r in rows)
    header = (out / TABLE_FILE).read_text().splitlines()[0]
    assert header == "| category | CAC | CC |"


def test_results_of_another_data_root_are_refused(demo_root: Path, tmp_path: Path) -> None:
    elsewhere = _result(CATEGORIES[0], "CAC", 0, 0.9, 0.9)
    (tmp_path / RESULTS_FILE).write_bytes(results_csv([elsewhere]))
    with pytest.raises(CainnflowError, match="another data root"):
        run_sweep(_grid(), tmp_path, demo_root, use_ray=False)


def test_missing_category_or_root_fails_before_any_training(demo_root: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError):
        run_sweep(_grid(categories=("no_such",)), tmp_path / "a", demo_root, use_ray=False)
    with pytest.raises(DataError):
        run_sweep(_grid(), tmp_path / "b", tmp_path / "missing", use_ray=False)
    assert not (tmp_path / "a" / RESULTS_FILE).exists()


def test_without_ray_the_command_says_how_to_install_it(
    demo_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    args = _parse(["--data-root", str(demo_root), "--categories", *CATEGORIES, "--out", str(tmp_path)])
    with pytest.raises(RayUnavailableError, match=r"pip install .*--no-ray"):
        run_sweep_command(args)
    assert not (tmp_path / RESULTS_FILE).exists()


def _result(category: str, variant: str, seed: int, image: float, pixel: float | None) -> TrialResult:
    trial = Trial(category, "tf_efficientnet_lite0", variant, 1, SIZE, seed, 1, 2e-3, 16, "auto")
    return TrialResult(trial, image, pixel, None, 1.0, 2.0, "cpu", "host", "c.safetensors", "/data")


def test_paper_table_averages_seeds_and_categories() -> None:
    results = [
        _result("a", "CAC", 0, 0.90, 0.80),
        _result("a", "CAC", 1, 1.00, 0.90),
        _result("b", "CAC", 0, 0.80, None),
        _result("a", "CC", 0, 0.50, 0.60),
    ]
    lines = paper_table(results).splitlines()
    assert lines[0] == "| category | CAC | CC |"
    assert lines[2] == "| a | 95.00 / 85.00 | 50.00 / 60.00 |"
    assert lines[3] == "| b | 80.00 / — | — |"
    assert lines[4] == "| **mean** | 87.50 / 85.00 | 50.00 / 60.00 |"
    assert "mean over 2 seeds" in lines[-1]


def test_results_round_trip_and_bad_files() -> None:
    results = [_result("a", "CAC", 0, 0.9, None), _result("b", "CC", 1, 0.7, 0.6)]
    assert parse_results(results_csv(results).decode()) == results
    with pytest.raises(DataError, match="missing"):
        parse_results("category,variant\na,CAC\n")
    text = results_csv(results).decode().replace(",1,64,", ",one,64,", 1)
    with pytest.raises(DataError, match="line 2"):
        parse_results(text)


# --------------------------------------------------------------------------- on a local Ray


def test_ray_sweep_2x2_on_demo_data_then_resumes(demo_root: Path, tmp_path: Path, local_ray) -> None:
    out = tmp_path / "ray_sweep"
    first = run_sweep(_grid(), out, demo_root, cpus_per_trial=1)
    assert (first.total, first.ran, first.failed) == (4, 4, [])
    rows = _rows(out / RESULTS_FILE)
    assert len(rows) == 4
    assert {(r["category"], r["variant"]) for r in rows} == {
        (c, v) for c in CATEGORIES for v in ("CAC", "CC")
    }
    assert all((out / r["checkpoint"]).is_file() for r in rows)
    second = run_sweep(_grid(), out, demo_root)
    assert (second.ran, second.skipped) == (0, 4)
    assert _rows(out / RESULTS_FILE) == rows


def test_ray_refuses_resources_the_cluster_lacks(demo_root: Path, tmp_path: Path, local_ray) -> None:
    with pytest.raises(RayUnavailableError, match="GPU"):
        run_sweep(_grid(), tmp_path, demo_root, gpus_per_trial=64)


def test_a_trial_error_comes_back_typed_through_ray(demo_root: Path, tmp_path: Path, local_ray) -> None:
    grid = _grid(categories=CATEGORIES[:1], variants=("CC",), weights=str(tmp_path / "missing.pt"))
    summary = run_sweep(grid, tmp_path / "out", demo_root)
    assert summary.ran == 0 and [f.trial for f in summary.failed] == grid.trials()
    error = summary.failed[0].error
    assert error.startswith("WeightsUnavailableError: ") and "missing.pt" in error
    assert "\n" not in error and "Traceback" not in error
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a state dict")
    with pytest.raises(WeightsUnavailableError, match="Cannot read weights file") as caught:
        train_remote(
            load_mvtec_category(demo_root, CATEGORIES[0]),
            CAINNFlowConfig(image_size=SIZE),
            address="auto",
            weights=bad,
        )
    assert type(caught.value) is WeightsUnavailableError  # the worker's own error, not Ray's wrapper


def test_train_remote_streams_progress_and_returns_a_checkpoint(demo_root: Path, local_ray) -> None:
    data = load_mvtec_category(demo_root, CATEGORIES[0])
    seen: list[TrainProgress] = []
    address = local_ray.get_runtime_context().gcs_address
    payload = train_remote(
        data,
        CAINNFlowConfig(image_size=SIZE),
        TrainConfig(epochs=2, batch_size=8),
        address=address,
        callback=seen.append,
    )
    detector = Detector.load(payload, device="cpu")
    assert detector.is_trained and len(detector.history.epochs) == 2
    assert detector.record.category == CATEGORIES[0]
    phases = [p.phase for p in seen]
    assert phases[0] == "features" and "train" in phases and phases[-1] == "done"
    assert {p.epoch for p in seen if p.phase == "train"} == {1, 2}


def test_train_remote_honours_cancel(demo_root: Path, local_ray) -> None:
    data = load_mvtec_category(demo_root, CATEGORIES[0])
    cancel = threading.Event()

    def stop_in_epoch_three(progress: TrainProgress) -> None:
        if progress.phase == "train" and progress.epoch >= 3:
            cancel.set()

    payload = train_remote(
        data,
        CAINNFlowConfig(image_size=SIZE),
        TrainConfig(epochs=2000, batch_size=8, patience=None),
        address="auto",
        callback=stop_in_epoch_three,
        cancel=cancel,
    )
    history = Detector.load(payload, device="cpu").history
    assert history.cancelled and 2 <= len(history.epochs) < 2000


def test_training_job_runs_on_the_cluster(demo_root: Path, local_ray) -> None:
    jobs = pytest.importorskip("app.jobs")
    data = load_mvtec_category(demo_root, CATEGORIES[1])
    job = jobs.TrainingJob(
        data,
        CAINNFlowConfig(image_size=SIZE, variant="CC"),
        TrainConfig(epochs=2, batch_size=8),
        device="cpu",
        label="remote",
        address=local_ray.get_runtime_context().gcs_address,
        alive=lambda: True,
    ).start()
    job.join(120)
    snap = job.snapshot()
    assert snap.state == "done", snap.error
    steps = [point[0] for point in snap.loss_points]  # the chart is by step: two equal epochs
    assert len(steps) == 2 and steps[1] == 2 * steps[0] > 0
    detector = job.take_detector()
    assert detector is not None and detector.is_trained and detector.config.variant == "CC"
    assert str(detector.device) == "cpu"


# --------------------------------------------------------------------------- the Compare page


def test_compare_page_draws_a_sweep_from_the_runs_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("CAINNFLOW_HOME", str(tmp_path))
    results = [
        _result(category, variant, seed, 0.9 + 0.01 * seed, 0.95 - 0.01 * steps)
        for category in ("a", "b")
        for variant in ("CAC", "CC")
        for seed, steps in ((0, 1), (1, 2))
    ]
    sweep_dir = tmp_path / "runs" / "grid"
    sweep_dir.mkdir(parents=True)
    (sweep_dir / RESULTS_FILE).write_bytes(results_csv(results))
    broken = tmp_path / "runs" / "broken"
    broken.mkdir()
    (broken / RESULTS_FILE).write_text("category,variant\na,CAC\n")

    at = AppTest.from_file(
        str(Path(__file__).resolve().parents[1] / "pages" / "compare.py"), default_timeout=60
    )
    at.session_state["compare_source"] = "runs"  # the page alone, without the router its links need
    at.run()
    assert not at.exception
    assert at.selectbox(key="compare_file").options == ["broken", "grid"]
    at.selectbox(key="compare_file").set_value(sweep_dir / RESULTS_FILE).run()
    assert not at.exception and not at.error
    assert len(at.get("plotly_chart")) == 2
    assert any("| **mean** |" in m.value for m in at.markdown)
    at.selectbox(key="compare_file").set_value(broken / RESULTS_FILE).run()
    assert not at.exception
    assert "missing" in at.error[0].value
