"""The CAINNFlow model: a frozen backbone plus one 2-D coupling flow per feature scale.

``CAINNFlow`` keeps the backbone (a :class:`cainnflow.backbone.FeatureExtractor`), a fixed
per-channel standardisation of each stage's features (statistics of the training set, so
the flow sees unit-scale inputs whatever the backbone), and the flows. Scoring lives in
:mod:`cainnflow.scoring`, the loss in :func:`negative_log_likelihood`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from .attention import CBAM, MIN_HIDDEN
from .backbone import FeatureExtractor
from .flow import COUPLINGS, CouplingType, FeatureStandardizer, build_flow
from .registry import DEFAULT_BACKBONE
from .scoring import COMBINES, POOLINGS, anomaly_map, image_scores, score_latents
from .subnet import VARIANTS, SubnetVariant

__all__ = [
    "AttentionMaps",
    "CAINNFlow",
    "CAINNFlowConfig",
    "FlowOutput",
    "negative_log_likelihood",
]

LOG_2PI = math.log(2 * math.pi)
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
        clamp: soft clamp on the coupling log-scales.
        coupling: ``"glow"`` (paper Eq. 1, both halves) or ``"allinone"`` (FastFlow-style).
        sigma: Gaussian smoothing of the anomaly map, in input pixels (0 = none).
        combine: how scale maps are combined: ``"likelihood"`` (mean of ``1 − exp(−nll)``)
            or ``"nll"`` (mean of the negative log-likelihoods); see :mod:`cainnflow.scoring`.
        pooling: how the image score is made: ``"auto"`` (default: chosen when training, from
            the good images — ``"coarse"`` for flip-invariant ones such as textures, ``"max"``
            for aligned parts; :mod:`cainnflow.augment`), ``"coarse"`` (the maximum of the
            coarsest scale's map: context, and a small normal spread), ``"max"`` (the maximum
            of the combined map, the paper) or ``"topk"`` (mean of its top 1 % pixels); see
            :mod:`cainnflow.scoring`. An untrained ``"auto"`` model scores as ``"max"``.
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
    clamp: float = 2.0
    coupling: CouplingType = "glow"
    sigma: float = 4.0
    combine: str = "likelihood"
    pooling: str = "auto"
    seed: int = 0

    def __post_init__(self) -> None:
        _check_type("backbone", self.backbone, str)
        for name in ("image_size", "steps", "reduction", "attention_min_hidden", "seed"):
            _check_type(name, getattr(self, name), int)
        for name in ("hidden_ratio", "clamp", "sigma"):
            _check_type(name, getattr(self, name), float)
        if self.variant not in VARIANTS:
            raise ValueError(f"unknown variant {self.variant!r}; choose one of {', '.join(VARIANTS)}")
        if self.coupling not in COUPLINGS:
            raise ValueError(f"unknown coupling {self.coupling!r}; choose one of {', '.join(COUPLINGS)}")
        if self.combine not in COMBINES:
            raise ValueError(f"unknown combine {self.combine!r}; choose one of {', '.join(COMBINES)}")
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
        if kwargs.get("out_indices") is not None:
            kwargs["out_indices"] = tuple(kwargs["out_indices"])
        return cls(**kwargs)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)


class FlowOutput(NamedTuple):
    """Per-scale latents and log-determinants.

    Attributes:
        z: one tensor (N, C_i, H_i, W_i) per scale.
        log_jac_det: one tensor (N,) per scale, ``log|det ∂z/∂features|``.
    """

    z: list[Tensor]
    log_jac_det: list[Tensor]


@dataclass
class AttentionMaps:
    """CBAM gates of one coupling subnet for one forward pass.

    Attributes:
        scale: index of the feature scale.
        step: coupling step within that scale's flow.
        subnet: which subnet of the block (0 or 1 for GLOW couplings).
        channel: (N, C_hidden) channel gate values in (0, 1).
        spatial: (N, H, W) spatial gate values in (0, 1).
    """

    scale: int
    step: int
    subnet: int
    channel: Tensor
    spatial: Tensor


class CAINNFlow(nn.Module):
    """Frozen backbone + per-scale CAINNFlow normalizing flows.

    Args:
        backbone: feature extractor; its ``channels`` / ``feature_shapes`` define the flows.
        config: model configuration.
    """

    def __init__(self, backbone: FeatureExtractor, config: CAINNFlowConfig) -> None:
        super().__init__()
        self.config = config
        self.backbone = backbone
        shapes = backbone.feature_shapes(config.image_size)
        self.feature_shapes: list[tuple[int, int, int]] = [tuple(s) for s in shapes]
        self.flows = nn.ModuleList(
            build_flow(
                c,
                h,
                w,
                steps=config.steps,
                variant=config.variant,
                hidden_ratio=config.hidden_ratio,
                reduction=config.reduction,
                attention_min_hidden=config.attention_min_hidden,
                clamp=config.clamp,
                coupling=config.coupling,
                seed=config.seed + i,
                standardize=True,
            )
            for i, (c, h, w) in enumerate(shapes)
        )

    @property
    def standardizers(self) -> list[FeatureStandardizer]:
        """The fixed feature standardisation at the head of each scale's flow."""
        return [flow.module_list[0] for flow in self.flows]

    @property
    def num_scales(self) -> int:
        return len(self.flows)

    @property
    def device(self) -> torch.device:
        return next(self.flows.parameters()).device

    def flow_parameters(self) -> list[nn.Parameter]:
        """The trainable parameters (the backbone is frozen)."""
        return [p for p in self.flows.parameters() if p.requires_grad]

    @torch.no_grad()
    def extract_features(self, images: Tensor) -> list[Tensor]:
        """Backbone features for normalised images (N, 3, S, S), one (N, C_i, H_i, W_i) per scale."""
        return [f.float() for f in self.backbone(images)]

    @torch.no_grad()
    def fit_standardizers(self, features: Sequence[Tensor]) -> None:
        """Sets the per-channel statistics from training features (one tensor per scale)."""
        for standardizer, feats in zip(self.standardizers, features, strict=True):
            standardizer.fit(feats)

    def forward(self, features: Sequence[Tensor]) -> FlowOutput:
        """Maps backbone features to latents.

        Args:
            features: one tensor (N, C_i, H_i, W_i) per scale, as from :meth:`extract_features`.

        Returns:
            :class:`FlowOutput`; ``log_jac_det`` includes the standardisation.
        """
        zs, jacs = [], []
        for flow, feats in zip(self.flows, features, strict=True):
            z, jac = flow(feats)
            zs.append(z)
            jacs.append(jac)
        return FlowOutput(zs, jacs)

    def anomaly_map(self, z: Sequence[Tensor]) -> Tensor:
        """This model's anomaly map (N, S, S) for per-scale latents, as configured."""
        return anomaly_map(z, self.config.image_size, self.config.sigma, self.config.combine)

    def image_scores(self, maps: Tensor) -> Tensor:
        """Image scores (N,) pooled from anomaly maps (N, S, S) (not for ``"coarse"``: see :meth:`score`)."""
        return image_scores(maps, "max" if self.config.pooling == "auto" else self.config.pooling)

    def score(self, z: Sequence[Tensor], image_size: int | None = None) -> tuple[Tensor, Tensor]:
        """This model's anomaly maps (N, S, S) and image scores (N,) for per-scale latents."""
        cfg = self.config
        pooling = "max" if cfg.pooling == "auto" else cfg.pooling
        return score_latents(z, image_size or cfg.image_size, cfg.sigma, cfg.combine, pooling)

    def encode(self, images: Tensor) -> FlowOutput:
        """Images (N, 3, S, S) → latents, through the frozen backbone."""
        return self(self.extract_features(images))

    @torch.no_grad()
    def inverse(self, z: Sequence[Tensor | None]) -> list[Tensor | None]:
        """Maps latents back to backbone features (inverse generation).

        Args:
            z: one tensor (N, C_i, H_i, W_i) per scale (None skips that scale).

        Returns:
            Features in the backbone's space, one per scale (None where skipped).
        """
        out: list[Tensor | None] = []
        for flow, zi in zip(self.flows, z, strict=True):
            if zi is None:
                out.append(None)
                continue
            x, _ = flow(zi, rev=True)
            out.append(x)
        return out

    @contextmanager
    def recording_attention(self):
        """Within this context every CBAM keeps the gates of its latest forward."""
        modules = [m for m in self.flows.modules() if isinstance(m, CBAM)]
        for m in modules:
            m.record = True
        try:
            yield modules
        finally:
            for m in modules:
                m.record = False

    @torch.no_grad()
    def attention_maps(self, features: Sequence[Tensor]) -> list[AttentionMaps]:
        """CBAM channel and spatial gates of every subnet for the given features.

        Empty for the ``CC`` variant, which has no attention.
        """
        result: list[AttentionMaps] = []
        with self.recording_attention():
            self(features)
            for scale, flow in enumerate(self.flows):
                step = 0
                for block in flow.module_list:
                    subnets = [m for m in block.children() if hasattr(m, "cbam")]
                    if not subnets:
                        continue
                    for k, subnet in enumerate(subnets):
                        cbam = subnet.cbam
                        if cbam is None or cbam.last_channel_gate is None:
                            continue
                        result.append(
                            AttentionMaps(
                                scale=scale,
                                step=step,
                                subnet=k,
                                channel=cbam.last_channel_gate.flatten(1).cpu(),
                                spatial=cbam.last_spatial_gate[:, 0].cpu(),
                            )
                        )
                    step += 1
        return result


def negative_log_likelihood(output: FlowOutput) -> Tensor:
    """Mean negative log-likelihood per dimension, summed over scales (scalar).

    ``-log p(x) = ½‖z‖² + ½ D log 2π − log|det J|`` for each image, divided by the number
    of dimensions ``D = C·H·W`` of its scale so scales of different sizes weigh alike.
    """
    total = torch.zeros((), device=output.z[0].device)
    for z, jac in zip(output.z, output.log_jac_det, strict=True):
        dims = z[0].numel()
        nll = 0.5 * torch.sum(z.float() ** 2, dim=(1, 2, 3)) + 0.5 * dims * LOG_2PI - jac
        total = total + torch.mean(nll) / dims
    return total
