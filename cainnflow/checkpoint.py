"""Checkpoints: tensors in safetensors, configuration as JSON — nothing is ever unpickled.

A checkpoint is one ``.safetensors`` file. Its tensors are the flows' state (and the
backbone's, unless its weights can be had again by name: see
:class:`cainnflow.weights.WeightsSource`); its header metadata holds one JSON document under
the key ``"cainnflow"`` with the model configuration, the backbone's typed provenance, score
statistics, threshold, training history, the training record
(:class:`cainnflow.record.TrainingRecord`: data, counts, timings, auto-configuration, how the
threshold was set, feedback) and the library version. Older formats are upgraded on read:
format 1's standardiser tensors move into the flows, format 2's free ``info`` dict becomes a
record (:meth:`cainnflow.record.TrainingRecord.from_info`). Writes are atomic: the file is
written beside the target and renamed over it, so a crash mid-save leaves the previous
checkpoint intact.

Reading treats the file as hostile: every field is type- and bounds-checked
(:class:`cainnflow.model.CAINNFlowConfig` caps sizes so nothing can allocate without bound)
and any problem is one :class:`CheckpointError` line.
"""

from __future__ import annotations

import json
import logging
import os
import re
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save as save_safetensors_bytes

from . import __version__
from .backbone import backbone_from_state, create_backbone
from .device import resolve_device
from .errors import CheckpointError, WeightsUnavailableError
from .model import CAINNFlow, CAINNFlowConfig
from .record import RECORD_KEY, TrainingRecord
from .registry import BACKBONES
from .scoring import ScoreStats
from .training import TrainingHistory
from .validate import finite_number
from .weights import WeightsOrigin, WeightsSource

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_SUFFIX",
    "FORMAT_VERSION",
    "DetectorParts",
    "detector_document",
    "detector_to_bytes",
    "load_detector_parts",
    "read_checkpoint",
    "save_detector",
    "write_bytes_atomically",
    "write_checkpoint",
]

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "cainnflow-checkpoint"
FORMAT_VERSION = 3
"""2: the feature standardisation is the first module of each flow (``flows.i.module_list.0``);
3: a typed training record (``"record"``) replaces the free ``"info"`` dict."""
CHECKPOINT_SUFFIX = ".safetensors"
METADATA_KEY = "cainnflow"
MAX_HEADER_BYTES = 16 * 1024 * 1024
MAX_JSON_DEPTH = 32
_ZIP_MAGIC = b"PK\x03\x04"
_PICKLE_PROTO = 0x80
_PICKLE_PROTOCOLS = range(2, 6)


def write_bytes_atomically(path: str | Path, data: bytes) -> None:
    """Writes ``data`` beside ``path`` and renames it over ``path``: a crash leaves the old file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def write_checkpoint(path: str | Path, tensors: dict[str, torch.Tensor], config: dict[str, Any]) -> Path:
    """Atomically writes tensors and a JSON-serialisable config to ``path``.

    Returns:
        The path written.
    """
    path = Path(path)
    document = {"format": CHECKPOINT_FORMAT, "format_version": FORMAT_VERSION, **config}
    metadata = {METADATA_KEY: json.dumps(document, sort_keys=True)}
    payload = save_safetensors_bytes(
        {k: v.detach().contiguous().cpu() for k, v in tensors.items()}, metadata=metadata
    )
    write_bytes_atomically(path, payload)
    return path


def _read_source(source: str | Path | bytes | BinaryIO) -> tuple[bytes, str]:
    if isinstance(source, bytes | bytearray | memoryview):
        return bytes(source), "uploaded checkpoint"
    if hasattr(source, "read"):
        name = getattr(source, "name", "uploaded checkpoint")
        return source.read(), str(name)
    path = Path(source)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if path.is_dir():
        raise CheckpointError(f"checkpoint {path} is a folder, not a .safetensors file")
    return path.read_bytes(), path.name


def _looks_like_pickle(data: bytes) -> bool:
    """A pickle stream (protocol 2-5) or a zip archive (``torch.save``'s format)."""
    return data.startswith(_ZIP_MAGIC) or (
        len(data) > 1 and data[0] == _PICKLE_PROTO and data[1] in _PICKLE_PROTOCOLS
    )


def _parse_header(data: bytes) -> dict[str, Any] | None:
    """The safetensors JSON header, or None when ``data`` is not a safetensors file."""
    if len(data) < 8:
        return None
    (header_len,) = struct.unpack("<Q", data[:8])
    if header_len > MAX_HEADER_BYTES or 8 + header_len > len(data):
        return None
    try:
        header = json.loads(data[8 : 8 + header_len])
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    return header if isinstance(header, dict) else None


def read_checkpoint(source: str | Path | bytes | BinaryIO) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Reads a checkpoint written by :func:`write_checkpoint`.

    Args:
        source: a path, the file's bytes, or a binary file object (an upload).

    Returns:
        ``(tensors, config)``.

    Raises:
        CheckpointError: the file is missing, truncated, a pickle, a safetensors file of
            another program, or of an unsupported format version.
    """
    data, name = _read_source(source)
    header = _parse_header(data)
    if header is None:
        if _looks_like_pickle(data):
            raise CheckpointError(
                f"{name} looks like a PyTorch pickle file; cainnflow never unpickles checkpoints "
                "(they can run code). Use a .safetensors checkpoint saved by cainnflow."
            )
        if len(data) < 8:
            raise CheckpointError(f"{name} is not a cainnflow checkpoint (file too short: {len(data)} bytes)")
        raise CheckpointError(f"{name} is not a valid safetensors file (truncated or corrupt header)")
    metadata = header.get("__metadata__") or {}
    if not isinstance(metadata, dict) or METADATA_KEY not in metadata:
        raise CheckpointError(
            f"{name} is a safetensors file but not a cainnflow checkpoint (no '{METADATA_KEY}' metadata)"
        )
    if not isinstance(metadata, dict) or not isinstance(metadata.get(METADATA_KEY), str):
        raise CheckpointError(f"{name}: its cainnflow metadata is not a JSON string")
    try:
        config = json.loads(metadata[METADATA_KEY])
    except (json.JSONDecodeError, RecursionError) as exc:
        raise CheckpointError(f"{name}: its cainnflow metadata is not valid JSON") from exc
    if _depth(config) > MAX_JSON_DEPTH:
        raise CheckpointError(f"{name}: its cainnflow metadata is nested deeper than {MAX_JSON_DEPTH} levels")
    if not isinstance(config, dict) or config.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{name} is not a cainnflow checkpoint (unknown format)")
    version = config.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(
            f"{name} has checkpoint format version {version}; this cainnflow reads up to "
            f"{FORMAT_VERSION}. Upgrade cainnflow to load it."
        )
    try:
        tensors = load_safetensors_bytes(data)
    except (SafetensorError, ValueError, RuntimeError, TypeError) as exc:
        raise CheckpointError(f"{name} is truncated or corrupt: {_first_line(exc)}") from exc
    if version < 2:
        tensors = _upgrade_v1_tensors(tensors)
    return tensors, config


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


def _depth(value: Any, level: int = 0) -> int:
    """Nesting depth of a parsed JSON value (iterative limit: stops counting past the cap)."""
    if level > MAX_JSON_DEPTH:
        return level
    if isinstance(value, dict):
        return max((_depth(v, level + 1) for v in value.values()), default=level + 1)
    if isinstance(value, list):
        return max((_depth(v, level + 1) for v in value), default=level + 1)
    return level


_V1_FLOW_KEY = re.compile(r"^flows\.(\d+)\.module_list\.(\d+)\.(.+)$")
_V1_STANDARDIZER_KEY = re.compile(r"^standardizers\.(\d+)\.(mean|std)$")


def _upgrade_v1_tensors(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Format 1 kept the standardisers beside the flows; format 2 puts them at each flow's head."""
    upgraded: dict[str, torch.Tensor] = {}
    for key, value in tensors.items():
        if match := _V1_FLOW_KEY.match(key):
            scale, index, rest = match.groups()
            upgraded[f"flows.{scale}.module_list.{int(index) + 1}.{rest}"] = value
        elif match := _V1_STANDARDIZER_KEY.match(key):
            scale, name = match.groups()
            upgraded[f"flows.{scale}.module_list.0.{name}"] = value
        else:
            upgraded[key] = value
    return upgraded


# ------------------------------------------------------------------------------------ detectors


@dataclass(frozen=True)
class DetectorParts:
    """What a checkpoint holds, validated, ready to make a :class:`cainnflow.detector.Detector`."""

    model: CAINNFlow
    stats: ScoreStats | None
    threshold: float | None
    history: TrainingHistory | None
    record: TrainingRecord


def detector_document(parts: DetectorParts) -> dict[str, Any]:
    """The JSON document stored in a detector's checkpoint."""
    source: WeightsSource = parts.model.backbone.weights
    return {
        "library_version": __version__,
        "model": parts.model.config.to_dict(),
        "backbone_weights": source.to_dict(),
        "backbone_weights_source": source.label,
        "backbone_embedded": not source.rebuildable,
        "stats": parts.stats.to_dict() if parts.stats else None,
        "threshold": parts.threshold,
        "history": parts.history.to_dict() if parts.history else None,
        RECORD_KEY: parts.record.to_dict(),
    }


def save_detector(parts: DetectorParts, path: str | Path) -> Path:
    """Writes a detector's checkpoint (atomically): flows, and the backbone unless rebuildable by name."""
    document = detector_document(parts)
    tensors = {f"flows.{k}": v for k, v in parts.model.flows.state_dict().items()}
    if document["backbone_embedded"]:
        tensors.update({f"backbone.{k}": v for k, v in parts.model.backbone.state_dict().items()})
    return write_checkpoint(path, tensors, document)


def detector_to_bytes(parts: DetectorParts) -> bytes:
    """A detector's checkpoint as bytes (for downloads)."""
    with tempfile.TemporaryDirectory() as tmp:
        return save_detector(parts, Path(tmp) / "model.safetensors").read_bytes()


def _finite_or_none(value: Any, what: str) -> float | None:
    return None if value is None else finite_number(value, f"checkpoint field {what}", CheckpointError)


def _parse_stats(value: Any) -> ScoreStats | None:
    if value is None:
        return None
    try:
        return ScoreStats.from_dict(value)
    except ValueError as exc:
        raise CheckpointError(f"checkpoint field stats {exc}") from exc


def _parse_history(value: Any) -> TrainingHistory | None:
    if value is None:
        return None
    try:
        history = TrainingHistory.from_dict(value)
        for record in history.epochs:
            _finite_or_none(record.train_loss, "history.train_loss")
            _finite_or_none(record.val_loss, "history.val_loss")
    except CheckpointError:
        raise
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        raise CheckpointError(f"checkpoint field history is malformed: {_first_line(exc)}") from exc
    return history


def _parse_record(doc: dict[str, Any]) -> TrainingRecord:
    """The training record; a format-2 file's free ``info`` dict is upgraded to one."""
    try:
        if doc["format_version"] < 3:
            return TrainingRecord.from_info(doc.get("info") or {}, doc.get("history"))
        raw = doc.get(RECORD_KEY)
        return TrainingRecord() if raw is None else TrainingRecord.from_dict(raw)
    except ValueError as exc:
        raise CheckpointError(f"checkpoint field {_first_line(exc)}") from exc


def _parse_weights_source(doc: dict[str, Any]) -> WeightsSource | None:
    recorded = doc.get("backbone_weights")
    if recorded is None:
        return None
    if not isinstance(recorded, dict):
        raise CheckpointError("checkpoint field backbone_weights must be an object")
    try:
        return WeightsSource.from_dict(recorded)
    except ValueError as exc:
        raise CheckpointError(f"checkpoint field backbone_weights is invalid: {_first_line(exc)}") from exc


def load_detector_parts(
    source: str | Path | bytes | BinaryIO,
    *,
    device: str | torch.device = "auto",
    weights: str | Path | None = None,
) -> DetectorParts:
    """Reads and validates a detector checkpoint.

    Args:
        source: path, bytes or binary file object.
        device: where to put the model.
        weights: backbone weights to use instead of the recorded source (a local file for a
            hub backbone on an offline machine); ignored when the backbone is embedded.

    Raises:
        CheckpointError: any field is missing, of the wrong type, out of bounds, or the
            tensors do not fit the configuration (one line).
        WeightsUnavailableError: a backbone that is not embedded cannot be had here.
    """
    tensors, doc = read_checkpoint(source)
    model_doc = doc.get("model")
    if not isinstance(model_doc, dict):
        raise CheckpointError("checkpoint has no model configuration")
    try:
        config = CAINNFlowConfig.from_dict(model_doc)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"checkpoint has an invalid model configuration: {_first_line(exc)}") from exc
    if config.backbone not in BACKBONES:
        raise CheckpointError(f"checkpoint uses unknown backbone {config.backbone!r}")
    stats = _parse_stats(doc.get("stats"))
    threshold = _finite_or_none(doc.get("threshold"), "threshold")
    history = _parse_history(doc.get("history"))
    record = _parse_record(doc)
    recorded = _parse_weights_source(doc)
    embedded = doc.get("backbone_embedded")
    if not isinstance(embedded, bool):
        raise CheckpointError("checkpoint field backbone_embedded must be true or false")
    if embedded:
        if recorded is None:  # format 1 kept only a label
            label = doc.get("backbone_weights_source")
            origin = WeightsOrigin.RANDOM if "random" in str(label) else WeightsOrigin.FILE
            recorded = WeightsSource(origin, str(label)[:200])
        state = {k[len("backbone.") :]: v for k, v in tensors.items() if k.startswith("backbone.")}
        try:
            backbone = backbone_from_state(
                config.backbone, state, out_indices=config.out_indices, recorded=recorded
            )
        except WeightsUnavailableError as exc:
            raise CheckpointError(f"checkpoint's {exc}") from exc
    else:
        backbone = create_backbone(config.backbone, weights=weights or "auto", out_indices=config.out_indices)
    try:
        model = CAINNFlow(backbone, config)
    except ValueError as exc:
        raise CheckpointError(
            f"checkpoint configuration does not fit its backbone: {_first_line(exc)}"
        ) from exc
    state = {k[len("flows.") :]: v for k, v in tensors.items() if k.startswith("flows.")}
    try:
        model.flows.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(
            f"checkpoint tensors do not match its configuration: {_first_line(exc)}"
        ) from exc
    if not all(torch.isfinite(t).all() for t in state.values() if t.is_floating_point()):
        raise CheckpointError("checkpoint holds non-finite flow weights")
    model.to(resolve_device(device)).eval()
    return DetectorParts(model, stats, threshold, history, record)
