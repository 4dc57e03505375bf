"""The grid of a sweep: its axes (:class:`SweepGrid`) and one combination of settings (:class:`Trial`)."""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import asdict, dataclass

from ..errors import CainnflowError
from ..model import CAINNFlowConfig
from ..registry import BACKBONES, DEFAULT_BACKBONE
from ..subnet import VARIANTS
from ..training import TrainConfig

__all__ = ["SweepGrid", "Trial"]

KEY_LENGTH = 16  # hex digits of the trial key


@dataclass(frozen=True)
class Trial:
    """The settings of one training + evaluation; its :attr:`key` identifies it in results.

    ``image_size`` is resolved (never None): the backbone's default when the grid left it open.
    ``epochs`` None trains for the library's default step budget (:class:`TrainConfig`).
    """

    category: str
    backbone: str
    variant: str
    steps: int
    image_size: int
    seed: int
    epochs: int | None
    lr: float
    batch_size: int
    weights: str

    @property
    def key(self) -> str:
        """A stable hash of every setting (the same settings always give the same key)."""
        text = json.dumps(asdict(self), sort_keys=True)
        return hashlib.sha1(text.encode("utf-8")).hexdigest()[:KEY_LENGTH]

    @property
    def label(self) -> str:
        return (
            f"{self.category} {self.backbone} {self.variant} steps {self.steps} {self.image_size}px "
            f"seed {self.seed}"
        )

    def model_config(self) -> CAINNFlowConfig:
        return CAINNFlowConfig(
            backbone=self.backbone,
            image_size=self.image_size,
            variant=self.variant,
            steps=self.steps,
            seed=self.seed,
        )

    def train_config(self) -> TrainConfig:
        return TrainConfig(epochs=self.epochs, lr=self.lr, batch_size=self.batch_size, seed=self.seed)


@dataclass(frozen=True)
class SweepGrid:
    """The axes of a sweep; every combination is one :class:`Trial`.

    Attributes:
        categories: category folders under the data root.
        backbones, variants, steps, seeds: values per axis.
        image_sizes: input sizes; None stands for each backbone's default size.
        epochs, lr, batch_size: optimisation settings shared by all trials (None: the library's).
        weights: backbone weights: ``"auto"``, ``"random"`` (tests only) or a file every worker
            can read.
    """

    categories: tuple[str, ...]
    backbones: tuple[str, ...] = ()
    variants: tuple[str, ...] = ()
    steps: tuple[int, ...] = ()
    image_sizes: tuple[int | None, ...] = (None,)
    seeds: tuple[int, ...] = (0,)
    epochs: int | None = None
    lr: float | None = None
    batch_size: int | None = None
    weights: str = "auto"

    def trials(self) -> list[Trial]:
        """Every combination, in grid order, without duplicates.

        Raises:
            CainnflowError: an unknown backbone or variant, or settings the model refuses.
        """
        if not self.categories:
            raise CainnflowError("a sweep needs at least one category")
        backbones = self.backbones or (DEFAULT_BACKBONE,)
        variants = self.variants or (CAINNFlowConfig.variant,)
        for name in backbones:
            if name not in BACKBONES:
                raise CainnflowError(f"unknown backbone {name!r}; choose from {', '.join(sorted(BACKBONES))}")
        for variant in variants:
            if variant not in VARIANTS:
                raise CainnflowError(f"unknown variant {variant!r}; choose from {', '.join(VARIANTS)}")
        defaults = TrainConfig()
        epochs = defaults.epochs if self.epochs is None else self.epochs
        if epochs is not None and epochs < 1:
            raise CainnflowError(f"epochs must be at least 1, got {epochs}")
        trials: list[Trial] = []
        axes = itertools.product(
            self.categories,
            backbones,
            variants,
            self.steps or (CAINNFlowConfig.steps,),
            self.image_sizes or (None,),
            self.seeds or (0,),
        )
        for category, backbone, variant, steps, size, seed in axes:
            trial = Trial(
                category=category,
                backbone=backbone,
                variant=variant,
                steps=int(steps),
                image_size=int(size) if size is not None else BACKBONES[backbone].default_image_size,
                seed=int(seed),
                epochs=None if epochs is None else int(epochs),
                lr=float(defaults.lr if self.lr is None else self.lr),
                batch_size=int(defaults.batch_size if self.batch_size is None else self.batch_size),
                weights=str(self.weights),
            )
            try:
                trial.model_config()
            except ValueError as exc:
                raise CainnflowError(f"invalid settings for {trial.label}: {exc}") from exc
            if trial not in trials:
                trials.append(trial)
        return trials
