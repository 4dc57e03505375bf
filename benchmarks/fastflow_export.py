"""The peer's export for issue #18: anomalib's FastFlow on the same EfficientNet-Lite0, timed.

anomalib's ``FastflowModel`` accepts only ResNet / CaiT / DeiT backbones and downloads their
ImageNet weights from a hub, which this machine cannot reach; so the model is built as
anomalib builds it for a CNN (``timm`` features at stages 1–3, a trainable ``LayerNorm`` per
stage, 8 ``AllInOneBlock`` steps alternating 3×3 and 1×1 subnets, anomalib's own
``AnomalyMapGenerator``, the score the map's maximum) around cainnflow's Lite0 feature
extractor (same offline weights as ours). Untrained flows do the same arithmetic as trained
ones, so this times the export, not its accuracy (measured earlier: benchmarks/README.md).
The graph is exported with the TorchScript ONNX exporter (opset 17, dynamic batch) — anomalib's
own ``export`` does the same for ONNX and converts that file for OpenVINO, and its OpenVINO
inferencer compiles that dynamic-batch graph as it is — and timed like ``export_speed.py``; the
"batch fixed" row compiles it per batch size as :mod:`cainnflow.runtime` compiles ours::

    pip install anomalib   # a separate environment is fine
    python benchmarks/fastflow_export.py --threads 2
    python benchmarks/export_speed.py ... --fastflow   # the same rows, timed in turns with ours
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.export_speed import BATCHES, interleaved_ms
from cainnflow.backbone import create_backbone


class _Graph(nn.Module):
    """anomalib's FastFlow with the Lite0 features: images → (anomaly map, score)."""

    def __init__(self, size: int) -> None:
        super().__init__()
        from anomalib.models.image.fastflow.anomaly_map import AnomalyMapGenerator
        from anomalib.models.image.fastflow.torch_model import create_fast_flow_block

        backbone = create_backbone("tf_efficientnet_lite0", out_indices=(1, 2, 3))
        self.features = backbone.model
        shapes = backbone.feature_shapes(size)
        self.norms = nn.ModuleList(nn.LayerNorm(list(shape), elementwise_affine=True) for shape in shapes)
        self.flows = nn.ModuleList(
            create_fast_flow_block(list(shape), conv3x3_only=False, hidden_ratio=1.0, flow_steps=8)
            for shape in shapes
        )
        self.anomaly_map = AnomalyMapGenerator(input_size=(size, size))

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = [norm(f) for norm, f in zip(self.norms, self.features(images), strict=True)]
        hidden = [flow(f)[0] for flow, f in zip(self.flows, features, strict=True)]
        maps = self.anomaly_map(hidden)
        return maps[:, 0], torch.amax(maps, dim=(-2, -1))[:, 0]


def fastflow_engines(size: int, threads: int, folder: Path) -> tuple[dict[str, Callable], float]:
    """anomalib FastFlow's graph exported to ``folder`` and loaded on both engines: runs, file MB."""
    import onnxruntime as ort
    import openvino as ov

    graph = _Graph(size).eval()
    path = folder / "fastflow.onnx"
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            graph,
            (torch.zeros(2, 3, size, size),),
            str(path),
            input_names=["image"],
            output_names=["anomaly_map", "score"],
            dynamic_axes={"image": {0: "batch"}, "anomaly_map": {0: "batch"}, "score": {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    config = {
        "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_PRECISION_HINT": "f32",
        "INFERENCE_NUM_THREADS": threads,
    }
    core = ov.Core()
    request = core.compile_model(ov.convert_model(str(path)), "CPU", config).create_infer_request()
    fixed: dict[int, object] = {}

    def fixed_batch(x):  # compiled per batch size, as cainnflow.runtime compiles ours
        if x.shape[0] not in fixed:
            model = ov.convert_model(str(path))
            model.reshape({model.inputs[0]: list(x.shape)})
            fixed[x.shape[0]] = core.compile_model(model, "CPU", config).create_infer_request()
        return fixed[x.shape[0]].infer({0: x})

    runs = {
        "anomalib FastFlow, ONNX Runtime FP32": lambda x: session.run(None, {"image": x}),
        "anomalib FastFlow, OpenVINO FP32": lambda x: request.infer({0: x}),
        "anomalib FastFlow, OpenVINO FP32, batch fixed": fixed_batch,
    }
    return runs, path.stat().st_size / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--size", type=int, default=256)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        runs, megabytes = fastflow_engines(args.size, args.threads, Path(tmp))
        timings = {b: interleaved_ms(runs, b, args.size, args.repeats) for b in BATCHES}
    load = " / ".join(f"{v:.1f}" for v in os.getloadavg())
    print(f"\n{args.size} px, {args.threads} threads, load average {load}, ONNX file {megabytes:.1f} MB\n")
    print("| engine | b1 ms/img | b8 ms/img |")
    print("|---|---|---|")
    for name in runs:
        print(f"| {name} | {timings[1][name]:.1f} | {timings[8][name]:.1f} |")


if __name__ == "__main__":
    main()
