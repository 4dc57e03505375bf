"""An export's model configuration is read as a checkpoint's is: one typed config for both engines."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from cainnflow.config import CAINNFlowConfig
from cainnflow.export_format import EXPORT_JSON, ExportError, read_export_info

DEMO_EXPORT = Path(__file__).resolve().parents[1] / "assets" / "demo_carpet_weave_onnx"

pytestmark = pytest.mark.skipif(not DEMO_EXPORT.is_dir(), reason="the demo export is missing")


def _edited(tmp_path: Path, **model) -> Path:
    folder = tmp_path / "export"
    shutil.copytree(DEMO_EXPORT, folder)
    doc = json.loads((folder / EXPORT_JSON).read_text())
    doc["model"].update(model)
    (folder / EXPORT_JSON).write_text(json.dumps(doc))
    return folder


def test_the_export_config_is_the_checkpoint_config():
    info = read_export_info(DEMO_EXPORT)
    doc = json.loads((DEMO_EXPORT / EXPORT_JSON).read_text())
    assert isinstance(info.config, CAINNFlowConfig)
    assert info.config == CAINNFlowConfig.from_dict(doc["model"])
    assert info.config.out_indices == (1, 2, 3) and info.config.image_size == info.calibrated_image_size


@pytest.mark.parametrize(
    "model",
    [
        {"steps": "many"},
        {"variant": "XYZ"},
        {"sigma": 1e9},
        {"out_indices": 7},
        {"image_size": 10**6},
    ],
)
def test_a_malformed_export_config_is_one_line(tmp_path, model):
    with pytest.raises(ExportError, match=r"export\.json model configuration is invalid") as caught:
        read_export_info(_edited(tmp_path, **model))
    assert "\n" not in str(caught.value)
