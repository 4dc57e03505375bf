"""The ``README.md`` written beside an export: the decision rule, the preprocessing and scripts
that run the graph with only numpy, pillow and the engine (no cainnflow, no PyTorch).

Everything is taken from the ``export.json`` document (:func:`cainnflow.export.export_document`),
and the scripts read ``export.json`` themselves, so an edited threshold is honoured. Torch-free:
:func:`readme_text` is plain string building.
"""

from __future__ import annotations

import re
from typing import Any

from .export_format import GRAPH_FILES, INPUT_NAME, OUTPUT_NAMES

__all__ = [
    "DECISION_IMAGE",
    "DECISION_PIXEL",
    "README_NAME",
    "SNIPPET_MARKERS",
    "decision_document",
    "readme_snippets",
    "readme_text",
]

README_NAME = "README.md"
DECISION_IMAGE = "score >= threshold → anomalous, otherwise good"
DECISION_PIXEL = "anomaly_map >= pixel_threshold → anomalous pixel (the outlined region)"
SNIPPET_MARKERS = {"onnxruntime": "# score_onnxruntime.py", "openvino": "# score_openvino.py"}
"""The first line of each runnable script in the README (how tests and readers find them)."""

_MAX_WORKING_SIDE = 2048  # cainnflow.image_io.MAX_WORKING_SIDE (not imported: that module loads more)
_FENCE = re.compile(r"```python\n(.*?)```", re.DOTALL)


def decision_document() -> dict[str, str]:
    """``export.json``'s ``decision`` field: the rules, in terms of the file's other fields."""
    return {
        "image": DECISION_IMAGE,
        "pixel": DECISION_PIXEL,
        "score": f"the graph's '{OUTPUT_NAMES[1]}' output",
        "thresholds": "'threshold' and 'pixel_threshold' in this file; edit them freely, the graph "
        "does not contain them",
    }


_PREAMBLE = '''\
import json
import sys
from pathlib import Path

import numpy as np
ENGINE_IMPORT
from PIL import Image, ImageOps

HERE = Path(__file__).resolve().parent if "__file__" in globals() else Path.cwd()
spec = json.loads((HERE / "export.json").read_text())
size = spec["image_size"]
mean = np.array(spec["input"]["mean"], dtype=np.float32).reshape(3, 1, 1)
std = np.array(spec["input"]["std"], dtype=np.float32).reshape(3, 1, 1)
threshold = spec["threshold"]
pixel_threshold = spec.get("pixel_threshold", spec["stats"]["pixel_max"])


def preprocess(path):
    """One image file -> float32 (3, size, size), exactly as cainnflow prepares it."""
    image = ImageOps.exif_transpose(Image.open(path))
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        black = Image.new("RGBA", image.size, (0, 0, 0, 255))  # transparency: composited on black
        image = Image.alpha_composite(black, image.convert("RGBA"))
    image = image.convert("RGB")
    image.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.BILINEAR)  # cainnflow's working-size cap
    image = image.resize((size, size), Image.Resampling.BILINEAR)  # bilinear, antialiased
    x = np.asarray(image, dtype=np.float32) / 255
    return (x.transpose(2, 0, 1) - mean) / std


paths = sys.argv[1:]
batch = np.ascontiguousarray(np.stack([preprocess(p) for p in paths]), dtype=np.float32)
'''.replace("MAX_SIDE", str(_MAX_WORKING_SIDE))

_REPORT = """
for path, score, amap in zip(paths, scores, maps):
    verdict = "anomalous" if score >= threshold else "good"
    outlined = 100 * float(np.mean(amap >= pixel_threshold))
    print(f"{path}\\t{float(score):.6f}\\t{verdict}\\t{outlined:.2f} % of pixels >= pixel_threshold")
"""

_ONNXRUNTIME = f'''\
# score_onnxruntime.py — pip install onnxruntime numpy pillow; python score_onnxruntime.py IMAGE...
{_PREAMBLE.replace("ENGINE_IMPORT", "import onnxruntime as ort")}
session = ort.InferenceSession(str(HERE / "model.onnx"), providers=["CPUExecutionProvider"])
maps, scores = session.run(["{OUTPUT_NAMES[0]}", "{OUTPUT_NAMES[1]}"], {{"{INPUT_NAME}": batch}})
{_REPORT}'''


def _openvino_script(graph: str) -> str:
    return f'''\
# score_openvino.py — pip install openvino numpy pillow; python score_openvino.py IMAGE...
{_PREAMBLE.replace("ENGINE_IMPORT", "import openvino as ov")}
core = ov.Core()
model = core.read_model(str(HERE / "{graph}"))
model.reshape({{model.input(0): list(batch.shape)}})  # a fixed batch: OpenVINO fuses more ops (faster)
compiled = core.compile_model(model, "CPU", {{"INFERENCE_PRECISION_HINT": "f32"}})
result = compiled({{"{INPUT_NAME}": batch}})
maps = np.asarray(result[compiled.output("{OUTPUT_NAMES[0]}")])
scores = np.asarray(result[compiled.output("{OUTPUT_NAMES[1]}")])
{_REPORT}'''


def _fmt(value: Any) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def readme_text(document: dict[str, Any]) -> str:
    """The README for an export described by ``document`` (its ``export.json``)."""
    fmt = document["format"]
    spec = document["input"]
    size = document["image_size"]
    stats = document.get("stats", {})
    pixel = document.get("pixel_threshold", stats.get("pixel_max"))
    files = ", ".join(f"`{name}`" for name in GRAPH_FILES[fmt])
    category = document.get("category") or "(not recorded)"
    model = document.get("model", {})
    pooling = model.get("pooling", "max")
    score_is = {
        "max": "the maximum of the anomaly map",
        "coarse": "the maximum of the map of the coarser half of the scales (not always the map's maximum)",
        "coarse_top": "the mean of the top eighth of the coarsest scale's positions (not the map's maximum)",
        "topk": "the mean of the map's top 1 % of values",
    }.get(pooling, "the image score")
    weight = model.get("coarsest_map_weight", 1.0)
    if pooling in ("max", "topk") and isinstance(weight, int | float) and weight != 1:
        score_is = score_is.replace("the anomaly map", "the scales' equal-weight map").replace(
            "the map's", "the scales' equal-weight map's"
        ) + (
            f" (the `anomaly_map` output weights the coarsest scale by {weight:g}, so its maximum can be "
            "lower)"
        )
    calibrated = document.get("calibrated_image_size", size)
    size_note = (
        ""
        if calibrated == size
        else f"\n\nNote: the graph takes {size} px, but the scores and thresholds were calibrated at "
        f"{calibrated} px; re-check the thresholds on your images."
    )
    lines = [
        f"# CAINNFlow anomaly detector — {category}",
        "",
        f"An export of a trained CAINNFlow model ({model.get('backbone', '?')}, "
        f"{model.get('variant', '?')} subnets) for {'ONNX Runtime' if fmt == 'onnx' else 'OpenVINO'}: "
        f"{files} {'holds' if fmt == 'onnx' else 'hold'} the whole scoring graph (backbone → flows → anomaly map → image score), "
        "`export.json` its contract. It runs without cainnflow or PyTorch.",
        "",
        "## Decision rule",
        "",
        f"- **Image**: `{DECISION_IMAGE}` — `threshold` = **{_fmt(document['threshold'])}** "
        f"(in `export.json`). `score` is {score_is}.",
        f"- **Pixels**: `{DECISION_PIXEL}` — `pixel_threshold` = **{_fmt(pixel)}** (in `export.json`; "
        "the largest map value seen on the validation normals, so a normal image has almost nothing "
        "outlined).",
        "- Both thresholds live outside the graph: edit them in `export.json` (cainnflow refuses edits "
        "to anything else). `export.json`'s `decision` field states the same rules.",
        "",
        "## Input and preprocessing",
        "",
        f"- Input `{INPUT_NAME}`: float32, shape (batch, 3, {size}, {size}), {spec.get('layout', 'NCHW, RGB')}; "
        "any batch size.",
        f"- Preprocessing (from `export.json`): {spec.get('preprocessing', '')}.",
        f"  - mean = {spec['mean']}, std = {spec['std']}; scale to [0, 1] is `pixel / 255`.",
        "  - Images are read as 8-bit RGB: EXIF orientation applied, transparency composited on black, "
        f"images larger than {_MAX_WORKING_SIDE} px per side first reduced to fit (bilinear); 16-bit images "
        "are scaled to 8 bit by cainnflow (the scripts below convert them with pillow, which clips).",
        f"- Outputs: `{OUTPUT_NAMES[0]}` float32 (batch, {size}, {size}), higher is more anomalous; "
        f"`{OUTPUT_NAMES[1]}` float32 (batch,), the image score.{size_note}",
        "",
        "## Run it (numpy + pillow + the engine only)",
        "",
        "Save a script next to `export.json` and run it on image files; it prints "
        "`path, score, verdict, % of pixels outlined` per image.",
        "",
    ]
    if fmt == "onnx":
        lines += [
            "### ONNX Runtime",
            "",
            "```python",
            _ONNXRUNTIME.rstrip(),
            "```",
            "",
            "### OpenVINO (reads `model.onnx` directly)",
            "",
            "```python",
            _openvino_script("model.onnx").rstrip(),
            "```",
        ]
    else:
        lines += [
            "### OpenVINO",
            "",
            "```python",
            _openvino_script(GRAPH_FILES["openvino"][0]).rstrip(),
            "```",
            "",
            "(ONNX Runtime needs an ONNX export: export again with the ONNX format.)",
        ]
    lines += [
        "",
        "## With cainnflow",
        "",
        "```bash",
        "python -m cainnflow predict --checkpoint THIS_FOLDER images... --out preds",
        "python -m cainnflow evaluate --checkpoint THIS_FOLDER --data-root ROOT --category CATEGORY",
        "```",
        "",
        "`cainnflow.runtime.load_export(THIS_FOLDER)` checks the files' SHA-256 and the settings hash "
        "before it runs anything.",
        "",
    ]
    return "\n".join(lines)


def readme_snippets(text: str) -> dict[str, str]:
    """The runnable scripts of a README by engine (``"onnxruntime"``, ``"openvino"``)."""
    found: dict[str, str] = {}
    for block in _FENCE.findall(text):
        for engine, marker in SNIPPET_MARKERS.items():
            if block.startswith(marker):
                found[engine] = block
    return found
