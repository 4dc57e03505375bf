"""The CAINNFlow model: a frozen backbone plus one 2-D coupling flow per feature scale.

``CAINNFlow`` keeps the backbone (a :class:`cainnflow.backbone.FeatureExtractor`), a fixed
per-channel standardisation of each stage's features (statistics of the training set, so
the flow sees unit-scale inputs whatever the backbone), and the flows. Scoring lives in
:mod:`cainnflow.scoring`, the loss in :func:`negative_log_likelihood`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import NamedTuple

import torch
from torch import Tensor, nn

from .attention import CBAM
from .backbone import FeatureExtractor
from .config import CAINNFlowConfig
from .flow import FeatureStandardizer, build_flow
from .photometric import photometric_step
from .scoring import anomaly_map, score_latents

__all__ = [
    "AttentionMaps",
    "CAINNFlow",
    "CAINNFlowConfig",
    "FlowOutput",
    "negative_log_likelihood",
]

LOG_2PI = math.log(2 * math.pi)


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
        self.photometric = photometric_step(
            config.photometric, backbone.mean, backbone.std, config.photometric_target
        )
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
                subnet_relu=config.subnet_relu,
                attention_negative_slope=config.attention_negative_slope,
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
        """Backbone features for normalised images (N, 3, S, S), one (N, C_i, H_i, W_i) per scale.

        The images pass the config's photometric step first (:mod:`cainnflow.photometric`).
        """
        return [f.float() for f in self.backbone(self.photometric(images))]

    def set_photometric(self, mode: str, target: tuple[float, float] | None) -> None:
        """Fixes whether and to what exposure images are standardised (config and step together)."""
        self.config = replace(self.config, photometric=mode, photometric_target=target)
        self.photometric = photometric_step(
            self.config.photometric, self.backbone.mean, self.backbone.std, self.config.photometric_target
        )

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

    @property
    def coarsest_map_weight(self) -> float:
        """The coarsest scale's weight in this model's map (1 until training decides ``None``)."""
        weight = self.config.coarsest_map_weight
        return 1.0 if weight is None else weight

    def anomaly_map(self, z: Sequence[Tensor]) -> Tensor:
        """This model's anomaly map (N, S, S) for per-scale latents, as configured."""
        cfg = self.config
        return anomaly_map(z, cfg.image_size, cfg.sigma, cfg.combine, self.coarsest_map_weight)

    def score(self, z: Sequence[Tensor], image_size: int | None = None) -> tuple[Tensor, Tensor]:
        """This model's anomaly maps (N, S, S) and image scores (N,) for per-scale latents."""
        cfg = self.config
        pooling = "max" if cfg.pooling == "auto" else cfg.pooling
        size = image_size or cfg.image_size
        return score_latents(z, size, cfg.sigma, cfg.combine, pooling, self.coarsest_map_weight)

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
