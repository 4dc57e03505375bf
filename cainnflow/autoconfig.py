"""Auto-configuration from good images only: choose feature stages and smoothing by measurement.

Nothing but defect-free training images is read. Some of them are held out; synthetic
anomalies (:mod:`cainnflow.synthetic`: cut-paste, noise, warps, erased regions, colour
blobs) are pasted into copies of the held-out images; one flow per candidate stage is trained
on the rest; every candidate setting — a run of consecutive stages and a smoothing ``sigma`` —
is scored on the held-out good images against the synthetic anomalies without training
again (the flows of different stages are independent, so a subset of stages is a subset of
flows): the mean of its image and pixel AUROC. AUPRO is measured and reported beside them but
not maximised: in the objective it made a demo texture choose its two finest stages, whose image
score lost real defects (benchmarks/README.md). A setting replaces the defaults only when it
leads them clearly: the held-out images are resampled (paired bootstrap,
:mod:`cainnflow.bootstrap`) and its lead must stay above a tenth of an AUROC point
(:data:`MIN_LEAD`) in 95 % of the resamples — on a few dozen held-out images the best of many
settings often leads by luck, and synthetic anomalies are easier than real defects, so a small
lead there is no evidence. The chosen setting is then trained on all the good images. What was tried, what was
chosen and the validation evidence are returned and stored in the checkpoint
(``detector.record.auto``, a :class:`cainnflow.auto_report.AutoReport`), with a proposed
threshold: the one that best separates the held-out good images from the synthetic anomalies.

The test split is never touched: :func:`auto_configure` takes only the training images.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from threading import Event
from typing import NamedTuple

import numpy as np
import torch

from .auto_report import AutoCandidate, AutoReport
from .bootstrap import (
    pixel_histograms,
    resample_weights,
    weighted_aupro,
    weighted_image_auroc,
    weighted_pixel_auroc,
)
from .data import DEFAULT_VAL_FRACTION, CategoryData, read_image, split_train_val
from .detector import Detector
from .errors import DataError, TrainingCancelled
from .model import CAINNFlowConfig
from .scoring import score_latents
from .synthetic import ALL_KINDS, f1_threshold, make_synthetic_anomalies
from .training import TrainConfig, TrainProgress

__all__ = ["AutoCandidate", "AutoReport", "auto_configure", "candidate_settings"]

HOLDOUT_FRACTION = 0.2
MIN_HOLDOUT = 2
MIN_TRAIN = 4
SYNTHETIC_PER_HOLDOUT = 9
MIN_SYNTHETIC = 18
SIGMAS = (2.0, 4.0, 8.0)
POOLINGS = ("coarse_top", "max")
"""Image scores :func:`candidate_settings` can try (by default it does not: the image score is
the one the good images' flip evidence chose, :func:`cainnflow.augment.auto_pooling`)."""
BOOTSTRAP_RESAMPLES = 400
LEAD_QUANTILE = 0.05
"""A setting replaces the defaults only when it leads them in all but this fraction of the
paired bootstrap resamples of the held-out images (a one-sided 95 % bound above zero)."""
MIN_LEAD = 0.001
"""...and by more than this on the objective (a tenth of an AUROC point) at that bound. A lead
that is clear but smaller is no reason to change: on bottle and its first 20 images the
synthetic anomalies gave stages 2–3 and 1–3 bounds of +0.0005 and +0.0001, and both lost to the
defaults on the real defects (pixel AUROC −0.36 and −0.19, AUPRO −1.0 and −0.6;
benchmarks/README.md)."""
CNN_CANDIDATE_STAGES = (1, 2, 3, 4)
MIN_RUN = 2
"""Candidate stage sets are runs of at least this many consecutive stages."""


def candidate_settings(
    stages: Sequence[int], poolings: Sequence[str] = POOLINGS
) -> list[tuple[tuple[int, ...], float, str]]:
    """Every run of at least :data:`MIN_RUN` consecutive ``stages`` with every sigma and pooling."""
    stages = tuple(stages)
    runs = [stages[i:j] for i in range(len(stages)) for j in range(i + MIN_RUN, len(stages) + 1)] or [stages]
    return [(run, sigma, pooling) for run in runs for sigma in SIGMAS for pooling in poolings]


def _split_holdout(data: CategoryData, seed: int) -> tuple[list, list]:
    n = len(data.train)
    if n < MIN_TRAIN + MIN_HOLDOUT:
        raise DataError(
            f"auto-configuration needs at least {MIN_TRAIN + MIN_HOLDOUT} good training images, "
            f"got {n}; train with the defaults instead"
        )
    fraction = max(HOLDOUT_FRACTION, MIN_HOLDOUT / n)
    train, holdout = split_train_val(data.train, fraction, seed=seed + 1)
    return list(train), list(holdout)


@torch.no_grad()
def _latents(detector: Detector, images: Sequence, batch_size: int = 8) -> list[torch.Tensor]:
    """Per-stage latents of images, concatenated over batches (CPU)."""
    chunks: list[list[torch.Tensor]] = []
    for start in range(0, len(images), batch_size):
        batch = detector.preprocess(images[start : start + batch_size])
        features = detector.model.extract_features(batch)
        chunks.append([z.cpu() for z in detector.model(features).z])
    return [torch.cat(parts) for parts in zip(*chunks, strict=True)]


class Scored(NamedTuple):
    """One setting's measures on the held-out images (:func:`_score_candidates`)."""

    setting: tuple[tuple[int, ...], float, str]
    image_auroc: float
    pixel_auroc: float
    aupro: float
    objectives: np.ndarray
    """The objective on the held-out images as they are (``[0]``), then on each resample."""


def _score_candidates(
    detector: Detector,
    latents: list[torch.Tensor],
    stages: tuple[int, ...],
    labels: np.ndarray,
    masks: np.ndarray,
    settings: Sequence[tuple[tuple[int, ...], float, str]],
    seed: int,
) -> list[Scored]:
    """Each setting's image AUROC, pixel AUROC and AUPRO, and its objective (the mean of the two
    AUROCs) on the held-out images and on the same :data:`BOOTSTRAP_RESAMPLES` stratified
    resamples for every setting (paired)."""
    config = detector.config
    weights = np.vstack([np.ones((1, len(labels))), resample_weights(labels, BOOTSTRAP_RESAMPLES, seed)])
    weight = detector.model.coarsest_map_weight
    results = []
    for run, sigma, pooling in settings:
        z = [latents[stages.index(s)] for s in run]
        maps, scores = score_latents(z, config.image_size, sigma, config.combine, pooling, weight)
        histograms = pixel_histograms(maps.numpy(), masks)
        img = np.nan_to_num(weighted_image_auroc(labels, scores.numpy(), weights))
        pix = np.nan_to_num(weighted_pixel_auroc(histograms, weights))
        pro = float(np.nan_to_num(weighted_aupro(histograms, weights[:1]))[0])
        results.append(Scored((run, sigma, pooling), float(img[0]), float(pix[0]), pro, (img + pix) / 2))
    return results


def _choose(
    results: list[Scored], default: tuple[tuple[int, ...], float, str]
) -> tuple[AutoCandidate, list[AutoCandidate]]:
    """The chosen setting and every candidate with its lead over the default.

    A setting replaces the default only when its lead is clear: above :data:`MIN_LEAD` in all
    but :data:`LEAD_QUANTILE` of the resamples. Of those, the highest objective wins (then fewer
    stages); when none leads clearly, the default (when the default is not among the settings:
    the highest).
    """
    base = next((r.objectives for r in results if r.setting == default), None)
    candidates = []
    for r in results:
        lead_low = None
        if base is not None and r.setting != default:
            lead_low = float(np.quantile(r.objectives[1:] - base[1:], LEAD_QUANTILE))
        run, sigma, pooling = r.setting
        candidates.append(
            AutoCandidate(
                run, sigma, pooling, r.image_auroc, r.pixel_auroc, float(r.objectives[0]), lead_low, r.aupro
            )
        )
    if base is None:
        return max(candidates, key=lambda c: (c.objective, -len(c.stages))), candidates
    clear = [c for c in candidates if c.lead_low is not None and c.lead_low > MIN_LEAD]
    if not clear:
        return next(c for c in candidates if (c.stages, c.sigma, c.pooling) == default), candidates
    return max(clear, key=lambda c: (c.objective, -len(c.stages))), candidates


def auto_configure(
    data: CategoryData,
    config: CAINNFlowConfig | None = None,
    train_config: TrainConfig | None = None,
    *,
    candidate_stages: Sequence[int] | None = None,
    weights: str = "auto",
    device: str | torch.device = "auto",
    callback: Callable[[TrainProgress | str], None] | None = None,
    cancel: Event | None = None,
) -> tuple[Detector, AutoReport]:
    """Chooses stages and smoothing on synthetic anomalies in held-out good images, then trains.

    Args:
        data: the category; only ``data.train`` (good images) is read.
        config: the starting configuration (backbone, variant, steps, image size...).
        train_config: optimisation settings for both trainings.
        candidate_stages: stages to choose runs from (default: stages 1-4, strides 4-32, for
            the CNNs; the backbone's default for ViTs).
        weights: backbone weights, as :meth:`Detector.create` takes them.
        device: where to train.
        callback: training progress, and one line of text at each phase.
        cancel: stops either training within one batch.

    Returns:
        The trained detector with the chosen setting (``record.auto`` holds the report), and
        the report.

    Raises:
        DataError: too few good images to hold some out.
        TrainingCancelled: cancelled.
    """
    start = time.perf_counter()
    config = config or CAINNFlowConfig()
    train_config = train_config or TrainConfig()
    say = callback if callback is not None else (lambda _: None)
    train, holdout = _split_holdout(data, train_config.seed)

    probe = Detector.create(replace(config, out_indices=None), weights=weights, device=device)
    default_stages = probe.config.out_indices or ()
    if candidate_stages is None:
        # CNNs: strides 4 to 32 (timm's stages 1-4), whatever the backbone's default; ViTs: as is.
        cnn_stages = CNN_CANDIDATE_STAGES if probe.backbone.kind == "cnn" else ()
        candidate_stages = tuple(default_stages) + cnn_stages
    stages = tuple(sorted(set(int(s) for s in candidate_stages)))

    say(f"training one flow per stage {stages} on {len(train)} good images ({len(holdout)} held out)")
    selector = Detector.create(replace(config, out_indices=stages), weights=weights, device=device)
    selector.fit(replace(data, train=tuple(train), test=()), train_config, callback=callback, cancel=cancel)
    if cancel is not None and cancel.is_set():
        raise TrainingCancelled("auto-configuration cancelled")
    # The defaults: the backbone's stages, sigma, and the image score the good images chose; a
    # setting must lead them clearly to replace them (_choose).
    default = (tuple(default_stages), config.sigma, selector.config.pooling)
    # The image score is not searched: the flip evidence of the good images (pooling "auto") or
    # the one asked for decides it, the rule measured on real sets. Searched on synthetic
    # anomalies it gave bottle, an aligned part, the textures' coarse score (benchmarks/README.md).
    poolings = (selector.config.pooling,)

    say("pasting synthetic anomalies into the held-out images")
    good_images = [read_image(s.path) for s in holdout]
    n_synthetic = max(MIN_SYNTHETIC, SYNTHETIC_PER_HOLDOUT * len(holdout))
    samples = make_synthetic_anomalies(good_images, n_synthetic, seed=train_config.seed, kinds=ALL_KINDS)
    images = [*good_images, *(s.image for s in samples)]
    labels = np.array([0] * len(good_images) + [1] * len(samples))
    size = config.image_size
    masks = np.stack(
        [np.zeros((size, size), bool)] * len(good_images) + [_resize_mask(s.mask, size) for s in samples]
    )
    settings = candidate_settings(stages, poolings)
    if set(default[0]) <= set(stages) and default not in settings:
        settings.append(default)
    say(f"scoring {len(settings)} settings on {len(images)} held-out images")
    latents = _latents(selector, images)
    results = _score_candidates(selector, latents, stages, labels, masks, settings, train_config.seed)
    chosen, candidates = _choose(results, default)

    say(
        f"training the chosen setting (stages {chosen.stages}, sigma {chosen.sigma:g}, {chosen.pooling} score) "
        "on all good images"
    )
    final = Detector.create(
        replace(config, out_indices=chosen.stages, sigma=chosen.sigma, pooling=chosen.pooling),
        weights=weights,
        device=device,
    )
    final.fit(replace(data, test=()), train_config, callback=callback, cancel=cancel)
    proposed = _propose_threshold(final, data, train_config, [s.image for s in samples])
    report = AutoReport(
        chosen=chosen,
        candidates=tuple(candidates),
        n_train=len(train),
        n_holdout=len(holdout),
        n_synthetic=len(samples),
        kinds=tuple(sorted({s.kind for s in samples})),
        proposed_threshold=proposed,
        seconds=time.perf_counter() - start,
    )
    final.record = replace(final.record, auto=report)
    return final, report


def _propose_threshold(
    detector: Detector, data: CategoryData, train_config: TrainConfig, anomalies: Sequence
) -> float | None:
    """F1-optimal threshold between the detector's own validation images and synthetic anomalies.

    The validation images are the ones :meth:`Detector.fit` carved out and did not train on.
    """
    _, val = split_train_val(data.train, DEFAULT_VAL_FRACTION, seed=train_config.seed)
    if not val or not anomalies:
        return None
    return f1_threshold(detector, [s.path for s in val], anomalies)


def _resize_mask(mask: np.ndarray, size: int) -> np.ndarray:
    from PIL import Image

    image = Image.fromarray(np.asarray(mask, dtype=np.uint8) * 255, mode="L")
    return np.asarray(image.resize((size, size), Image.Resampling.NEAREST)) > 0
