"""Maximum-likelihood training of the flows on cached backbone features.

The backbone is frozen, so its features are computed once (:func:`extract_features`) and the
flows train on that cache — what makes CPU training practical. :func:`fit_flows` runs Adam
(paper: lr 5e-4) with early stopping on the validation split carved from train/good, reports
progress through a callback and honours a cancel flag within one batch.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from threading import Event
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader

from .config import DEFAULT_POSITIONS_PER_STEP
from .device import autocast_dtype
from .errors import TrainingCancelled, TrainingError
from .model import CAINNFlow, negative_log_likelihood
from .threads import CpuJob, cpu_job

AUGMENT_MODES = ("auto", "none")

__all__ = [
    "AUGMENT_MODES",
    "EpochRecord",
    "TrainConfig",
    "TrainProgress",
    "TrainingHistory",
    "extract_features",
    "fit_flows",
    "step_budget",
]


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings.

    Training length is a budget in optimizer steps, not epochs (15 epochs of 9 images are
    only 15 steps). By default the budget grows with the square root of the number of good
    images (:func:`step_budget`: 300 steps up to 277 images, 400 from 494 on); early stopping
    on the validation NLL ends it sooner when the flows stop improving.

    Attributes:
        max_steps: optimizer-step budget (used when ``epochs`` is None); None: :func:`step_budget`.
        epochs: if given, train for exactly this many passes instead (the budget then is
            ``epochs × steps per epoch``).
        batch_size: images per step (at most the number of training images).
        lr: Adam learning rate. The paper uses 5e-4 over long schedules; 2e-3 reaches a better
            optimum in the budgets that fit a CPU (benchmarks/README.md).
        weight_decay: Adam weight decay.
        val_every: with a step budget, validate at the end of the first epoch that reaches
            this many steps since the last validation (with ``epochs``: every epoch).
        patience: stop after this many validations without a better validation loss (None:
            never stop early); better means lower by more than ``min_delta``.
        min_delta: the smallest drop of the validation loss (nats per dimension) that counts
            as better: float noise (thread counts, another machine) cannot flip a decision.
        min_steps: never stop early before this many steps (nor before half the budget).
        grad_clip: clip the gradient norm to this value (None: no clipping).
        seed: seeds batch order.
        positions_per_step: each scale trains on at most this many feature positions per step:
            a scale whose maps have ``H·W`` positions per image uses the first
            ``max(MIN_SCALE_IMAGES, positions_per_step // (H·W))`` images of the batch (never more
            than the batch). The flows of the scales are independent, so a fine scale with
            thousands of positions per image learns from fewer images per step while the coarse
            scales keep the whole batch. None: every scale sees the whole batch. The default,
            8192, gives the 256 px Lite0 stages 2 / 8 / 16 / 16 images of a 16-image batch and
            took a third off bottle's training time at equal or better AUROC and AUPRO on the
            sets measured (benchmarks/README.md).
        augment: ``"auto"``: with at most :data:`cainnflow.augment.AUGMENT_MAX_IMAGES` training
            images, add the flips that the good images show to be harmless
            (:mod:`cainnflow.augment`); ``"none"`` (default: flips did not help on the sets
            measured, benchmarks/README.md).
    """

    max_steps: int | None = None
    epochs: int | None = None
    batch_size: int = 16
    lr: float = 2e-3
    weight_decay: float = 1e-5
    val_every: int = 20
    patience: int | None = 4
    min_delta: float = 1e-3
    min_steps: int = 150
    grad_clip: float | None = 10.0
    seed: int = 0
    augment: str = "none"
    positions_per_step: int | None = DEFAULT_POSITIONS_PER_STEP

    def __post_init__(self) -> None:
        if self.augment not in AUGMENT_MODES:
            raise ValueError(f"augment must be one of {', '.join(AUGMENT_MODES)}, got {self.augment!r}")
        if (self.max_steps is not None and self.max_steps < 1) or (
            self.epochs is not None and self.epochs < 1
        ):
            raise ValueError("max_steps and epochs must be at least 1")
        if self.batch_size < 1 or self.val_every < 1:
            raise ValueError("batch_size and val_every must be at least 1")
        if self.positions_per_step is not None and self.positions_per_step < 1:
            raise ValueError("positions_per_step must be at least 1 (or None)")

    def scale_batch_sizes(self, batch_size: int, positions: Sequence[int]) -> list[int]:
        """Images per step for each scale, given the batch and each scale's positions per image."""
        if self.positions_per_step is None:
            return [batch_size] * len(positions)
        return [
            min(batch_size, max(MIN_SCALE_IMAGES, self.positions_per_step // max(p, 1))) for p in positions
        ]

    def steps_per_epoch(self, n_train: int) -> int:
        return max(1, math.ceil(n_train / min(self.batch_size, max(n_train, 1))))

    def total_steps(self, n_train: int, n_images: int | None = None) -> int:
        """The step budget for ``n_train`` training images (feature rows, flips included).

        ``n_images``: the good images they come from (default ``n_train``), which
        :func:`step_budget` scales with.
        """
        per_epoch = self.steps_per_epoch(n_train)
        if self.epochs is not None:
            return self.epochs * per_epoch
        if self.max_steps is not None:
            return self.max_steps
        return step_budget(n_train if n_images is None else n_images)

    def earliest_stop(self, total: int) -> int:
        """Steps before which training never stops early."""
        return min(self.min_steps, total // 2)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


MIN_SCALE_IMAGES = 2
"""The fewest images per step any scale trains on (:attr:`TrainConfig.positions_per_step`)."""
REBALANCE_EVERY = 5
"""Steps between two looks at how many CPU trainings share the machine (:mod:`cainnflow.threads`)."""
MIN_BUDGET_STEPS = 300
MAX_BUDGET_STEPS = 400
STEPS_PER_SQRT_IMAGE = 18.0


def step_budget(n_images: int) -> int:
    """The default optimizer-step budget for ``n_images`` good training images.

    ``18·√n`` clipped to [300, 400]: 300 steps up to 277 images, 400 from 494 on; early
    stopping (not before 150 steps) ends small sets sooner when their validation NLL stops
    falling. A floor of 120 cost the structural demo category 0.016 image AUROC and 0.023
    AUPRO against 300 steps (benchmarks/README.md): layouts of few images need the steps.
    """
    steps = round(STEPS_PER_SQRT_IMAGE * math.sqrt(max(n_images, 1)))
    return int(min(MAX_BUDGET_STEPS, max(MIN_BUDGET_STEPS, steps)))


@dataclass(frozen=True)
class TrainProgress:
    """One progress report.

    Attributes:
        phase: ``"features"`` (caching backbone features), ``"train"`` or ``"done"``.
        epoch, epochs: current (1-based) and total epochs (0 during ``features``).
        step, steps: current (1-based) and total steps of the phase / epoch.
        loss: running mean training loss of the epoch (nats per dimension).
        val_loss: validation loss of the last finished epoch.
        elapsed_s: seconds since the phase started.
        eta_s: estimated seconds left in the phase.
    """

    phase: str
    epoch: int
    epochs: int
    step: int
    steps: int
    loss: float | None = None
    val_loss: float | None = None
    elapsed_s: float = 0.0
    eta_s: float | None = None

    @property
    def fraction(self) -> float:
        """Progress of the phase in [0, 1]."""
        if self.phase == "done":
            return 1.0
        if self.phase == "features":
            return self.step / max(self.steps, 1)
        done = (self.epoch - 1) * self.steps + self.step
        return min(1.0, done / max(self.epochs * self.steps, 1))


@dataclass
class EpochRecord:
    """One validation round: the epoch it closed, mean training loss since the last round.

    ``step`` counts the optimiser steps done when the round closed (0 in histories written
    before it was recorded).
    """

    epoch: int
    train_loss: float
    val_loss: float | None
    seconds: float
    step: int = 0


@dataclass
class TrainingHistory:
    """What happened during training (stored with the checkpoint)."""

    epochs: list[EpochRecord] = field(default_factory=list)
    best_epoch: int | None = None
    best_val_loss: float | None = None
    stopped_early: bool = False
    cancelled: bool = False
    feature_seconds: float = 0.0
    train_seconds: float = 0.0
    steps: int = 0
    flips: list[dict[str, Any]] = field(default_factory=list)
    """Augmentation evidence: one :class:`cainnflow.augment.FlipDecision` dict per flip tried."""

    def round_steps(self) -> list[int]:
        """The optimiser step at which each validation round closed, one per ``epochs`` record.

        Histories written before steps were recorded give them from the epochs, assuming
        equal epochs (``steps`` spread over the last epoch's number).
        """
        if not self.epochs:
            return []
        last = max(self.epochs[-1].epoch, 1)
        return [r.step or round(r.epoch * self.steps / last) for r in self.epochs]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainingHistory:
        data = dict(data)
        data["epochs"] = [EpochRecord(**e) for e in data.get("epochs", [])]
        for record in data["epochs"]:
            if type(record.step) is not int or record.step < 0:
                raise ValueError(f"history step must be a non-negative integer, got {record.step!r}")
        return cls(**data)


ProgressCallback = Callable[[TrainProgress], None]


def _check_cancel(cancel: Event | None) -> bool:
    return cancel is not None and cancel.is_set()


@torch.no_grad()
def extract_features(
    model: CAINNFlow,
    loader: DataLoader,
    device: torch.device,
    *,
    callback: ProgressCallback | None = None,
    cancel: Event | None = None,
    transform: Callable[[Tensor], Tensor] | None = None,
) -> list[Tensor]:
    """Runs the frozen backbone once over a loader of :class:`cainnflow.data.DatasetItem`.

    ``transform`` maps each normalised batch (N, 3, S, S) before the backbone (a flip).

    Returns:
        One CPU float32 tensor (N, C_i, H_i, W_i) per scale.

    Raises:
        TrainingCancelled: when ``cancel`` is set.
    """
    dtype = autocast_dtype(device)
    chunks: list[list[Tensor]] = []
    start = time.perf_counter()
    steps = len(loader)
    for step, batch in enumerate(loader, start=1):
        if _check_cancel(cancel):
            raise TrainingCancelled("cancelled while extracting features")
        images = batch[0].to(device, non_blocking=True)
        if transform is not None:
            images = transform(images)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            feats = model.extract_features(images)
        chunks.append([f.float().cpu() for f in feats])
        if callback is not None:
            elapsed = time.perf_counter() - start
            callback(
                TrainProgress(
                    "features", 0, 0, step, steps, elapsed_s=elapsed, eta_s=elapsed / step * (steps - step)
                )
            )
    if not chunks:
        raise TrainingError("no images to extract features from")
    return [torch.cat(parts, dim=0) for parts in zip(*chunks, strict=True)]


@torch.no_grad()
def validation_loss(model: CAINNFlow, features: Sequence[Tensor], batch_size: int) -> float:
    """Mean negative log-likelihood per dimension over cached features."""
    device = model.device
    n = features[0].shape[0]
    total = 0.0
    for start in range(0, n, batch_size):
        batch = [f[start : start + batch_size].to(device) for f in features]
        total += negative_log_likelihood(model(batch)).item() * batch[0].shape[0]
    return total / n


def fit_flows(
    model: CAINNFlow,
    train_features: Sequence[Tensor],
    val_features: Sequence[Tensor] | None,
    config: TrainConfig,
    *,
    callback: ProgressCallback | None = None,
    cancel: Event | None = None,
    n_images: int | None = None,
) -> TrainingHistory:
    """Trains the flows by maximum likelihood on cached features.

    The standardisers are fitted on ``train_features`` first. Training runs for the step
    budget of ``config`` in epochs of shuffled batches; it validates every ``val_every`` steps
    (or every epoch, when epochs are longer), keeps the state with the best validation loss
    (training loss without validation) and stops early after ``patience`` validations
    without improvement. That best state is restored at the end.

    Args:
        model: the model; its flows are trained in place on ``model.device``.
        train_features, val_features: cached features, one tensor (N, C_i, H_i, W_i) per scale.
        config: optimisation settings.
        callback: called after every step with a :class:`TrainProgress`.
        cancel: when set, training stops within one batch; the best state so far is kept and
            the history says ``cancelled``. Cancelled before the first validation, it raises
            :class:`TrainingCancelled`.
        n_images: the good images the training features come from (fewer than their rows
            when flipped copies were added); the default step budget scales with it.

    Raises:
        TrainingError: the loss became NaN or infinite (the last good state is restored).
    """
    with cpu_job(model.device.type) as job:
        return _fit_flows(
            model,
            train_features,
            val_features,
            config,
            callback=callback,
            cancel=cancel,
            n_images=n_images,
            job=job,
        )


def _fit_flows(
    model: CAINNFlow,
    train_features: Sequence[Tensor],
    val_features: Sequence[Tensor] | None,
    config: TrainConfig,
    *,
    callback: ProgressCallback | None,
    cancel: Event | None,
    n_images: int | None,
    job: CpuJob,
) -> TrainingHistory:
    device = model.device
    entry_state = copy.deepcopy(model.flows.state_dict())  # restored if nothing good comes of it
    model.fit_standardizers(train_features)
    params = model.flow_parameters()
    optimizer = torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    generator = torch.Generator().manual_seed(config.seed)
    n = train_features[0].shape[0]
    batch_size = min(config.batch_size, n)
    scale_batches = config.scale_batch_sizes(batch_size, [f.shape[-2] * f.shape[-1] for f in train_features])
    per_epoch = config.steps_per_epoch(n)
    total = config.total_steps(n, n_images)
    earliest_stop = config.earliest_stop(total)
    epochs = math.ceil(total / per_epoch)
    history = TrainingHistory()
    best_state = copy.deepcopy(model.flows.state_dict())
    best_loss = math.inf
    rounds_without_gain = 0
    start = time.perf_counter()
    round_start = start
    running, seen, since_val, done = 0.0, 0, 0, 0

    def restore_and_stop(message: str | None) -> None:
        model.flows.load_state_dict(best_state if history.epochs else entry_state)
        model.flows.eval()
        history.train_seconds = time.perf_counter() - start
        if message is not None:
            raise TrainingError(message)

    for epoch in range(1, epochs + 1):
        model.flows.train()
        order = torch.randperm(n, generator=generator)
        steps = min(per_epoch, total - done)
        for step in range(1, steps + 1):
            if _check_cancel(cancel):
                restore_and_stop(None)
                if not history.epochs:
                    raise TrainingCancelled("training cancelled before the first validation")
                history.cancelled = True
                return history
            idx = order[(step - 1) * batch_size : step * batch_size]
            batch = [
                f[idx[:b]].to(device, non_blocking=True)
                for f, b in zip(train_features, scale_batches, strict=True)
            ]
            with job.turn():  # alone on the cores while other trainings wait (cainnflow.threads)
                loss = negative_log_likelihood(model(batch))
                finite = bool(torch.isfinite(loss))
                if finite:
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    if config.grad_clip is not None:
                        torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
                    optimizer.step()
            if not finite:
                restore_and_stop(
                    f"the training loss became {loss.item()} at epoch {epoch}, step {step}; "
                    "the learning rate is probably too high for these features (try a lower lr "
                    "or a smaller clamp). The last good state was kept."
                )
            running += loss.item() * idx.numel()
            seen += idx.numel()
            done += 1
            since_val += 1
            if done % REBALANCE_EVERY == 0:
                job.rebalance()
            if callback is not None:
                elapsed = time.perf_counter() - start
                callback(
                    TrainProgress(
                        "train",
                        epoch,
                        epochs,
                        step,
                        per_epoch,
                        loss=running / seen,
                        val_loss=history.epochs[-1].val_loss if history.epochs else None,
                        elapsed_s=elapsed,
                        eta_s=elapsed / done * (total - done),
                    )
                )
        last_epoch = done >= total
        # Validate every epoch when epochs were asked for, else every ``val_every`` steps.
        if since_val < config.val_every and config.epochs is None and not last_epoch:
            continue
        model.flows.eval()
        train_loss = running / max(seen, 1)
        val_loss = validation_loss(model, val_features, batch_size) if val_features else None
        now = time.perf_counter()
        history.epochs.append(EpochRecord(epoch, train_loss, val_loss, now - round_start, done))
        round_start, running, seen, since_val = now, 0.0, 0, 0
        monitored = val_loss if val_loss is not None else train_loss
        if monitored < best_loss - config.min_delta:
            best_loss = monitored
            best_state = copy.deepcopy(model.flows.state_dict())
            history.best_epoch = epoch
            history.best_val_loss = val_loss
            rounds_without_gain = 0
        else:
            rounds_without_gain += 1
            if (
                config.patience is not None
                and rounds_without_gain >= config.patience
                and done >= earliest_stop
                and not last_epoch
            ):
                history.stopped_early = True
                break
        if last_epoch:
            break

    history.steps = done
    restore_and_stop(None)
    if callback is not None:
        last = history.epochs[-1]
        callback(
            TrainProgress(
                "done",
                last.epoch,
                epochs,
                per_epoch,
                per_epoch,
                loss=last.train_loss,
                val_loss=last.val_loss,
                elapsed_s=history.train_seconds,
                eta_s=0.0,
            )
        )
    return history
