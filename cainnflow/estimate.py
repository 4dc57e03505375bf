"""How long a training will take here, measured before it starts.

:func:`estimate_training` times one backbone batch and one flow step of the model on this
machine (about a second) and extrapolates with :func:`estimate_from_timings`, which counts what
:meth:`cainnflow.detector.Detector.fit` does: one backbone pass over the images, one more per
flip when few images are augmented, then the step budget of :class:`TrainConfig`. The app
shows it before Train; the timings are cached per configuration there.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass

import torch

from .model import CAINNFlow, negative_log_likelihood
from .training import TrainConfig

__all__ = ["TrainingEstimate", "estimate_from_timings", "estimate_training"]


@dataclass(frozen=True)
class TrainingEstimate:
    """How long a training will take, measured on this machine before it starts.

    Attributes:
        n_images: good images the estimate is for.
        feature_s: the frozen backbone over the images (once; flipped copies included).
        step_s: one optimizer step of the flows.
        steps: the step budget (early stopping may end sooner).
        total_s: ``feature_s + steps × step_s``: an upper bound, unless other work shares the cores.
    """

    n_images: int
    feature_s: float
    step_s: float
    steps: int
    total_s: float


@torch.no_grad()
def _time_backbone(model: CAINNFlow, batch: int, repeats: int = 2) -> float:
    size = model.config.image_size
    images = torch.randn(batch, 3, size, size, device=model.device)
    model.extract_features(images)  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        model.extract_features(images)
    return (time.perf_counter() - start) / repeats


def estimate_training(
    model: CAINNFlow, n_images: int, config: TrainConfig | None = None, *, repeats: int = 2
) -> TrainingEstimate:
    """Times one backbone batch and one flow step of ``model`` and extrapolates (about 1–3 s).

    The model's flows are restored afterwards (the timed steps do not train them).
    """
    config = config or TrainConfig()
    n_train = max(1, n_images - round(max(n_images, 1) * 0.1))
    batch = min(config.batch_size, n_train)
    per_batch = _time_backbone(model, batch)
    state = copy.deepcopy(model.flows.state_dict())
    shapes = model.feature_shapes
    sizes = config.scale_batch_sizes(batch, [h * w for _, h, w in shapes])
    features = [
        torch.randn(b, c, h, w, device=model.device) for b, (c, h, w) in zip(sizes, shapes, strict=True)
    ]
    was_training = model.flows.training
    model.flows.train()
    optimizer = torch.optim.Adam(model.flow_parameters(), lr=1e-6)
    times = []
    with torch.enable_grad():
        for _ in range(repeats + 1):
            start = time.perf_counter()
            loss = negative_log_likelihood(model(features))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            times.append(time.perf_counter() - start)
    model.flows.load_state_dict(state)
    model.flows.train(was_training)
    return estimate_from_timings(n_images, per_batch, min(times[1:]), batch, config)


def estimate_from_timings(
    n_images: int, backbone_s: float, step_s: float, batch: int, config: TrainConfig | None = None
) -> TrainingEstimate:
    """A :class:`TrainingEstimate` from measured seconds per backbone batch and per flow step.

    Counts what :meth:`cainnflow.detector.Detector.fit` does: one backbone pass over the images
    (validation included), one more per flip when few images are augmented (the flips that
    the images allow are only known then: the estimate assumes all), then the step budget.
    """
    from .augment import AUGMENT_MAX_IMAGES, FLIPS

    config = config or TrainConfig()
    n_images = max(int(n_images), 1)
    n_train = max(1, n_images - round(n_images * 0.1))
    batch = max(1, int(batch))
    flips = len(FLIPS) if config.augment == "auto" and n_train <= AUGMENT_MAX_IMAGES else 0
    feature_s = backbone_s * (math.ceil(n_images / batch) + flips * math.ceil(n_train / batch))
    steps = config.total_steps(n_train * (1 + flips), n_train)
    return TrainingEstimate(n_images, feature_s, step_s, steps, feature_s + steps * step_s)
