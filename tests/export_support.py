"""Detectors for the export and INT8 tests: the real default backbone, flows off their init."""

from __future__ import annotations

import functools

import torch

from cainnflow.detector import Detector
from cainnflow.model import CAINNFlow, CAINNFlowConfig


@functools.cache
def real_backbone(size: int):
    """The real default backbone at ``size`` px, loaded once per size for the whole session."""
    return Detector.create(CAINNFlowConfig(image_size=size), device="cpu").backbone


def perturbed_detector(size: int, **config) -> Detector:
    """A real-backbone detector whose flows are perturbed away from their identity-like init."""
    torch.manual_seed(0)
    backbone = real_backbone(size)
    model_config = CAINNFlowConfig(image_size=size, out_indices=backbone.out_indices, **config)
    detector = Detector(CAINNFlow(backbone, model_config).eval())
    features = detector.model.extract_features(torch.randn(6, 3, size, size))
    detector.model.fit_standardizers(features)
    with torch.no_grad():
        for parameter in detector.model.flows.parameters():
            if parameter.is_floating_point():
                parameter.add_(0.05 * torch.randn_like(parameter))
    detector.calibrate_from_features(features)
    return detector
