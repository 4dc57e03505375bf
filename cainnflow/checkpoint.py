"""Checkpoints: tensors in safetensors, configuration as JSON — nothing is ever unpickled.

A checkpoint is one ``.safetensors`` file. Its tensors are the model's trainable state (and
the backbone's, when that cannot be rebuilt from a named source); its header metadata holds
one JSON document under the key ``"cainnflow"`` with the model configuration, score
statistics, threshold, training history and library version. Writes are atomic: the file is
written beside the target and renamed over it, so a crash mid-save leaves the previous
checkpoint intact.
"""

from __future__ import annotations

import json
import os
import struct
import tempfile
from pathlib import Path
from typing import Any, BinaryIO

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save as save_safetensors_bytes

from .errors import CheckpointError

__all__ = ["CHECKPOINT_FORMAT", "CHECKPOINT_SUFFIX", "FORMAT_VERSION", "read_checkpoint", "write_checkpoint"]

CHECKPOINT_FORMAT = "cainnflow-checkpoint"
FORMAT_VERSION = 1
CHECKPOINT_SUFFIX = ".safetensors"
METADATA_KEY = "cainnflow"
MAX_HEADER_BYTES = 100 * 1024 * 1024
_ZIP_MAGIC = b"PK\x03\x04"
_PICKLE_PROTO = 0x80
_PICKLE_PROTOCOLS = range(2, 6)


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
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
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
    if METADATA_KEY not in metadata:
        raise CheckpointError(
            f"{name} is a safetensors file but not a cainnflow checkpoint (no '{METADATA_KEY}' metadata)"
        )
    try:
        config = json.loads(metadata[METADATA_KEY])
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{name}: its cainnflow metadata is not valid JSON") from exc
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
    except (SafetensorError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{name} is truncated or corrupt: {exc}") from exc
    return tensors, config
