"""The GPU path on a real CUDA device: training, scoring against the CPU path, a Ray sweep trial
with a GPU share and a remote training. Skipped without CUDA (CI has none); run by
``benchmarks/gpu_check.sh`` wherever a GPU is at hand.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from cainnflow.data import load_mvtec_category
from cainnflow.demo_data import make_demo_dataset
from cainnflow.detector import Detector
from cainnflow.model import CAINNFlowConfig
from cainnflow.training import TrainConfig

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

SIZE = 128
CATEGORY = "pill_disc"


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_demo_dataset(
        tmp_path_factory.mktemp("gpu_demo"),
        categories=(CATEGORY,),
        image_size=SIZE,
        n_train=24,
        n_test_good=6,
        n_test_per_defect=3,
    )


@pytest.fixture(scope="module")
def trained_on_cuda(demo_root: Path) -> Detector:
    detector = Detector.create(CAINNFlowConfig(image_size=SIZE), device="cuda")
    detector.fit(load_mvtec_category(demo_root, CATEGORY), TrainConfig(max_steps=120, batch_size=16))
    return detector


def test_trains_and_scores_on_the_gpu(trained_on_cuda: Detector, demo_root: Path) -> None:
    assert trained_on_cuda.device.type == "cuda"
    assert all(p.device.type == "cuda" for p in trained_on_cuda.model.flow_parameters())
    result = trained_on_cuda.evaluate(load_mvtec_category(demo_root, CATEGORY))
    assert result.image_auroc is not None and result.image_auroc >= 0.9
    assert np.isfinite(result.scores).all()


def test_the_gpu_scores_as_the_cpu_does(trained_on_cuda: Detector, demo_root: Path, tmp_path: Path) -> None:
    """The same checkpoint on both devices: the backbone runs in bf16 on CUDA, the flows in FP32."""
    data = load_mvtec_category(demo_root, CATEGORY)
    cpu = Detector.load(trained_on_cuda.save(tmp_path / "m.safetensors"), device="cpu")
    gpu_result, cpu_result = trained_on_cuda.evaluate(data), cpu.evaluate(data)
    relative = np.abs(gpu_result.scores - cpu_result.scores) / np.maximum(np.abs(cpu_result.scores), 1e-6)
    assert relative.max() < 0.05, relative.max()
    assert abs(gpu_result.image_auroc - cpu_result.image_auroc) <= 0.02
    assert abs(gpu_result.pixel_auroc - cpu_result.pixel_auroc) <= 0.01


def test_a_sweep_trial_takes_half_a_gpu(demo_root: Path, tmp_path: Path) -> None:
    pytest.importorskip("ray")
    from cainnflow.sweep import SweepGrid, connect_ray, disconnect_ray, run_sweep

    connect_ray(None)
    try:
        grid = SweepGrid(
            categories=(CATEGORY,), variants=("CAC",), image_sizes=(SIZE,), epochs=2, batch_size=8
        )
        summary = run_sweep(grid, tmp_path / "sweep", demo_root, gpus_per_trial=0.5)
    finally:
        disconnect_ray()
    assert (summary.ran, summary.failed) == (1, [])
    assert summary.results[0].device.startswith("cuda")


def test_a_remote_training_runs_on_the_gpu(demo_root: Path, caplog: pytest.LogCaptureFixture) -> None:
    pytest.importorskip("ray")
    from cainnflow.sweep import connect_ray, disconnect_ray, train_remote

    data = load_mvtec_category(demo_root, CATEGORY)
    seen = []
    connect_ray(None)
    try:
        with caplog.at_level(logging.INFO, logger="cainnflow.sweep.remote"):
            payload = train_remote(
                data,
                CAINNFlowConfig(image_size=SIZE),
                TrainConfig(epochs=2, batch_size=8),
                address=None,
                num_gpus=0.5,
                callback=seen.append,
            )
    finally:
        disconnect_ray()
    detector = Detector.load(payload, device="cpu")
    assert detector.is_trained and len(detector.history.epochs) == 2
    assert seen and seen[-1].phase == "done"
    assert "remote training done on cuda" in caplog.text
