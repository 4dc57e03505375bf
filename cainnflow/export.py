"""Export a trained detector's whole scoring graph for deployment without PyTorch.

The graph is backbone → standardisation → flows → anomaly map → image score, traced from the
eager float32 modules (BatchNorm folded into the convs) and written as ONNX (``model.onnx``)
or OpenVINO IR (``model.xml`` + ``model.bin``), with a dynamic batch axis::

    detector = Detector.load("runs/bottle.safetensors")
    export_detector(detector, "deploy/bottle", format="onnx")
    ExportedDetector = cainnflow.runtime.load_export("deploy/bottle")   # no torch needed there

Graph contract (also written to ``export.json``):

* input ``image``: float32 (N, 3, S, S), RGB resized to S × S (PIL bilinear, antialiased),
  scaled to [0, 1] and normalised with the backbone's ``mean`` / ``std``;
* outputs ``anomaly_map``: float32 (N, S, S) and ``score``: float32 (N,).

The decision thresholds stay outside the graph (``threshold`` and ``pixel_threshold`` in
``export.json``, whose ``decision`` field states the rules) so they can be changed. A
``README.md`` beside them gives the rules, the preprocessing and scripts that run the graph
with only numpy, pillow and the engine (:mod:`cainnflow.export_readme`).
``onnx`` (and ``openvino`` for that format) are optional: ``pip install cainnflow[deploy]``.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from . import __version__
from .export_format import (
    EXPORT_FORMAT_VERSION,
    EXPORT_JSON,
    FORMATS,
    GRAPH_FILES,
    INPUT_NAME,
    MAX_IMAGE_SIZE,
    OUTPUT_NAMES,
    SETTINGS_HASH,
    ExportError,
    settings_digest,
)
from .export_graph import ExportFlows, FusedMapScorer, optimize_onnx_file, static_same_padding
from .export_readme import README_NAME, decision_document, readme_text
from .quantize import PRECISIONS, AccuracyReport, QuantizeOptions, quantize_graph
from .runtime import require_engine
from .speedups import fuse_conv_batchnorm, quiet_tracing

__all__ = ["ScoringGraph", "export_detector", "export_document", "export_zip_bytes"]

logger = logging.getLogger(__name__)

ONNX_OPSET = 17
_TRACE_BATCH = 2  # any batch > 1 so the exporter cannot mistake the batch axis for a constant
_HASH_CHUNK = 1 << 20


def _exposure_note(config) -> str:
    """What the graph does to the input's exposure itself (nothing for the caller to do)."""
    if config.photometric != "standardize" or config.photometric_target is None:
        return ""
    mean, std = config.photometric_target
    return (
        f" (the graph then brings each image's grey level to {mean:.3f} ± {std:.3f} itself: "
        "nothing to do here)"
    )


class ScoringGraph(nn.Module):
    """A detector's scoring as one module: normalised images → (anomaly maps, image scores).

    Args:
        model: the detector's :class:`cainnflow.model.CAINNFlow` (not modified).
        image_size: the input side ``S`` the graph is traced at.
        engine: the format it is written for (``"onnx"`` or ``"openvino"``): OpenVINO's graph
            computes the coupling blocks' ``atan`` from element-wise ops it fuses
            (:func:`cainnflow.export_graph.elementwise_atan`).
    """

    def __init__(self, model: nn.Module, image_size: int, *, engine: str = "onnx") -> None:
        super().__init__()
        self.model = model
        self.image_size = image_size
        backbone = model.backbone
        # The plain eager float32 modules (BatchNorm folded for CNNs): no TorchScript, no autocast.
        self.photometric = model.photometric
        self.features = fuse_conv_batchnorm(backbone.model)[0] if backbone.kind == "cnn" else backbone.model
        if backbone.kind == "cnn":  # TF-"same" padding as constants at this size (export_graph)
            static_same_padding(self.features, image_size)
        # The flows without their closing channel permutation, and the map's upsample + blur as
        # precomputed matrix products: the same maps and scores (export_graph).
        self.flows = ExportFlows(model.flows, elementwise_clamp=engine == "openvino")
        self.scorer = FusedMapScorer(model.config, backbone.feature_shapes(image_size), image_size)

    def forward(self, image: Tensor) -> tuple[Tensor, Tensor]:
        """Images (N, 3, S, S) → anomaly maps (N, S, S) and scores (N,)."""
        features = [f.float() for f in self.features(self.photometric(image))]
        return self.scorer(self.flows(features))


def _expm1_symbolic(g, x):
    # ONNX has no Expm1: exp(x) − 1 (absolute error ~1e-7 in float32, far below map contrasts).
    one = g.op("Constant", value_t=torch.tensor(1.0, dtype=torch.float32))
    return g.op("Sub", g.op("Exp", x), one)


def _register_symbolics() -> None:
    from torch.onnx import register_custom_op_symbolic

    register_custom_op_symbolic("aten::expm1", _expm1_symbolic, ONNX_OPSET)


def _export_onnx(graph: ScoringGraph, path: Path, image_size: int) -> None:
    """Traces ``graph`` to ONNX with a dynamic batch axis (TorchScript-based exporter).

    torch 2.14's dynamo exporter traces the graph but its optimiser fails on the split over
    the (dynamic) batch axis in CBAM, and OpenVINO cannot read its unoptimised graph; the
    TorchScript exporter gives a plain opset-17 graph both engines read.
    """
    require_engine("onnx", "ONNX export")
    _register_symbolics()
    probe = torch.zeros(_TRACE_BATCH, 3, image_size, image_size)
    batch = {0: "batch"}
    with torch.no_grad(), quiet_tracing():  # TracerWarnings and the exporter's deprecation notice
        torch.onnx.export(
            graph,
            (probe,),
            str(path),
            input_names=[INPUT_NAME],
            output_names=list(OUTPUT_NAMES),
            dynamic_axes={INPUT_NAME: batch, **{name: batch for name in OUTPUT_NAMES}},
            opset_version=ONNX_OPSET,
            dynamo=False,
        )
    optimize_onnx_file(path)


def _convert_openvino(onnx_path: Path, xml_path: Path) -> None:
    ov = require_engine("openvino", "OpenVINO export")
    model = ov.convert_model(str(onnx_path))
    ov.save_model(model, str(xml_path), compress_to_fp16=False)


def _file_record(path: Path) -> dict[str, Any]:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            digest.update(chunk)
    return {"name": path.name, "bytes": path.stat().st_size, "sha256": digest.hexdigest()}


def export_document(
    detector,
    format: str,
    image_size: int,
    files: list[dict[str, Any]],
    *,
    quantization: AccuracyReport | None = None,
) -> dict[str, Any]:
    """The ``export.json`` document (see :mod:`cainnflow.runtime` for its validation).

    ``quantization``: the accuracy report of an INT8 graph (``precision`` ``"int8"``, the
    calibration set's size and the control set's measures are recorded); None for FP32.
    """
    backbone = detector.backbone
    stats = detector.stats
    document = {
        "format_version": EXPORT_FORMAT_VERSION,
        "format": format,
        "library_version": __version__,
        "files": files,
        "image_size": image_size,
        "calibrated_image_size": detector.config.image_size,
        "input": {
            "name": INPUT_NAME,
            "shape": ["batch", 3, image_size, image_size],
            "dtype": "float32",
            "layout": "NCHW, RGB",
            "preprocessing": "resize to image_size x image_size (PIL bilinear, antialiased), "
            "scale to [0, 1], subtract mean, divide by std" + _exposure_note(detector.config),
            "mean": list(backbone.mean),
            "std": list(backbone.std),
        },
        "outputs": [
            {"name": OUTPUT_NAMES[0], "shape": ["batch", image_size, image_size], "dtype": "float32"},
            {"name": OUTPUT_NAMES[1], "shape": ["batch"], "dtype": "float32"},
        ],
        "threshold": detector.threshold,
        "pixel_threshold": stats.pixel_max,
        "decision": decision_document(),
        "stats": stats.to_dict(),
        "model": detector.config.to_dict(),
        "backbone": {"name": backbone.name, "weights_source": backbone.weights_source},
        "category": detector.record.category,
        "opset": ONNX_OPSET,
        "precision": "fp32" if quantization is None else "int8",
        "calibration_images": 0 if quantization is None else quantization.calibration_images,
    }
    if quantization is not None:
        document["quantization"] = quantization.to_dict()
    document[SETTINGS_HASH] = settings_digest(document)
    return document


def export_detector(
    detector,
    out_dir: str | Path,
    *,
    format: str = "onnx",
    image_size: int | None = None,
    precision: str = "fp32",
    quantization: QuantizeOptions | None = None,
) -> Path:
    """Writes the detector's scoring graph and ``export.json`` into ``out_dir``.

    Args:
        detector: a trained (calibrated) :class:`cainnflow.detector.Detector`.
        out_dir: folder to write (created; files of an earlier export are replaced).
        format: ``"onnx"`` or ``"openvino"``.
        image_size: input side of the graph; default the size the detector was trained at.
            Scores and the threshold were calibrated at the training size.
        precision: ``"fp32"`` or ``"int8"`` (backbone and flows quantised with accuracy
            control, :mod:`cainnflow.quantize`; needs ``quantization``).
        quantization: the training data and the allowed AUROC / AUPRO losses of an INT8 export.

    Returns:
        ``out_dir``.

    Raises:
        ExportError: untrained detector, unknown format, precision or unusable size.
        QuantizationRefused: the INT8 graph loses more than allowed (nothing is written).
        EngineUnavailableError: ``onnx`` / ``openvino`` (or, for INT8, ``nncf``) is not installed.
    """
    if format not in FORMATS:
        raise ExportError(f"unknown export format {format!r}; choose one of {', '.join(FORMATS)}")
    if precision not in PRECISIONS:
        raise ExportError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if precision == "int8" and quantization is None:
        raise ExportError("an INT8 export needs the training data to calibrate on (QuantizeOptions)")
    if detector.stats is None or detector.threshold is None:
        raise ExportError("the detector is not trained (no score statistics or threshold to export)")
    size = int(image_size or detector.config.image_size)
    if not 32 <= size <= MAX_IMAGE_SIZE:
        raise ExportError(f"image size must be in [32, {MAX_IMAGE_SIZE}], got {size}")
    if size != detector.config.image_size:
        logger.warning(
            "exporting at %d px; scores and the threshold were calibrated at %d px",
            size,
            detector.config.image_size,
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    graph = ScoringGraph(detector.model, size, engine=format).to("cpu").eval()
    device = detector.device
    report = None
    try:
        with tempfile.TemporaryDirectory(dir=out) as tmp:
            traced = Path(tmp) / "fp32" if precision == "int8" else Path(tmp)
            traced.mkdir(exist_ok=True)
            onnx_path = traced / GRAPH_FILES["onnx"][0]
            _export_onnx(graph, onnx_path, size)
            names = GRAPH_FILES[format]
            if precision == "int8":
                assert quantization is not None
                report = quantize_graph(detector, onnx_path, Path(tmp), format, size, quantization)
            elif format == "openvino":
                _convert_openvino(onnx_path, Path(tmp) / names[0])
            for name in (n for files in GRAPH_FILES.values() for n in files):
                (out / name).unlink(missing_ok=True)
            for name in names:
                (Path(tmp) / name).replace(out / name)
    finally:
        detector.model.to(device)
    files = [_file_record(out / name) for name in names]
    document = export_document(detector, format, size, files, quantization=report)
    (out / EXPORT_JSON).write_text(json.dumps(document, indent=2, allow_nan=False))
    (out / README_NAME).write_text(readme_text(document), encoding="utf-8")
    return out


def export_zip_bytes(detector, *, format: str = "onnx", image_size: int | None = None) -> bytes:
    """The export as a zip archive (for downloads): the graph files, ``export.json`` and ``README.md``."""
    with tempfile.TemporaryDirectory() as tmp:
        out = export_detector(detector, Path(tmp) / "export", format=format, image_size=image_size)
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for path in sorted(out.iterdir()):
                if path.is_file():
                    archive.write(path, path.name)
        return buffer.getvalue()
