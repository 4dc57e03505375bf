"""Run an exported detector with ONNX Runtime or OpenVINO — no PyTorch on this path.

An export directory (written by :func:`cainnflow.export.export_detector` or
``python -m cainnflow export``) holds the whole scoring graph and ``export.json``::

    exported = load_export("deploy/bottle")             # validates everything first
    prediction = exported.predict(["part.png"])         # maps (N, S, S), scores (N,)
    exported.threshold = 0.8                            # the threshold is yours to change

It scores through the same code as the PyTorch detector: preprocessing is
:func:`cainnflow.data.preprocess_image` (whose tensor wrapper the detector uses), predictions
are :class:`cainnflow.scorer.Prediction`, the test loop is :func:`cainnflow.evaluation.evaluate`
and the statistics are checked by :meth:`cainnflow.stats.ScoreStats.from_dict`; only the engine
that turns a batch into maps and scores differs (:class:`cainnflow.scorer.Scorer`). A malformed or
hostile directory is refused with one :class:`ExportError` line
(:func:`cainnflow.export_format.read_export_info`). The engines are optional: ``pip install 'cainnflow[deploy]'``.
"""

from __future__ import annotations

import collections
import copy
import math
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from .data import CategoryData, ImageSource, preprocess_images
from .errors import CainnflowError, DataError
from .export_format import (
    EXPORT_FORMAT_VERSION,
    EXPORT_JSON,
    FORMATS,
    INPUT_NAME,
    OUTPUT_NAMES,
    ExportError,
    ExportInfo,
    read_export_info,
)
from .scorer import Prediction, predict_batches
from .stats import ScoreStats

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
    "load_export",
    "read_export_info",
]


class EngineUnavailableError(CainnflowError):
    """The inference engine an export needs (onnxruntime, openvino) is not installed."""


# --------------------------------------------------------------------------- engines


def require_engine(module: str, what: str = "running this export", extra: str = "deploy"):
    """Imports an optional engine package, or raises :class:`EngineUnavailableError` naming the extra."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise EngineUnavailableError(
            f"{what} needs the '{module}' package: pip install 'cainnflow[{extra}]' (or pip install {module})"
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
        ort = require_engine("onnxruntime")
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
    """OpenVINO with one compiled model per batch size, each with the batch axis fixed.

    The graph's batch axis is dynamic; compiled with a fixed batch, OpenVINO fuses each chain
    of element-wise ops (the coupling's clamp, ``exp``, product and sum; CBAM's gates) into one
    JIT kernel, which it does not do for a dynamic shape: bottle's INT8 model, batch 1, 2
    threads, 6.0 → 4.8 ms. Compiling takes 0.2–0.5 s, so the last :data:`STATIC_BATCHES` batch
    sizes stay compiled (batch 1 from the start; others on first use). A lock makes one engine
    safe to share between threads (:meth:`ExportedDetector.copy`): OpenVINO's infer requests
    are not.
    """

    STATIC_BATCHES = 4

    def __init__(self, info: ExportInfo, threads: int | None) -> None:
        self._ov = require_engine("openvino")
        self._config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}
        if threads:
            self._config["INFERENCE_NUM_THREADS"] = threads
        self._core = self._ov.Core()
        xml, weights = info.files
        self._name = xml.name
        try:
            self._model = self._core.read_model(str(xml), str(weights))
        except Exception as exc:  # openvino raises RuntimeError subclasses of its own
            raise ExportError(f"OpenVINO cannot load {xml.name}: {str(exc).splitlines()[0]}") from exc
        names = [o.get_any_name() for o in self._model.outputs]
        if len(self._model.inputs) != 1 or names != list(OUTPUT_NAMES):
            raise ExportError(f"{xml.name} does not have the input/outputs of a cainnflow export")
        shape = self._model.inputs[0].get_partial_shape()
        _check_input_shape([d.get_length() if d.is_static else None for d in shape], info)
        self._size = info.image_size
        self._compiled: collections.OrderedDict[int, Any] = collections.OrderedDict()
        self._lock = threading.Lock()
        with self._lock:
            self._request(1)  # compiles now: a graph OpenVINO cannot compile fails at load

    def _request(self, batch: int):
        """The infer request compiled for ``batch`` images (the caller holds the lock)."""
        if batch in self._compiled:
            self._compiled.move_to_end(batch)
            return self._compiled[batch]
        model = self._model.clone()
        model.reshape({model.inputs[0]: [batch, 3, self._size, self._size]})
        try:
            compiled = self._core.compile_model(model, "CPU", self._config)
        except Exception as exc:
            raise ExportError(f"OpenVINO cannot compile {self._name}: {str(exc).splitlines()[0]}") from exc
        self._compiled[batch] = request = compiled.create_infer_request()
        while len(self._compiled) > self.STATIC_BATCHES:
            self._compiled.popitem(last=False)
        return request

    def run(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with self._lock:
            request = self._request(images.shape[0])
            request.infer({0: images})
            return (
                request.get_output_tensor(0).data.copy(),
                request.get_output_tensor(1).data.copy(),
            )


_ENGINES: dict[str, Callable[[ExportInfo, int | None], Any]] = {
    "onnx": _OnnxRuntimeEngine,
    "openvino": _OpenVinoEngine,
}


# --------------------------------------------------------------------------- detector


class ExportedDetector:
    """An exported detector on ONNX Runtime or OpenVINO: a :class:`cainnflow.scorer.Scorer`.

    Attributes:
        info: the validated ``export.json``.
        threshold: decision threshold on image scores (the exported default; change freely).
        config: the model configuration the export records (:class:`cainnflow.config.CAINNFlowConfig`,
            as the detector's); its ``image_size`` is the training size, :attr:`image_size` the
            graph's input side.
    """

    is_trained = True  # an export is always of a calibrated model
    history = None  # exports keep no training history

    def __init__(self, info: ExportInfo, *, threads: int | None = None) -> None:
        self.info = info
        self.threshold: float | None = info.threshold
        self.config = info.config
        self._engine = _ENGINES[info.format](info, threads)

    def copy(self) -> ExportedDetector:
        """Another detector on the same engine session (thread-safe to share) with its own threshold."""
        return copy.copy(self)

    @property
    def image_size(self) -> int:
        return self.info.image_size

    @property
    def stats(self) -> ScoreStats:
        return self.info.stats

    @property
    def engine(self) -> str:
        return "OpenVINO" if self.info.format == "openvino" else "ONNX Runtime"

    @property
    def device(self) -> str:
        return f"cpu ({self.engine})"

    def preprocess(self, images: Sequence[Image.Image | ImageSource]) -> np.ndarray:
        """PIL images, paths or bytes → a normalised batch float32 (N, 3, S, S), as the detector's."""
        return preprocess_images(images, self.image_size, self.info.mean, self.info.std)

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
        batch_size: int = 8,
        *,
        threshold: float | None = None,
    ) -> Prediction:
        """Scores images given as PIL images, paths or bytes.

        Args:
            images: the images.
            batch_size: images per engine call.
            threshold: overrides :attr:`threshold` for this call.
        """
        limit = self.threshold if threshold is None else threshold
        return predict_batches(
            images, self.preprocess, self.score_batch, batch_size=batch_size, threshold=limit
        )

    def evaluate(
        self, data: CategoryData, *, batch_size: int = 8, callback: Callable[[int, int], None] | None = None
    ) -> EvaluationResult:
        """Scores the test split through :func:`cainnflow.evaluation.evaluate` (the detector's loop).

        Raises:
            DataError: the category has no test images, or one cannot be read.
        """
        from .evaluation import evaluate, read_test_batches

        batches = read_test_batches(data, self.preprocess, self.image_size, batch_size)
        n_batches = math.ceil(len(data.test) / batch_size)
        return evaluate(
            data, self.score_batch, batches, n_batches=n_batches, threshold=self.threshold, callback=callback
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
