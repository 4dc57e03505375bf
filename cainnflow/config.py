"""The settings of a CAINNFlow model and their validation, without PyTorch.

:class:`CAINNFlowConfig` and the literal choices it validates against (subnet variants,
couplings, scale combinations, image poolings, the CBAM hidden-width floor) live here so a
reader that only checks or shows a configuration — the exported runtime, the app, a
checkpoint inspector — need not import torch. The torch modules import these names from here.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal, get_args

from .registry import DEFAULT_BACKBONE

__all__ = [
    "ATTENTION_NEGATIVE_SLOPE",
    "COMBINES",
    "CONFIG_BOUNDS",
    "COUPLINGS",
    "DEFAULT_POSITIONS_PER_STEP",
    "MAX_STAGES",
    "MAX_STAGE_INDEX",
    "MIN_HIDDEN",
    "PHOTOMETRIC_MODES",
    "POOLINGS",
    "VARIANTS",
    "CAINNFlowConfig",
    "CouplingType",
    "SubnetVariant",
]

SubnetVariant = Literal["CA", "AC", "CAC", "CC"]
VARIANTS: tuple[str, ...] = get_args(SubnetVariant)

CouplingType = Literal["glow", "allinone"]
COUPLINGS: tuple[str, ...] = get_args(CouplingType)

POOLINGS = ("coarse", "coarse_top", "max", "topk")
COMBINES = ("likelihood", "nll")

DEFAULT_POSITIONS_PER_STEP = 8192
"""Feature positions each scale's flow trains on per step (``TrainConfig.positions_per_step``)."""
MIN_HIDDEN = 8
"""Floor on the CBAM channel MLP's hidden width. ``C // r`` alone is 1 unit for 16–31
channels: once that one ReLU unit dies, every channel gate is the constant 0.5 (seen in
trained models: 4 of 6 CBAM modules), and the attention that names the model does nothing."""

PHOTOMETRIC_MODES = ("auto", "standardize", "none")
"""Per-image exposure standardisation before the backbone (:mod:`cainnflow.photometric`)."""
ATTENTION_NEGATIVE_SLOPE = 0.1
"""Negative slope of CBAM's channel-MLP activation (``CAINNFlowConfig.attention_negative_slope``).
The paper's ReLU (0) lets Adam drive every hidden unit of an MLP below zero for all inputs,
where none gets a gradient again: the gate is then 0.5 everywhere (:mod:`cainnflow.attention`).
A leaky 0.1 keeps every gate alive (benchmarks/README.md, "Dead channel attention")."""

MAX_STAGES = 8
MAX_STAGE_INDEX = 64
CONFIG_BOUNDS: dict[str, tuple[float, float]] = {
    "image_size": (32, 1024),
    "steps": (1, 8),
    "hidden_ratio": (0.0, 8.0),
    "reduction": (1, 1024),
    "attention_min_hidden": (1, 1024),
    "clamp": (0.0, 20.0),
    "sigma": (0.0, 64.0),
    "attention_negative_slope": (0.0, 0.99),
    "seed": (0, 2**31 - 1),
}
"""Inclusive bounds of the numeric settings: a configuration (say, from an uploaded
checkpoint) can never ask for an unbounded allocation."""


def _check_type(name: str, value: Any, kind: type) -> None:
    """Strict JSON-ish type check: bools are not numbers, ints are accepted as floats."""
    ok = isinstance(value, kind) and not isinstance(value, bool)
    if kind is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not ok:
        raise ValueError(
            f"{name} must be {'a number' if kind is float else kind.__name__}, got {value!r:.40}"
        )


@dataclass(frozen=True)
class CAINNFlowConfig:
    """Everything that defines a CAINNFlow model (stored in checkpoints as JSON).

    Attributes:
        backbone: registry name of the feature extractor.
        out_indices: backbone stages used; None means the backbone's default.
        image_size: square input size in pixels.
        variant: coupling subnet arrangement, ``CA``, ``AC``, ``CAC`` (paper) or ``CC``.
        steps: coupling blocks per scale (the paper's "step"; its Table 3 is best at 2 with
            ResNet18). The default, 1, was chosen by measurement (benchmarks/README.md).
        hidden_ratio: subnet hidden width relative to its input channels.
        reduction: CBAM channel-attention reduction ratio ``r``.
        attention_min_hidden: floor on CBAM's channel-MLP hidden width (checkpoints written
            before the floor existed load with 1, the width they were trained with).
        attention_negative_slope: slope below zero of CBAM's channel-MLP activation. The
            paper's ReLU is 0; with it some of the small MLPs die in training (every hidden unit
            off for every input, the gate a constant 0.5; :mod:`cainnflow.attention`), so the
            default is a leaky 0.1, measured on every set (benchmarks/README.md, "Dead channel
            attention"). Checkpoints written before the setting load with 0, as trained.
        clamp: soft clamp on the coupling log-scales.
        coupling: ``"glow"`` (paper Eq. 1, both halves) or ``"allinone"`` (FastFlow-style).
        sigma: Gaussian smoothing of the anomaly map, in input pixels (0 = none).
        combine: how scale maps are combined: ``"likelihood"`` (mean of ``1 − exp(−nll)``)
            or ``"nll"`` (mean of the negative log-likelihoods); see :mod:`cainnflow.scoring`.
        pooling: how the image score is made: ``"auto"`` (default: chosen when training, from
            the good images — ``"coarse_top"`` for flip-invariant ones such as textures, ``"max"``
            for aligned parts; :mod:`cainnflow.augment`), ``"coarse_top"`` (the mean of the top
            eighth of the coarsest scale's positions: context, and a small normal spread),
            ``"coarse"`` (the maximum of the coarser scales' map; the earlier default for
            flip-invariant images), ``"max"`` (the maximum
            of the combined map, the paper) or ``"topk"`` (mean of its top 1 % pixels); see
            :mod:`cainnflow.scoring`. An untrained ``"auto"`` model scores as ``"max"``.
        coarsest_map_weight: the coarsest scale's weight in the anomaly map (every other scale
            has 1): ``None`` (default) decides it when training from the image score the good
            images chose — 0.5 for aligned parts, 1 for flip-invariant images
            (:func:`cainnflow.scoring.auto_coarsest_weight`; checkpoints written before the
            setting load with 1, the map they were calibrated on). An untrained ``None``
            model maps with 1.
        subnet_relu: a ReLU after the first convolution of ``CAC`` (conv → ReLU → CBAM →
            conv). The paper's Eq. 11 has none (``False``): CBAM's sigmoid gates already make
            conv → CBAM → conv non-linear. The default, ``True``, was chosen by measurement
            (benchmarks/README.md, "CAC: Eq. 11 or a ReLU"): Eq. 11 as printed lost on
            magnetic tile-20 (pixel AUROC 65.64 vs 70.31, AUPRO 45.69 vs 56.86) and bottle-10
            (AUPRO 91.71 vs 93.70) and tied on the structural demo category. ``CC`` always has its ReLU.
        photometric: ``"standardize"`` brings every image to one grey-level mean and contrast
            before the backbone (:mod:`cainnflow.photometric`): a whole image's exposure is not
            evidence, so a few good images lit alike do not make every differently lit good
            image an anomaly. ``"none"``: the images as they are (checkpoints written before
            the setting load with it). ``"auto"`` (default): fitting decides from the training
            images — standardise when their exposure varies by more than
            :data:`cainnflow.photometric.EXPOSURE_SPREAD`, else none — and stores the decision.
        photometric_target: the grey-level (mean, std) in [0, 1] pixel units that
            ``"standardize"`` brings every image to: the typical exposure of the training
            images, measured when the model is fitted (a fixed mid-grey target lost on magnetic
            tile-20: image AUROC 74.89 against 79.71). None: not fitted yet (mid-grey,
            :data:`cainnflow.photometric.TARGET_MEAN` / ``TARGET_STD``).
        seed: seed of the flow initialisation and permutations.
    """

    backbone: str = DEFAULT_BACKBONE
    out_indices: tuple[int, ...] | None = None
    image_size: int = 256
    variant: SubnetVariant = "CAC"
    steps: int = 1
    hidden_ratio: float = 1.0
    reduction: int = 16
    attention_min_hidden: int = MIN_HIDDEN
    attention_negative_slope: float = ATTENTION_NEGATIVE_SLOPE
    clamp: float = 2.0
    coupling: CouplingType = "glow"
    sigma: float = 4.0
    combine: str = "likelihood"
    pooling: str = "auto"
    coarsest_map_weight: float | None = None
    subnet_relu: bool = True
    photometric: str = "auto"
    photometric_target: tuple[float, float] | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        _check_type("backbone", self.backbone, str)
        for name in ("image_size", "steps", "reduction", "attention_min_hidden", "seed"):
            _check_type(name, getattr(self, name), int)
        for name in ("hidden_ratio", "clamp", "sigma", "attention_negative_slope"):
            _check_type(name, getattr(self, name), float)
        if self.coarsest_map_weight is not None:
            _check_type("coarsest_map_weight", self.coarsest_map_weight, float)
            if not 0.0 <= self.coarsest_map_weight <= 1.0:
                raise ValueError(
                    f"coarsest_map_weight must be between 0 and 1, got {self.coarsest_map_weight}"
                )
            object.__setattr__(self, "coarsest_map_weight", float(self.coarsest_map_weight))
        if not isinstance(self.subnet_relu, bool):
            raise ValueError(f"subnet_relu must be true or false, got {self.subnet_relu!r:.40}")
        if self.variant not in VARIANTS:
            raise ValueError(f"unknown variant {self.variant!r}; choose one of {', '.join(VARIANTS)}")
        if self.coupling not in COUPLINGS:
            raise ValueError(f"unknown coupling {self.coupling!r}; choose one of {', '.join(COUPLINGS)}")
        if self.combine not in COMBINES:
            raise ValueError(f"unknown combine {self.combine!r}; choose one of {', '.join(COMBINES)}")
        if self.photometric not in PHOTOMETRIC_MODES:
            raise ValueError(
                f"unknown photometric {self.photometric!r:.40}; choose one of {', '.join(PHOTOMETRIC_MODES)}"
            )
        if self.photometric_target is not None:
            target = self.photometric_target
            if isinstance(target, str | bytes) or not hasattr(target, "__len__") or len(target) != 2:
                raise ValueError(f"photometric_target must be a (mean, std) pair, got {target!r:.40}")
            for value in target:
                _check_type("photometric_target", value, float)
                if not 0.0 < value <= 1.0:
                    raise ValueError(f"photometric_target values must be in (0, 1], got {value}")
            object.__setattr__(self, "photometric_target", (float(target[0]), float(target[1])))
        if self.pooling not in ("auto", *POOLINGS):
            raise ValueError(f"unknown pooling {self.pooling!r}; choose one of auto, {', '.join(POOLINGS)}")
        for name, (low, high) in CONFIG_BOUNDS.items():
            value = getattr(self, name)
            if not low <= value <= high:
                raise ValueError(f"{name} must be between {low} and {high}, got {value}")
        if self.hidden_ratio <= 0 or self.clamp <= 0:
            raise ValueError("hidden_ratio and clamp must be positive")
        if self.out_indices is not None:
            indices = self.out_indices
            if isinstance(indices, str | bytes) or not hasattr(indices, "__iter__"):
                raise ValueError(f"out_indices must be a list of stage indices, got {indices!r}")
            indices = tuple(indices)
            if not 1 <= len(indices) <= MAX_STAGES:
                raise ValueError(f"out_indices must name 1 to {MAX_STAGES} stages, got {len(indices)}")
            for index in indices:
                _check_type("out_indices", index, int)
                if not 0 <= index <= MAX_STAGE_INDEX:
                    raise ValueError(f"out_indices must be between 0 and {MAX_STAGE_INDEX}, got {index}")
            object.__setattr__(self, "out_indices", tuple(int(i) for i in indices))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["out_indices"] = list(self.out_indices) if self.out_indices is not None else None
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CAINNFlowConfig:
        known = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in known}
        # Checkpoints written before ``combine`` existed were calibrated on plain NLL maps.
        kwargs.setdefault("combine", "nll")
        # ... and before the CBAM hidden-width floor, with C // r units (at least 1).
        kwargs.setdefault("attention_min_hidden", 1)
        # ... and before the coarse-scale image score, with the maximum of the combined map.
        kwargs.setdefault("pooling", "max")
        # ... and before the coarsest scale's map weight, with equal weights.
        kwargs.setdefault("coarsest_map_weight", 1.0)
        # ... and before the ReLU of CAC was a setting, with the ReLU.
        kwargs.setdefault("subnet_relu", True)
        # ... and before the channel MLP's leaky activation, with the paper's ReLU.
        kwargs.setdefault("attention_negative_slope", 0.0)
        # ... and before the per-image photometric standardisation, without it.
        kwargs.setdefault("photometric", "none")
        if kwargs.get("out_indices") is not None:
            kwargs["out_indices"] = tuple(kwargs["out_indices"])
        return cls(**kwargs)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)
