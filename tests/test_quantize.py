"""INT8 exports (issue #18) and the export graph work that every precision gets.

ONNX Runtime static quantisation runs wherever onnxruntime is installed (the CI install);
the OpenVINO / NNCF test is skipped when ``nncf`` is missing (``pip install 'cainnflow[int8]'``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from cainnflow.cli import main
from cainnflow.data import load_mvtec_category
from cainnflow.demo_data import make_demo_dataset
from cainnflow.detector import Detector
from cainnflow.errors import CainnflowError
from cainnflow.export_graph import (
    FusedMapScorer,
    elementwise_atan,
    fold_pads_into_convs,
    static_same_padding,
)
from cainnflow.model import CAINNFlowConfig
from cainnflow.runtime import EngineUnavailableError, ExportError, load_export
from cainnflow.scoring import score_latents

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from cainnflow import quantize
from cainnflow.export import export_detector
from cainnflow.quantize import AccuracyReport, QuantizationRefused, QuantizeOptions
from tests.export_support import perturbed_detector, real_backbone

SIZE = 64
CATEGORY = "carpet_weave"
N_TRAIN = 14  # the 0.15 validation split holds 2 of them: the calibration set


def _backbone():
    return real_backbone(SIZE)


def _detector() -> Detector:
    return perturbed_detector(SIZE, pooling="max")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    make_demo_dataset(
        root,
        categories=[CATEGORY],
        image_size=SIZE,
        n_train=N_TRAIN,
        n_test_good=1,
        n_test_per_defect=1,
        workers=1,
    )
    return load_mvtec_category(root, CATEGORY)


def _generous(data) -> QuantizeOptions:
    return QuantizeOptions(
        data=data, max_auroc_drop=1.0, max_image_auroc_drop=1.0, max_aupro_drop=1.0, n_synthetic=6, threads=2
    )


# --------------------------------------------------------------------------- graph work


@pytest.mark.parametrize(
    ("size", "sigma", "pooling", "combine", "sides", "weight"),
    [
        (256, 4.0, "coarse", "likelihood", (64, 32, 16, 8), 1.0),
        (256, 4.0, "max", "nll", (64, 32, 16, 8), 1.0),
        (256, 4.0, "max", "likelihood", (64, 32, 16, 8), 0.5),  # aligned parts: weighted map
        (256, 4.0, "coarse_top", "likelihood", (64, 32, 16, 8), 1.0),
        (64, 2.0, "coarse_top", "nll", (16, 8, 4), 0.5),
        (64, 4.0, "topk", "likelihood", (16, 8, 4, 2), 0.5),
        (64, 0.0, "max", "likelihood", (16, 8), None),
        (32, 8.0, "coarse", "likelihood", (8, 4), 1.0),  # blur radius over the map side: replicate border
    ],
)
def test_fused_map_is_the_librarys_map(size, sigma, pooling, combine, sides, weight):
    config = CAINNFlowConfig(sigma=sigma, pooling=pooling, combine=combine, coarsest_map_weight=weight)
    shapes = [(8 * (i + 1), s, s) for i, s in enumerate(sides)]
    z = [
        torch.randn(3, c, h, w, generator=torch.Generator().manual_seed(i))
        for i, (c, h, w) in enumerate(shapes)
    ]
    maps, scores = FusedMapScorer(config, shapes, size)(z)
    ref_maps, ref_scores = score_latents(z, size, sigma, combine, pooling, 1.0 if weight is None else weight)
    torch.testing.assert_close(maps, ref_maps, atol=2e-6, rtol=0)
    torch.testing.assert_close(scores, ref_scores, atol=2e-6, rtol=0)


def test_static_same_padding_keeps_the_features():
    backbone = _backbone()
    from cainnflow.speedups import fuse_conv_batchnorm

    model = fuse_conv_batchnorm(backbone.model)[0]
    images = torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = model(images)
        assert static_same_padding(model, SIZE) >= 4  # the stem and the stride-2 depthwise convs
        got = model(images)
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g, e, atol=1e-5, rtol=1e-5)


def test_exported_graph_has_no_pad_and_no_blur_convolution(tmp_path):
    import onnx

    out = export_detector(_detector(), tmp_path / "fp32")
    graph = onnx.load(str(out / "model.onnx")).graph
    ops = [node.op_type for node in graph.node]
    assert "Pad" not in ops and "Resize" not in ops and "Ceil" not in ops
    assert not any(node.op_type == "Conv" and "/scorer/" in node.name for node in graph.node)
    asymmetric = [
        list(a.ints)
        for node in graph.node
        if node.op_type == "Conv"
        for a in node.attribute
        if a.name == "pads"
    ]
    assert [0, 0, 1, 1] in asymmetric  # TF-"same" stride 2 on an even size pads bottom / right only


def test_elementwise_atan_is_atan_everywhere():
    x = torch.cat(
        [
            torch.linspace(-30.0, 30.0, 60001),
            torch.logspace(-30, 38, 2000),
            -torch.logspace(-30, 38, 2000),
            torch.tensor([0.0, -0.0, 1.0, -1.0, 3.4e38, -3.4e38]),
        ]
    )
    exact = torch.atan(x.double())
    got = elementwise_atan(x)
    assert torch.isfinite(got).all()
    assert float((got.double() - exact).abs().max()) < 1.2e-6  # π/2 − 1e-6 beyond |x| = 1e6
    small = x.abs() <= 1e6
    assert float((got.double() - exact)[small].abs().max()) < 4e-7
    assert float((torch.atan(x).double() - exact).abs().max()) > 5e-8  # torch's own rounding, for scale


def test_openvino_graph_has_no_atan_and_onnxruntime_keeps_it(tmp_path):
    import onnx

    detector = _detector()
    onnx_ops = {
        n.op_type for n in onnx.load(str(export_detector(detector, tmp_path / "o") / "model.onnx")).graph.node
    }
    assert "Atan" in onnx_ops  # ONNX Runtime's Atan is faster than the element-wise chain
    pytest.importorskip("openvino")
    import openvino as ov

    out = export_detector(detector, tmp_path / "v", format="openvino")
    ov_ops = {op.get_type_name() for op in ov.Core().read_model(str(out / "model.xml")).get_ops()}
    assert "Atan" not in ov_ops and "Sqrt" in ov_ops


def test_fold_pads_leaves_reflect_pads_alone():
    from onnx import TensorProto, helper

    pads = helper.make_tensor("pads", TensorProto.INT64, [8], [0, 0, 1, 1, 0, 0, 1, 1])
    weight = helper.make_tensor("w", TensorProto.FLOAT, [1, 1, 3, 3], [1.0] * 9)
    nodes = [
        helper.make_node("Pad", ["x", "pads"], ["p"], mode="reflect"),
        helper.make_node("Conv", ["p", "w"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [pads, weight],
    )
    model = helper.make_model(graph)
    assert fold_pads_into_convs(model) == 0
    assert [n.op_type for n in model.graph.node] == ["Pad", "Conv"]


# --------------------------------------------------------------------------- INT8


def test_onnxruntime_int8_export_records_precision_and_calibration(data, tmp_path):
    detector = _detector()
    out = export_detector(detector, tmp_path / "int8", precision="int8", quantization=_generous(data))
    doc = json.loads((out / "export.json").read_text())
    assert doc["precision"] == "int8"
    assert doc["calibration_images"] == 2  # the validation split of 14 good images, nothing else
    record = doc["quantization"]
    assert record["engine"] == "onnxruntime"
    assert record["accuracy_control"] == "2 good validation images + 6 synthetic anomalies"
    assert set(record["int8"]) == {"image_auroc", "pixel_auroc", "aupro"}
    exported = load_export(out, threads=2)
    assert exported.info.precision == "int8" and exported.info.calibration_images == 2
    images = np.random.default_rng(0).standard_normal((2, 3, SIZE, SIZE)).astype(np.float32)
    maps, scores = exported.score_batch(images)
    assert maps.shape == (2, SIZE, SIZE) and np.isfinite(maps).all() and np.isfinite(scores).all()
    import onnx

    graph = onnx.load(str(out / "model.onnx")).graph
    assert {"QuantizeLinear", "DequantizeLinear"} <= {node.op_type for node in graph.node}
    # The latents are not rounded to 8 bits: the coupling arithmetic (y = exp(s)·x + t, the flows'
    # top-level ops, kept FP32) takes no DequantizeLinear output, though its y1 also feeds a
    # quantised subnet (ONNX Runtime hands the rounded tensor to every consumer otherwise).
    made_by = {out: node for node in graph.node for out in node.output}
    coupling = [n for n in graph.node if n.name.startswith("/flows/") and n.name.count("/") == 2]
    assert coupling
    rounded = [
        (n.name, i)
        for n in coupling
        for i in n.input
        if i in made_by and made_by[i].op_type == "DequantizeLinear"
    ]
    assert not rounded, rounded


def test_a_lossy_int8_graph_is_refused_with_the_drop(data, tmp_path, monkeypatch):
    def lossy(fp32_path, out_path, control, options):
        return AccuracyReport(
            engine="onnxruntime",
            fp32={"image_auroc": 0.95, "pixel_auroc": 0.97, "aupro": 0.90},
            int8={"image_auroc": 0.95, "pixel_auroc": 0.96, "aupro": 0.85},
            margins=options.margins(),
            calibration_images=len(control.calibration),
            n_good=control.n_good,
            n_synthetic=control.n_synthetic,
        )

    monkeypatch.setattr(quantize, "_quantize_onnxruntime", lossy)
    options = QuantizeOptions(data=data, n_synthetic=6)
    with pytest.raises(QuantizationRefused) as caught:
        export_detector(_detector(), tmp_path / "refused", precision="int8", quantization=options)
    message = str(caught.value)
    assert "\n" not in message
    assert "0.0500 aupro" in message and "allowed 0.01" in message and "pixel auroc" in message
    assert not (tmp_path / "refused" / "export.json").exists()
    assert not (tmp_path / "refused" / "model.onnx").exists()


def test_int8_needs_data_and_sane_margins(data, tmp_path):
    with pytest.raises(ExportError, match="training data"):
        export_detector(_detector(), tmp_path / "x", precision="int8")
    with pytest.raises(ExportError, match="unknown precision"):
        export_detector(_detector(), tmp_path / "x", precision="int4")
    with pytest.raises(ExportError, match="max_aupro_drop"):
        QuantizeOptions(data=data, max_aupro_drop=float("nan"))


def test_missing_nncf_is_one_clear_line(monkeypatch):
    pytest.importorskip("openvino")
    monkeypatch.setitem(sys.modules, "nncf", None)  # import nncf raises ImportError
    with pytest.raises(EngineUnavailableError, match=r"needs the 'nncf' package.*cainnflow\[int8\]"):
        # the OpenVINO INT8 path asks for its engines before it reads anything else
        quantize._quantize_openvino(Path("unused.onnx"), Path("unused.xml"), None, None)


def test_openvino_int8_with_nncf_accuracy_control(data, tmp_path):
    pytest.importorskip("openvino")
    pytest.importorskip("nncf")
    out = export_detector(
        _detector(), tmp_path / "ov", format="openvino", precision="int8", quantization=_generous(data)
    )
    doc = json.loads((out / "export.json").read_text())
    assert doc["precision"] == "int8" and doc["quantization"]["engine"] == "openvino"
    exported = load_export(out, threads=2)
    maps, _ = exported.score_batch(np.zeros((1, 3, SIZE, SIZE), np.float32))
    assert np.isfinite(maps).all()
    assert "FakeQuantize" in (out / "model.xml").read_text()
    # The map and the score stay FP32 up to the outputs: OpenVINO names the last node of each
    # after its output, outside the scorer's scope, and NNCF must not quantise what enters it.
    import openvino as ov

    for result in ov.Core().read_model(out / "model.xml").get_results():
        last = result.input(0).get_source_output().get_node()
        feeding = [i.get_source_output().get_node().get_type_name() for i in last.inputs()]
        assert "FakeQuantize" not in feeding, (last.get_friendly_name(), feeding)


def test_nncf_accuracy_control_runs_on_the_step_that_lost_too_much(data, tmp_path, monkeypatch):
    """The ladder's first scope is made to fail; NNCF's accuracy control then runs on it."""
    pytest.importorskip("openvino")
    pytest.importorskip("nncf")
    real = quantize.measure
    calls = []

    def measure(run, control, batch_size=8):
        values = real(run, control, batch_size)
        calls.append(values)
        if len(calls) == 2:  # the whole backbone quantised: pretend it lost everything
            return {k: v - 0.9 for k, v in values.items()}
        return values

    monkeypatch.setattr(quantize, "measure", measure)
    monkeypatch.setattr(quantize, "AC_REACH", float("inf"))
    options = QuantizeOptions(
        data=data,
        max_auroc_drop=0.5,
        max_image_auroc_drop=0.5,
        max_aupro_drop=0.5,
        n_synthetic=6,
        threads=2,
        restore_iterations=1,
    )
    out = export_detector(
        _detector(), tmp_path / "ac", format="openvino", precision="int8", quantization=options
    )
    record = json.loads((out / "export.json").read_text())["quantization"]
    assert "accuracy control" in record["scope"] and record["scope"].startswith("INT8: backbone and flows")
    assert len(calls) == 4  # FP32, the failed scope, the next one, NNCF's result
    assert np.isfinite(load_export(out).score_batch(np.zeros((1, 3, SIZE, SIZE), np.float32))[0]).all()


def test_backbone_steps_keep_the_fine_stages_first(tmp_path):
    import onnx

    out = export_detector(_detector(), tmp_path / "fp32")
    steps = quantize._backbone_steps(onnx.load(str(out / "model.onnx")).graph)
    labels = [label for label, _ in steps]
    assert labels[0] == "backbone and flows" and labels[-1] == "flows only"
    assert not steps[0][1] and any("conv_stem" in name for name in steps[1][1])
    sizes = [len(kept) for _, kept in steps]
    assert sizes == sorted(sizes) and len(set(sizes)) == len(sizes)
    assert all(name.startswith("/features/") for name in steps[-1][1])


# --------------------------------------------------------------------------- export.json


def _rewrite(path: Path, **changes) -> None:
    doc = json.loads(path.read_text())
    for key, value in changes.items():
        if value is None:
            doc.pop(key, None)
        else:
            doc[key] = value
    path.write_text(json.dumps(doc))


@pytest.fixture(scope="module")
def fp32_export(tmp_path_factory):
    return export_detector(_detector(), tmp_path_factory.mktemp("fp32") / "export")


def test_fp32_export_records_its_precision_and_old_exports_load_as_fp32(fp32_export, tmp_path):
    doc = json.loads((fp32_export / "export.json").read_text())
    assert doc["precision"] == "fp32" and doc["calibration_images"] == 0
    import shutil

    old = Path(shutil.copytree(fp32_export, tmp_path / "old"))
    _rewrite(old / "export.json", precision=None, calibration_images=None)
    info = load_export(old).info
    assert info.precision == "fp32" and info.calibration_images == 0


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"precision": "int4"}, "unknown precision"),
        ({"precision": "int8", "calibration_images": 0}, "calibration images"),
        ({"calibration_images": -1}, "calibration_images"),
        ({"calibration_images": "12"}, "wrong type"),
        ({"precision": "int8", "calibration_images": 5}, "were changed"),  # an FP32 graph relabelled
    ],
)
def test_hostile_precision_fields_are_refused(fp32_export, tmp_path, changes, message):
    import shutil

    copy = Path(shutil.copytree(fp32_export, tmp_path / "copy"))
    _rewrite(copy / "export.json", **changes)
    with pytest.raises(ExportError, match=message):
        load_export(copy)


# --------------------------------------------------------------------------- command line


def test_cli_int8_without_data_is_one_line(tmp_path, capsys):
    checkpoint = _detector().save(tmp_path / "model.safetensors")
    code = main(
        ["export", "--checkpoint", str(checkpoint), "--out", str(tmp_path / "e"), "--precision", "int8"]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0 and "--data-root" in err


def test_cli_int8_export(data, tmp_path, capsys):
    checkpoint = _detector().save(tmp_path / "model.safetensors")
    code = main(
        [
            "export",
            "--checkpoint",
            str(checkpoint),
            "--out",
            str(tmp_path / "e"),
            "--precision",
            "int8",
            "--data-root",
            str(data.root.parent),
            "--category",
            CATEGORY,
            "--max-auroc-drop",
            "1",
            "--max-image-auroc-drop",
            "1",
            "--max-aupro-drop",
            "1",
            "--synthetic",
            "6",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert "onnx int8" in out and "int8 on 2 good validation images + 6 synthetic anomalies" in out


def test_cainnflow_error_is_the_base_of_refusals():
    assert issubclass(QuantizationRefused, CainnflowError)
