"""What an export directory holds (``export.json`` and its graph files) and how it is checked.

Written by :mod:`cainnflow.export` (PyTorch), read by :mod:`cainnflow.runtime` (no PyTorch):
both take the format's names and limits from here. :func:`read_export_info` refuses a
malformed or hostile directory (missing or oversized files, bad JSON, non-finite or absurd
numbers, wrong types, files reached through links that leave the directory, a changed graph
or edited settings) with one :class:`ExportError` line.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import CAINNFlowConfig
from .errors import CheckpointError
from .stats import ScoreStats
from .validate import MAX_ABS_VALUE, finite_number, typed

__all__ = [
    "EXPORT_FORMAT_VERSION",
    "EXPORT_JSON",
    "FORMATS",
    "GRAPH_FILES",
    "INPUT_NAME",
    "MAX_IMAGE_SIZE",
    "MAX_TEXT",
    "OUTPUT_NAMES",
    "PRECISIONS",
    "SETTINGS_HASH",
    "ExportError",
    "ExportInfo",
    "read_export_info",
    "settings_digest",
]

EXPORT_FORMAT_VERSION = 1
EXPORT_JSON = "export.json"
FORMATS: tuple[str, ...] = ("onnx", "openvino")
GRAPH_FILES: dict[str, tuple[str, ...]] = {"onnx": ("model.onnx",), "openvino": ("model.xml", "model.bin")}
INPUT_NAME = "image"
OUTPUT_NAMES: tuple[str, str] = ("anomaly_map", "score")
PRECISIONS: tuple[str, ...] = ("fp32", "int8")
"""Graph precisions: FP32, or INT8 backbone and flows with an FP32 map (:mod:`cainnflow.quantize`)."""
MAX_CALIBRATION_IMAGES = 1_000_000
MAX_IMAGE_SIZE = 4096
MAX_JSON_BYTES = 1 << 20
MAX_GRAPH_BYTES = 4 << 30
MAX_TEXT = 200
_HASH_CHUNK = 1 << 20
_SHA256 = re.compile(r"[0-9a-f]{64}")


class ExportError(CheckpointError):
    """An export directory is missing, malformed, foreign or tampered with."""


# --------------------------------------------------------------------------- validation


def _field(doc: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str = "export.json") -> Any:
    if key not in doc:
        raise ExportError(f"{where} has no {key!r}")
    return typed(doc[key], kind, f"{where}: {key!r}", ExportError)


def _number(doc: dict[str, Any], key: str, where: str = "export.json", *, positive: bool = False) -> float:
    value = _field(doc, key, (int, float), where)
    value = finite_number(value, f"{where}: {key!r}", ExportError, limit=MAX_ABS_VALUE)
    if positive and value <= 0:
        raise ExportError(f"{where}: {key!r} must be positive, got {value!r}")
    return value


def _int_in(doc: dict[str, Any], key: str, low: int, high: int, where: str = "export.json") -> int:
    value = _field(doc, key, int, where)
    if not low <= value <= high:
        raise ExportError(f"{where}: {key!r} must be in [{low}, {high}], got {value}")
    return value


def _text(doc: dict[str, Any], key: str, where: str = "export.json") -> str:
    value = _field(doc, key, str, where)
    if len(value) > MAX_TEXT:
        raise ExportError(f"{where}: {key!r} is too long ({len(value)} characters)")
    return value


def _triple(doc: dict[str, Any], key: str, *, positive: bool) -> tuple[float, float, float]:
    values = _field(doc, key, list, "export.json input")
    if len(values) != 3:
        raise ExportError(f"export.json input: {key!r} must have 3 values, got {len(values)}")
    row = {str(i): v for i, v in enumerate(values)}
    return tuple(_number(row, str(i), f"export.json input {key}", positive=positive) for i in range(3))  # type: ignore[return-value]


def _inside(root: Path, name: str) -> Path:
    """``root / name`` for a plain file name, refusing links that lead out of ``root``."""
    path = root / name
    resolved = path.resolve()
    if resolved.parent != root.resolve():
        raise ExportError(f"{name} points outside the export directory")
    if not resolved.is_file():
        raise ExportError(f"{name} is missing from the export directory")
    return resolved


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _reject_constant(token: str) -> float:
    raise ExportError(f"export.json holds the non-JSON number {token}")


@dataclass(frozen=True)
class ExportInfo:
    """The validated contents of ``export.json``.

    Attributes:
        format: ``"onnx"`` or ``"openvino"``.
        image_size: input side ``S`` of the graph.
        calibrated_image_size: side the score statistics and threshold were computed at.
        mean, std: RGB normalisation of the input.
        threshold: the exported default decision threshold (an image is anomalous when its
            score reaches it).
        pixel_threshold: the exported pixel threshold (a pixel is anomalous when its map value
            reaches it); exports written before it was recorded give ``stats.pixel_max``.
        stats: score statistics of validation normals (``n_images`` 0 where the export does
            not record it).
        config: the model configuration, checked as a checkpoint's is
            (:meth:`cainnflow.config.CAINNFlowConfig.from_dict`; its ``image_size`` is the
            training size, ``calibrated_image_size``).
        backbone: backbone name and weights provenance.
        library_version: cainnflow version that wrote the export.
        category: what the model was trained on (may be empty).
        files: the graph files, each with its byte size and SHA-256.
        precision: ``"fp32"`` or ``"int8"``; exports written before it was checked give ``"fp32"``.
        calibration_images: good validation images an INT8 graph was calibrated on (0 for FP32).
    """

    format: str
    image_size: int
    calibrated_image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    threshold: float
    pixel_threshold: float
    stats: ScoreStats
    config: CAINNFlowConfig
    backbone: dict[str, str]
    library_version: str
    category: str
    files: tuple[Path, ...]
    precision: str = "fp32"
    calibration_images: int = 0

    @property
    def graph(self) -> Path:
        return self.files[0]


SETTINGS_HASH = "settings_sha256"
"""``export.json`` key: SHA-256 of the fields that change scores (not the threshold, which is yours)."""


def settings_digest(doc: dict[str, Any]) -> str:
    """SHA-256 of an export document's score-changing settings: input size and normalisation,
    calibration size, score statistics and model configuration."""
    spec = doc.get("input") if isinstance(doc.get("input"), dict) else {}
    settings = {
        "image_size": doc.get("image_size"),
        "calibrated_image_size": doc.get("calibrated_image_size"),
        "mean": spec.get("mean"),
        "std": spec.get("std"),
        "stats": doc.get("stats"),
        "model": doc.get("model"),
    }
    if doc.get("precision", "fp32") != "fp32":  # FP32 exports hash as they did before precision was checked
        settings["precision"] = doc.get("precision")
        settings["calibration_images"] = doc.get("calibration_images")
    return hashlib.sha256(json.dumps(settings, sort_keys=True, allow_nan=False).encode()).hexdigest()


def read_export_info(directory: str | Path) -> ExportInfo:
    """Reads and validates an export directory's ``export.json`` and graph files.

    Raises:
        ExportError: anything missing, malformed, out of bounds or not matching its hash.
    """
    root = Path(directory)
    if not root.is_dir():
        raise ExportError(f"export directory {root} does not exist or is not a folder")
    json_path = _inside(root, EXPORT_JSON)
    if json_path.stat().st_size > MAX_JSON_BYTES:
        raise ExportError(f"{EXPORT_JSON} is larger than {MAX_JSON_BYTES} bytes")
    try:
        doc = json.loads(json_path.read_text(encoding="utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ExportError(f"{EXPORT_JSON} is not valid JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise ExportError(f"{EXPORT_JSON} must hold a JSON object")
    version = _field(doc, "format_version", int)
    if version != EXPORT_FORMAT_VERSION:
        raise ExportError(
            f"unsupported export format version {version} (this library reads {EXPORT_FORMAT_VERSION})"
        )
    fmt = _text(doc, "format")
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r}; expected one of {', '.join(FORMATS)}")
    image_size = _int_in(doc, "image_size", 32, MAX_IMAGE_SIZE)
    calibrated = _int_in(doc, "calibrated_image_size", 32, MAX_IMAGE_SIZE)
    spec = _field(doc, "input", dict)
    if _text(spec, "name", "export.json input") != INPUT_NAME:
        raise ExportError(f"export.json input must be named {INPUT_NAME!r}")
    mean = _triple(spec, "mean", positive=False)
    std = _triple(spec, "std", positive=True)
    threshold = _number(doc, "threshold")
    try:
        stats = ScoreStats.from_dict(_field(doc, "stats", dict), n_images=0)
    except ValueError as exc:
        raise ExportError(f"export.json stats {exc}") from exc
    # Both optional: exports written before they were recorded still load.
    pixel_threshold = _number(doc, "pixel_threshold") if "pixel_threshold" in doc else stats.pixel_max
    if "decision" in doc:
        decision = _field(doc, "decision", dict)
        for key in decision:
            _text(decision, key, "export.json decision")
    precision = _text(doc, "precision") if "precision" in doc else "fp32"
    if precision not in PRECISIONS:
        raise ExportError(f"unknown precision {precision!r}; expected one of {', '.join(PRECISIONS)}")
    calibration_images = (
        _int_in(doc, "calibration_images", 0, MAX_CALIBRATION_IMAGES) if "calibration_images" in doc else 0
    )
    if precision == "int8" and calibration_images < 1:
        raise ExportError("export.json: an int8 export must record its calibration images (at least 1)")
    if "quantization" in doc and len(json.dumps(_field(doc, "quantization", dict))) > MAX_TEXT * 20:
        raise ExportError("export.json quantization record is too large")
    model = _field(doc, "model", dict)
    if len(json.dumps(model)) > MAX_TEXT * 20:
        raise ExportError("export.json model configuration is too large")
    try:
        config = CAINNFlowConfig.from_dict(model)
    except (TypeError, ValueError) as exc:
        raise ExportError(f"export.json model configuration is invalid: {str(exc)[:200]}") from exc
    backbone_doc = _field(doc, "backbone", dict)
    backbone = {key: _text(backbone_doc, key, "export.json backbone") for key in ("name", "weights_source")}
    if SETTINGS_HASH in doc and _text(doc, SETTINGS_HASH) != settings_digest(doc):
        raise ExportError(
            f"{EXPORT_JSON}: image size, normalisation, statistics or model settings were changed "
            "(they must match the graph; only the threshold may be edited)"
        )
    files_doc = _field(doc, "files", list)
    expected = GRAPH_FILES[fmt]
    if len(files_doc) != len(expected):
        raise ExportError(f"export.json must list the files {', '.join(expected)}")
    files: list[Path] = []
    for record, name in zip(files_doc, expected, strict=True):
        if not isinstance(record, dict):
            raise ExportError("export.json files entries must be objects")
        if _text(record, "name", "export.json files") != name:
            raise ExportError(f"export.json files must be {', '.join(expected)} in that order")
        size = _int_in(record, "bytes", 1, MAX_GRAPH_BYTES, "export.json files")
        digest = _text(record, "sha256", "export.json files")
        if not _SHA256.fullmatch(digest):
            raise ExportError(f"export.json files: {name} has a malformed sha256")
        path = _inside(root, name)
        if path.stat().st_size != size:
            raise ExportError(f"{name} has {path.stat().st_size} bytes, export.json says {size}")
        if _sha256(path) != digest:
            raise ExportError(f"{name} does not match its sha256 in export.json (changed or corrupt)")
        files.append(path)
    return ExportInfo(
        format=fmt,
        image_size=image_size,
        calibrated_image_size=calibrated,
        mean=mean,
        std=std,
        threshold=threshold,
        pixel_threshold=pixel_threshold,
        stats=stats,
        config=config,
        backbone=backbone,
        library_version=_text(doc, "library_version"),
        category=_text(doc, "category") if "category" in doc else "",
        files=tuple(files),
        precision=precision,
        calibration_images=calibration_images,
    )
