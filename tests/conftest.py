"""Shared fixtures: a tiny stand-in backbone so model tests run in milliseconds."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn


class TinyBackbone(nn.Module):
    """Two-scale conv feature extractor with the FeatureExtractor attributes the model reads."""

    def __init__(self, channels: tuple[int, int] = (6, 8)) -> None:
        super().__init__()
        self.name = "tiny"
        self.out_indices = (0, 1)
        self.channels = list(channels)
        self.reductions = [4, 8]
        self.mean = (0.5, 0.5, 0.5)
        self.std = (0.5, 0.5, 0.5)
        self.weights_source = "random (tests only)"
        self.stem = nn.Conv2d(3, channels[0], 4, stride=4)
        self.down = nn.Conv2d(channels[0], channels[1], 2, stride=2)
        for p in self.parameters():
            p.requires_grad_(False)

    def feature_shapes(self, image_size: int) -> list[tuple[int, int, int]]:
        return [
            (c, image_size // r, image_size // r) for c, r in zip(self.channels, self.reductions, strict=True)
        ]

    def forward(self, x: Tensor) -> list[Tensor]:
        a = self.stem(x)
        return [a, self.down(a)]


@pytest.fixture(scope="module")
def small_demo(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """Makes a small generated demo category (96 px) in a fresh folder: ``small_demo(n_train=8, ...)`` → root."""

    def make(
        *, n_train: int, n_test_good: int, n_test_per_defect: int, category: str = "carpet_weave"
    ) -> Path:
        from cainnflow.demo_data import make_demo_dataset

        root = tmp_path_factory.mktemp("demo")
        counts = {"n_train": n_train, "n_test_good": n_test_good, "n_test_per_defect": n_test_per_defect}
        make_demo_dataset(root, categories=(category,), image_size=96, **counts)
        return root

    return make


@pytest.fixture
def tiny_backbone() -> TinyBackbone:
    torch.manual_seed(0)
    return TinyBackbone()
