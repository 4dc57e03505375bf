"""Run an exported detector with ONNX Runtime or OpenVINO — no PyTorch on this path.

An export directory (written by :func:`cainnflow.export.export_detector` or
``python -m cainnflow export``) holds the whole scoring graph and ``export.json``::

    exported = load_export("deploy/bottle")             # validates everything first
    prediction = exported.predict(["part.png"])         # maps (N, S, S), scores (N,)
    exported.threshold = 0.8                            # the threshold is yours to change

Preprocessing (PIL + numpy) is the same as :func:`cainnflow.data.preprocess`; evaluation
computes the same metrics as :meth:`cainnflow.detector.Detector.evaluate`. A malformed or
hostile directory (missing or oversized files, bad JSON, non-finite or absurd numbers, wrong
types, files reached through links that leave the directory, a changed graph) is refused with
one :class:`ExportError` line. The engines are optional: ``pip install 'cainnflow[deploy]'``.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from .data import GOOD_LABEL, CategoryData, ImageSource, _to_rgb, read_image, read_mask
from .errors import CainnflowError, CheckpointError, DataError

if TYPE_CHECKING:
    from .evaluation import EvaluationResult

__all__ = [
    "EXPORT_FORMAT_VERSION",
    "EXPORT_JSON",
    "FORMATS",
    "EngineUnavailableError",
    "ExportError",
    "ExportInfo",
    "ExportedDetector",
    "RuntimePrediction",
    "load_export",
    "preprocess_image",
]

EXPORT_FORMAT_VERSION = 1
EXPORT_JSON = "export.json"
FORMATS: tuple[str, ...] = ("onnx", "openvino")
GRAPH_FILES: dict[str, tuple[str, ...]] = {"onnx": ("model.onnx",), "openvino": ("model.xml", "model.bin")}
INPUT_NAME = "image"
OUTPUT_NAMES: tuple[str, str] = ("anomaly_map", "score")
MAX_IMAGE_SIZE = 4096
MAX_JSON_BYTES = 1 << 20
MAX_GRAPH_BYTES = 4 << 30
MAX_ABS_VALUE = 1e12  # scores live in [0, 1) or are NLLs; anything beyond this is corrupt
MAX_TEXT = 200
_UINT8_MAX = 255
_HASH_CHUNK = 1 << 20
_SHA256 = re.compile(r"[0-9a-f]{64}")


class ExportError(CheckpointError):
    """An export directory is missing, malformed, foreign or tampered with."""


class EngineUnavailableError(CainnflowError):
    """The inference engine an export needs (onnxruntime, openvino) is not installed."""


# --------------------------------------------------------------------------- validation


def _field(doc: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str = "export.json") -> Any:
    if key not in doc:
        raise ExportError(f"{where} has no {key!r}")
    value = doc[key]
    # bool is an int in Python; a JSON true is never a number here.
    if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
        raise ExportError(f"{where}: {key!r} has the wrong type (bool)")
    if not isinstance(value, kind):
        raise ExportError(f"{where}: {key!r} has the wrong type ({type(value).__name__})")
    return value


def _number(doc: dict[str, Any], key: str, where: str = "export.json", *, positive: bool = False) -> float:
    value = float(_field(doc, key, (int, float), where))
    if not math.isfinite(value) or abs(value) > MAX_ABS_VALUE:
        raise ExportError(f"{where}: {key!r} must be a finite number of sane size, got {value!r}")
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
        threshold: the exported default decision threshold.
        stats: score statistics of validation normals (``image_mean``, ``pixel_p50``, ...).
        model: the model configuration (as in checkpoints).
        backbone: backbone name and weights provenance.
        library_version: cainnflow version that wrote the export.
        category: what the model was trained on (may be empty).
        files: the graph files, each with its byte size and SHA-256.
    """

    format: str
    image_size: int
    calibrated_image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    threshold: float
    stats: dict[str, float]
    model: dict[str, Any]
    backbone: dict[str, str]
    library_version: str
    category: str
    files: tuple[Path, ...]

    @property
    def graph(self) -> Path:
        return self.files[0]


_STATS_KEYS = ("image_mean", "image_std", "image_max", "pixel_p50", "pixel_p99", "pixel_max")
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
    stats_doc = _field(doc, "stats", dict)
    stats = {key: _number(stats_doc, key, "export.json stats") for key in _STATS_KEYS}
    model = _field(doc, "model", dict)
    if len(json.dumps(model)) > MAX_TEXT * 20:
        raise ExportError("export.json model configuration is too large")
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
        stats=stats,
        model=model,
        backbone=backbone,
        library_version=_text(doc, "library_version"),
        category=_text(doc, "category") if "category" in doc else "",
        files=tuple(files),
    )


# --------------------------------------------------------------------------- preprocessing


def preprocess_image(
    image: Image.Image, size: int, mean: Sequence[float], std: Sequence[float]
) -> np.ndarray:
    """Resize (PIL bilinear, antialiased), scale to [0, 1] and normalise: float32 (3, S, S).

    Identical to :func:`cainnflow.data.preprocess`, in numpy.
    """
    if image.mode != "RGB":
        image = _to_rgb(image)
    if image.size != (size, size):
        image = image.resize((size, size), Image.Resampling.BILINEAR)
    array = np.asarray(image, dtype=np.float32) / _UINT8_MAX
    chw = np.ascontiguousarray(array.transpose(2, 0, 1))
    mean_a = np.asarray(mean, dtype=np.float32).reshape(3, 1, 1)
    std_a = np.asarray(std, dtype=np.float32).reshape(3, 1, 1)
    return (chw - mean_a) / std_a


# --------------------------------------------------------------------------- engines


def _import_engine(module: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise EngineUnavailableError(
            f"running this export needs '{module}': pip install 'cainnflow[deploy]' (or pip install {module})"
        ) from exc


# ONNX protobuf field numbers (onnx.proto3) on the paths that can hold a tensor.
_MODEL_MESSAGES = {7: "graph", 20: "training", 25: "function"}
_MESSAGE_FIELDS: dict[str, dict[int, str]] = {
    "model": _MODEL_MESSAGES,
    "training": {1: "graph", 2: "graph"},
    "function": {7: "node", 11: "attribute"},
    "graph": {1: "node", 5: "tensor", 15: "sparse"},
    "node": {5: "attribute"},
    "attribute": {5: "tensor", 6: "graph", 10: "tensor", 11: "graph", 22: "sparse", 23: "sparse"},
    "sparse": {1: "tensor", 2: "tensor"},
}
_TENSOR_EXTERNAL_DATA = 13
_TENSOR_DATA_LOCATION = 14
_EXTERNAL = 1
_MAX_NESTING = 64
_VARINT, _FIXED64, _BYTES, _FIXED32 = 0, 1, 2, 5


def _varint(data: memoryview, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise ExportError("model.onnx is not a valid ONNX protobuf")
        byte = data[pos]
        value |= (byte & 0x7F) << shift
        pos, shift = pos + 1, shift + 7
        if not byte & 0x80:
            return value, pos


def _fields(data: memoryview):
    """(field number, wire type, value) of one protobuf message (values of type bytes as views)."""
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == _VARINT:
            value, pos = _varint(data, pos)
        elif wire == _BYTES:
            length, pos = _varint(data, pos)
            if pos + length > len(data):
                raise ExportError("model.onnx is not a valid ONNX protobuf")
            value, pos = data[pos : pos + length], pos + length
        elif wire in (_FIXED64, _FIXED32):
            pos, value = pos + (8 if wire == _FIXED64 else 4), None
        else:
            raise ExportError("model.onnx is not a valid ONNX protobuf")
        yield number, wire, value


def _uses_external_data(graph: bytes) -> bool:
    """Whether any tensor of an ONNX model (subgraphs, functions, attributes included) points to a file.

    Read from the protobuf wire format, so no ``onnx`` package is needed.
    """
    stack: list[tuple[str, memoryview, int]] = [("model", memoryview(graph), 0)]
    while stack:
        kind, message, depth = stack.pop()
        if depth > _MAX_NESTING:
            raise ExportError("model.onnx is nested too deeply")
        for number, wire, value in _fields(message):
            if kind == "tensor":
                if number == _TENSOR_EXTERNAL_DATA or (
                    number == _TENSOR_DATA_LOCATION and wire == _VARINT and value == _EXTERNAL
                ):
                    return True
                continue
            child = _MESSAGE_FIELDS.get(kind, {}).get(number)
            if child is not None and wire == _BYTES:
                stack.append((child, value, depth + 1))
    return False


def _check_input_shape(shape: Sequence[object], info: ExportInfo) -> None:
    """The graph's own input size must be the one ``export.json`` gives (it is not hashed)."""
    spatial = [d for d in list(shape)[2:4] if isinstance(d, int)]
    if len(list(shape)) != 4 or any(d != info.image_size for d in spatial):
        raise ExportError(
            f"export.json says image_size {info.image_size}, but {info.graph.name} takes input of shape "
            f"{list(shape)}; the export was changed"
        )


class _OnnxRuntimeEngine:
    def __init__(self, info: ExportInfo, threads: int | None) -> None:
        ort = _import_engine("onnxruntime")
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        graph = info.graph.read_bytes()
        if _uses_external_data(graph):  # ONNX Runtime would read such files from the working folder
            raise ExportError(
                f"{info.graph.name} refers to external data files; a cainnflow export holds all its weights"
            )
        try:
            self.session = ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ExportError(
                f"ONNX Runtime cannot load {info.graph.name}: {str(exc).splitlines()[0]}"
            ) from exc
        names = [o.name for o in self.session.get_outputs()]
        if [i.name for i in self.session.get_inputs()] != [INPUT_NAME] or names != list(OUTPUT_NAMES):
            raise ExportError(f"{info.graph.name} does not have the input/outputs of a cainnflow export")
        _check_input_shape(self.session.get_inputs()[0].shape, info)

    def run(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        maps, scores = self.session.run(list(OUTPUT_NAMES), {INPUT_NAME: images})
        return maps, scores


class _OpenVinoEngine:
    def __init__(self, info: ExportInfo, threads: int | None) -> None:
        ov = _import_engine("openvino")
        core = ov.Core()
        config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        xml, weights = info.files
        try:
            model = core.read_model(str(xml), str(weights))
            self.compiled = core.compile_model(model, "CPU", config)
        except Exception as exc:  # openvino raises RuntimeError subclasses of its own
            raise ExportError(f"OpenVINO cannot load {xml.name}: {str(exc).splitlines()[0]}") from exc
        names = [o.get_any_name() for o in self.compiled.outputs]
        if names != list(OUTPUT_NAMES):
            raise ExportError(f"{xml.name} does not have the outputs of a cainnflow export")
        shape = self.compiled.inputs[0].get_partial_shape()
        _check_input_shape([d.get_length() if d.is_static else None for d in shape], info)
        self.request = self.compiled.create_infer_request()

    def run(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        result = self.request.infer({INPUT_NAME: images})
        outputs = self.compiled.outputs
        return np.array(result[outputs[0]]), np.array(result[outputs[1]])


_ENGINES: dict[str, Callable[[ExportInfo, int | None], Any]] = {
    "onnx": _OnnxRuntimeEngine,
    "openvino": _OpenVinoEngine,
}


# --------------------------------------------------------------------------- detector


@dataclass(frozen=True)
class RuntimePrediction:
    """Scores of a batch of images (as :class:`cainnflow.detector.Prediction`).

    Attributes:
        maps: anomaly maps (N, S, S). scores: image scores (N,).
        is_anomalous: ``scores >= threshold`` (N,). threshold: the threshold used.
    """

    maps: np.ndarray
    scores: np.ndarray
    is_anomalous: np.ndarray
    threshold: float


class ExportedDetector:
    """An exported detector on ONNX Runtime or OpenVINO.

    Attributes:
        info: the validated ``export.json``.
        threshold: decision threshold on image scores (the exported default; change freely).
    """

    def __init__(self, info: ExportInfo, *, threads: int | None = None) -> None:
        self.info = info
        self.threshold = info.threshold
        self._engine = _ENGINES[info.format](info, threads)

    @property
    def image_size(self) -> int:
        return self.info.image_size

    @property
    def stats(self) -> dict[str, float]:
        return self.info.stats

    @property
    def engine(self) -> str:
        return "OpenVINO" if self.info.format == "openvino" else "ONNX Runtime"

    def preprocess(self, images: Sequence[Image.Image | ImageSource]) -> np.ndarray:
        """PIL images, paths or bytes → a normalised batch float32 (N, 3, S, S)."""
        arrays = [
            preprocess_image(
                item if isinstance(item, Image.Image) else read_image(item),
                self.image_size,
                self.info.mean,
                self.info.std,
            )
            for item in images
        ]
        if not arrays:
            raise DataError("no images given")
        return np.stack(arrays)

    def score_batch(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Normalised images (N, 3, S, S) → anomaly maps (N, S, S) and scores (N,), float32."""
        images = np.ascontiguousarray(images, dtype=np.float32)
        expected = (3, self.image_size, self.image_size)
        if images.ndim != 4 or images.shape[1:] != expected or images.shape[0] < 1:
            raise DataError(
                f"expected images of shape (N, {', '.join(map(str, expected))}), got {images.shape}"
            )
        maps, scores = self._engine.run(images)
        if not (np.all(np.isfinite(scores)) and np.all(np.isfinite(maps))):
            raise ExportError(
                f"{self.info.graph.name} gave non-finite scores or maps; the exported graph is broken"
            )
        return maps, scores

    def predict(
        self,
        images: Sequence[Image.Image | ImageSource],
        *,
        batch_size: int = 8,
        threshold: float | None = None,
    ) -> RuntimePrediction:
        """Scores images given as PIL images, paths or bytes.

        Args:
            images: the images.
            batch_size: images per engine call.
            threshold: overrides :attr:`threshold` for this call.
        """
        limit = self.threshold if threshold is None else float(threshold)
        maps, scores = [], []
        for start in range(0, len(images), batch_size):
            m, s = self.score_batch(self.preprocess(images[start : start + batch_size]))
            maps.append(m)
            scores.append(s)
        if not maps:
            raise DataError("no images given")
        score_arr = np.concatenate(scores)
        return RuntimePrediction(np.concatenate(maps), score_arr, score_arr >= limit, limit)

    def evaluate(
        self, data: CategoryData, *, batch_size: int = 8, callback: Callable[[int, int], None] | None = None
    ) -> EvaluationResult:
        """Scores the test split; the same metrics as :meth:`cainnflow.detector.Detector.evaluate`.

        Raises:
            DataError: the category has no test images, or one cannot be read.
        """
        from .evaluation import evaluation_result

        if not data.test:
            raise DataError(f"category {data.name!r} has no test images to evaluate on")
        size = self.image_size
        maps, scores, masks, has_mask = [], [], [], []
        elapsed = 0.0
        n_batches = math.ceil(len(data.test) / batch_size)
        for step, start in enumerate(range(0, len(data.test), batch_size), start=1):
            samples = data.test[start : start + batch_size]
            batch = self.preprocess([s.path for s in samples])
            t0 = time.perf_counter()
            m, s = self.score_batch(batch)
            elapsed += time.perf_counter() - t0
            maps.append(m.astype(np.float32))
            scores.append(s)
            for sample in samples:
                if sample.mask_path is not None:
                    masks.append(read_mask(sample.mask_path, size))
                    has_mask.append(True)
                else:
                    masks.append(np.zeros((size, size), dtype=bool))
                    has_mask.append(sample.label == GOOD_LABEL)
            if callback is not None:
                callback(step, n_batches)
        return evaluation_result(
            data,
            np.concatenate(maps),
            np.concatenate(scores),
            np.stack(masks),
            np.asarray(has_mask, dtype=bool),
            self.threshold,
            elapsed,
        )


def load_export(directory: str | Path, *, threads: int | None = None) -> ExportedDetector:
    """Validates an export directory and loads it on its engine.

    Args:
        directory: folder written by ``python -m cainnflow export``.
        threads: engine threads (default: the engine's choice).

    Raises:
        ExportError: the directory is not a valid, untampered cainnflow export.
        EngineUnavailableError: onnxruntime / openvino is not installed.
    """
    return ExportedDetector(read_export_info(directory), threads=threads)
