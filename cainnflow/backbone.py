"""Frozen pretrained feature extractors (CNN or ViT) that feed the normalizing flows.

A backbone turns normalised images ``(N, 3, H, W)`` into a list of feature maps
``(N, C_i, H / r_i, W / r_i)``. Channel counts ``C_i`` and reductions ``r_i`` always come from
timm's ``feature_info``; nothing about a network's shape is hard-coded here. Which backbones
exist is :mod:`cainnflow.registry`; where their weights come from, :mod:`cainnflow.weights`;
how they run fast on a CPU, :mod:`cainnflow.speedups`.

Input normalisation
    :attr:`FeatureExtractor.mean` / :attr:`FeatureExtractor.std` are timm's ``pretrained_cfg``
    values. For the EfficientNet-Lite weights that is ``(0.5, 0.5, 0.5)`` / ``(0.5, 0.5, 0.5)``
    (i.e. pixels mapped to [-1, 1], as in the original TF-Lite preprocessing ``(x - 127) / 128``),
    not the ImageNet mean/std. This was checked on natural-image-like inputs (dead-leaves and
    1/f-noise images): the batch statistics entering the early BatchNorm layers match the
    stored running statistics markedly better with 0.5/0.5 (median |log variance ratio| of the
    stem BN 0.48 vs 1.36 with ImageNet mean/std; mean offsets of the first 8 BN layers 0.07 vs
    0.18 standard deviations), so 0.5/0.5 is the right normalisation for these weights.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

import timm
import torch
from torch import Tensor, nn

from .errors import CainnflowError, WeightsUnavailableError
from .registry import DEFAULT_BACKBONE, BackboneSpec, get_backbone_spec
from .speedups import fold_batchnorm_checked, freeze_graph
from .weights import (
    WeightsOrigin,
    WeightsSource,
    load_state_into,
    load_weights_file,
    offline_weights_path,
    package_source,
    to_timm_names,
    weights_help,
)

__all__ = ["FeatureExtractor", "WeightsChoice", "backbone_from_state", "create_backbone"]

logger = logging.getLogger(__name__)

WeightsChoice = Literal["auto", "pretrained", "random"]

_WEIGHTS_AUTO = "auto"
_WEIGHTS_PRETRAINED = "pretrained"
_WEIGHTS_RANDOM = "random"
_DUMMY_BATCH = 1
_RGB_CHANNELS = 3


def _build_feature_model(spec: BackboneSpec, out_indices: tuple[int, ...], pretrained: bool) -> nn.Module:
    """Create the timm feature model (random or hub weights) and drop unused layers."""
    if spec.kind == "cnn":
        model = timm.create_model(
            spec.timm_name, pretrained=pretrained, features_only=True, out_indices=out_indices
        )
        _truncate_cnn(model)
        return model
    # ViT: timm's features_only wrapper (FeatureGetterNet) cannot be asked for the final norm
    # through create_model, and FastFlow / CAINNFlow apply it, so wrap the full model here.
    from timm.models._features import FeatureGetterNet

    extra = {"dynamic_img_size": True} if spec.dynamic_size else {}
    model = timm.create_model(spec.timm_name, pretrained=pretrained, **extra)
    # Wrapping prunes blocks after the last index and the classifier head (keeps the norm).
    return FeatureGetterNet(model, out_indices=list(out_indices), norm=True, output_fmt="NCHW")


def _truncate_cnn(model: nn.Module) -> None:
    """Delete blocks after the last used stage where timm keeps them (EfficientNet).

    timm's ``FeatureListNet`` (ResNet & co.) already stops after the last returned stage and
    EfficientNet's feature model has no conv_head, but it runs all blocks; keep only the needed.
    """
    stage_out_idx = getattr(model, "_stage_out_idx", None)
    blocks = getattr(model, "blocks", None)
    if stage_out_idx is None or blocks is None or getattr(model, "feature_hooks", None) is not None:
        return
    last_block = max(stage_out_idx)  # stage i is the output of block i - 1
    if last_block < len(blocks):
        model.blocks = blocks[:last_block]


def _validate_out_indices(spec: BackboneSpec, out_indices: Sequence[int] | None) -> tuple[int, ...]:
    if out_indices is None:
        return spec.out_indices
    indices = tuple(int(index) for index in out_indices)
    if not indices or any(index < 0 for index in indices) or list(indices) != sorted(set(indices)):
        raise CainnflowError(
            f"out_indices must be distinct, increasing, non-negative stage indices; got {tuple(out_indices)}."
        )
    return indices


def create_backbone(
    name: str = DEFAULT_BACKBONE,
    *,
    weights: WeightsChoice | str | Path = _WEIGHTS_AUTO,
    out_indices: Sequence[int] | None = None,
) -> FeatureExtractor:
    """Build a frozen feature extractor with ImageNet (or given) weights.

    Args:
        name: A key of :data:`BACKBONES`.
        weights: ``"auto"`` / ``"pretrained"``: the offline weights package when the backbone
            has one and it is installed, else the timm hub (downloads on first use).
            ``"random"``: random init, for tests only (logs a warning). A path: a local
            ``.safetensors`` / ``.pth`` / ``.pt`` / ``.bin`` file with timm key names (full model
            or feature part) or, for EfficientNet-Lite, EfficientNet-PyTorch key names.
        out_indices: Feature stages (CNN) or transformer blocks (ViT); defaults to the spec's.

    Returns:
        The frozen extractor, on the CPU, in eval mode.

    Raises:
        UnknownBackboneError: Unknown ``name``.
        WeightsUnavailableError: The weights cannot be obtained, read, or do not fit.
        CainnflowError: Invalid ``out_indices``.
    """
    spec = get_backbone_spec(name)
    indices = _validate_out_indices(spec, out_indices)

    def build(pretrained: bool) -> nn.Module:
        try:
            return _build_feature_model(spec, indices, pretrained=pretrained)
        except (IndexError, AssertionError, ValueError) as exc:
            raise CainnflowError(f"out_indices {indices} do not fit backbone {spec.name}: {exc}") from exc

    choice = weights.strip().lower() if isinstance(weights, str) else None
    if choice == _WEIGHTS_RANDOM:
        logger.warning(
            "Backbone %s uses RANDOM weights (tests only): anomaly detection will be meaningless.", spec.name
        )
        model = build(pretrained=False)
        source = WeightsSource(WeightsOrigin.RANDOM)
    elif choice in (_WEIGHTS_AUTO, _WEIGHTS_PRETRAINED):
        offline_path = offline_weights_path(spec.name) if spec.offline_package else None
        if offline_path is not None:
            model = build(pretrained=False)
            state = load_weights_file(offline_path)
            load_state_into(model, to_timm_names(spec, state), origin=offline_path.name)
            source = package_source(spec)
        else:
            try:
                model = _build_feature_model(spec, indices, pretrained=True)
            except CainnflowError:
                raise
            except Exception as exc:  # any hub / network / cache error
                raise WeightsUnavailableError(
                    f"ImageNet weights for {spec.name} could not be downloaded from the timm hub "
                    f"(no network? {type(exc).__name__}). {weights_help(spec)}"
                ) from exc
            source = WeightsSource(WeightsOrigin.HUB, spec.timm_name)
    else:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise WeightsUnavailableError(
                f"Weights file not found: {path} (weights must be 'auto', 'pretrained', 'random' or a file path)."
            )
        model = build(pretrained=False)
        state = load_weights_file(path)
        load_state_into(model, to_timm_names(spec, state), origin=path.name)
        source = WeightsSource(WeightsOrigin.FILE, path.name)
    return FeatureExtractor(model, spec=spec, out_indices=indices, weights=source)


def backbone_from_state(
    name: str,
    state: Mapping[str, Tensor],
    *,
    out_indices: Sequence[int] | None = None,
    recorded: WeightsSource | None = None,
) -> FeatureExtractor:
    """A backbone whose weights were embedded in a checkpoint.

    Args:
        name: A key of :data:`cainnflow.registry.BACKBONES`.
        state: The extractor's state dict, as :meth:`FeatureExtractor.state_dict` wrote it.
        out_indices: Feature stages (CNN) or blocks (ViT).
        recorded: The provenance the checkpoint recorded for these weights.

    Raises:
        WeightsUnavailableError: The tensors do not fit the backbone.
    """
    spec = get_backbone_spec(name)
    indices = _validate_out_indices(spec, out_indices)
    model = _build_feature_model(spec, indices, pretrained=False)
    extractor = FeatureExtractor(
        model,
        spec=spec,
        out_indices=indices,
        weights=WeightsSource(WeightsOrigin.CHECKPOINT, recorded.label if recorded else ""),
    )
    try:
        extractor.load_state_dict(dict(state), strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "shape mismatch"
        raise WeightsUnavailableError(f"embedded backbone weights do not fit {spec.name}: {first}") from exc
    if recorded is not None and recorded.origin is WeightsOrigin.RANDOM:
        logger.warning("Backbone %s carries RANDOM weights (tests only) from its checkpoint.", spec.name)
    return extractor


# ------------------------------------------------------------------------------------- extractor


class FeatureExtractor(nn.Module):
    """A frozen backbone returning multi-scale feature maps.

    The module is always in eval mode (``.train()`` is a no-op) and none of its parameters
    require gradients; its forward runs without autograd.

    Attributes:
        name: Backbone name (key of :data:`BACKBONES`).
        kind: ``"cnn"`` or ``"vit"``.
        out_indices: Stages (CNN) or blocks (ViT) the features come from.
        channels: Channels ``C_i`` per returned map, from timm's ``feature_info``.
        reductions: Stride ``r_i`` per returned map, from timm's ``feature_info``.
        mean: RGB mean the input must be normalised with (timm ``pretrained_cfg``).
        std: RGB std the input must be normalised with (timm ``pretrained_cfg``).
        input_size: Default square image side for this backbone.
        weights: Where the weights came from (typed; :attr:`weights_source` is its label).
        model: The underlying timm feature model.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        spec: BackboneSpec,
        out_indices: tuple[int, ...],
        weights: WeightsSource,
    ) -> None:
        """Wrap and freeze a timm feature model.

        Args:
            model: timm feature model with ``feature_info`` and ``pretrained_cfg``.
            spec: The backbone's spec.
            out_indices: Stages / blocks the model returns.
            weights: Where the weights came from.
        """
        super().__init__()
        self.model = model
        self.spec = spec
        self.name = spec.name
        self.kind = spec.kind
        self.out_indices = tuple(out_indices)
        self.channels: list[int] = [int(c) for c in model.feature_info.channels()]
        self.reductions: list[int] = [int(r) for r in model.feature_info.reduction()]
        pretrained_cfg = getattr(model, "pretrained_cfg", None) or getattr(
            getattr(model, "model", None), "pretrained_cfg", {}
        )
        self.mean: tuple[float, float, float] = tuple(float(v) for v in pretrained_cfg["mean"])  # type: ignore[assignment]
        self.std: tuple[float, float, float] = tuple(float(v) for v in pretrained_cfg["std"])  # type: ignore[assignment]
        self.input_size = spec.default_image_size
        self.weights = weights
        self._shape_cache: dict[tuple[int, int], list[tuple[int, int, int]]] = {}
        for parameter in self.parameters():
            parameter.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> FeatureExtractor:
        """Keep the backbone in eval mode whatever ``mode`` is (BatchNorm stats stay frozen).

        Args:
            mode: Ignored.

        Returns:
            self.
        """
        return super().train(False)

    @property
    def weights_source(self) -> str:
        """Where the weights came from, as one line for people."""
        return self.weights.label

    @property
    def num_features(self) -> int:
        """How many feature maps :meth:`forward` returns."""
        return len(self.channels)

    def forward(self, images: Tensor) -> list[Tensor]:
        """Extract the feature maps.

        Args:
            images: (N, 3, H, W) float images already normalised with :attr:`mean` / :attr:`std`.

        Returns:
            One tensor per stage, (N, C_i, H_i, W_i) with ``H_i = ceil(H / r_i)`` for CNNs and
            ``H / r_i`` for ViTs (class / distillation tokens dropped), detached from autograd.
        """
        if images.ndim != len(("N", "C", "H", "W")) or images.shape[1] != _RGB_CHANNELS:
            raise ValueError(f"Expected images of shape (N, 3, H, W), got {tuple(images.shape)}.")
        with torch.no_grad():
            if self.kind != "cnn":
                return list(self.model(images))
            model = self._inference_model()
            images = images.contiguous(memory_format=torch.channels_last)
            if images.device.type == "cpu" and not torch.is_autocast_enabled("cpu"):
                model = self._frozen_graph(model, images)
            return [f.contiguous() for f in model(images)]

    def _frozen_graph(self, model: nn.Module, images: Tensor) -> nn.Module:
        """``model`` frozen by TorchScript for this input size (CPU, float32; cached)."""
        cache = self.__dict__.setdefault("_frozen", {})
        key = (tuple(images.shape[2:]), images.dtype)
        if key not in cache:
            cache[key] = freeze_graph(model, images)
        return cache[key]

    def _inference_model(self) -> nn.Module:
        """The CNN with BatchNorm folded into its convs, channels-last (cached).

        Rebuilt after ``.to()`` or ``load_state_dict``; not part of the state dict.
        """
        cached = self.__dict__.get("_fused")
        if cached is None:
            cached = fold_batchnorm_checked(self.model, _RGB_CHANNELS)
            self.__dict__["_fused"] = cached
        return cached

    def _drop_inference_caches(self) -> None:
        """Forget the fused model and frozen graphs: the weights or their device changed."""
        self.__dict__.pop("_fused", None)
        self.__dict__.pop("_frozen", None)

    def _apply(self, fn, recurse: bool = True):
        self._drop_inference_caches()
        return super()._apply(fn, recurse)

    def _load_from_state_dict(self, *args, **kwargs) -> None:
        self._drop_inference_caches()
        super()._load_from_state_dict(*args, **kwargs)

    def feature_shapes(self, image_size: int | tuple[int, int] | None = None) -> list[tuple[int, int, int]]:
        """Shape (C, H, W) of each feature map for one input size, measured by a dummy forward.

        Args:
            image_size: Side of square images, or (H, W); default :attr:`input_size`.

        Returns:
            One (C_i, H_i, W_i) per returned map.

        Raises:
            ValueError: The size is unusable with this backbone (e.g. not a multiple of the ViT
                patch size, or not the fixed size of a fixed-size ViT).
        """
        size = image_size if image_size is not None else self.input_size
        height, width = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
        key = (height, width)
        if key not in self._shape_cache:
            if self.kind == "vit":
                self._check_vit_size(height, width)
            reference = next(self.model.parameters())
            dummy = torch.zeros(
                _DUMMY_BATCH, _RGB_CHANNELS, height, width, dtype=reference.dtype, device=reference.device
            )
            outputs = self.forward(dummy)
            self._shape_cache[key] = [(int(t.shape[1]), int(t.shape[2]), int(t.shape[3])) for t in outputs]
        return list(self._shape_cache[key])

    def _check_vit_size(self, height: int, width: int) -> None:
        (patch,) = set(self.reductions)
        if height % patch or width % patch:
            raise ValueError(
                f"{self.name} needs image sides that are multiples of {patch}, got {height}x{width}."
            )
        if not self.spec.dynamic_size and (height, width) != (self.input_size, self.input_size):
            raise ValueError(
                f"{self.name} only accepts {self.input_size}x{self.input_size} images, got {height}x{width}."
            )

    def extra_repr(self) -> str:
        """Summary shown in ``repr``."""
        return (
            f"name={self.name!r}, out_indices={self.out_indices}, channels={self.channels}, "
            f"reductions={self.reductions}, weights={self.weights.label!r}"
        )
