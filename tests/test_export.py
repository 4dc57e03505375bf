"""Export to ONNX / OpenVINO: parity with PyTorch, dynamic batch, hostile folders, no torch at run time.

Parity tolerance: anomaly maps and image scores within 1e-4 absolute (values lie in [0, 1));
the only deliberate difference is ``expm1`` exported as ``exp − 1`` (~1e-7).
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cainnflow.cli import main
from cainnflow.data import load_mvtec_category, preprocess, preprocess_image
from cainnflow.demo_data import make_demo_dataset
from cainnflow.detector import Detector
from cainnflow.model import CAINNFlowConfig
from cainnflow.runtime import EngineUnavailableError, ExportError, load_export
from cainnflow.scorer import Prediction, Scorer

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from cainnflow.export import export_detector, export_zip_bytes
from tests.export_support import perturbed_detector, real_backbone

SIZE = 64
ATOL = 1e-4
CATEGORY = "carpet_weave"
REPO = Path(__file__).resolve().parents[1]


def _backbone():
    """The real default backbone, loaded once for every test here."""
    return real_backbone(SIZE)


def _trained_detector(variant: str = "CAC", steps: int = 1) -> Detector:
    return perturbed_detector(SIZE, variant=variant, steps=steps)


def _images(n: int, seed: int) -> torch.Tensor:
    return torch.randn(n, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


def _assert_parity(detector: Detector, exported) -> None:
    for n in (1, 3):  # dynamic batch: neither is the traced batch size
        images = _images(n, seed=n)
        ref_maps, ref_scores = detector.score_batch(images)
        maps, scores = exported.score_batch(images.numpy())
        assert maps.shape == (n, SIZE, SIZE) and scores.shape == (n,)
        assert maps.dtype == np.float32 and np.isfinite(maps).all()
        np.testing.assert_allclose(maps, ref_maps.numpy(), atol=ATOL, rtol=0)
        np.testing.assert_allclose(scores, ref_scores.numpy(), atol=ATOL, rtol=0)
    # The maps must carry signal, or parity would be trivial.
    assert float(ref_maps.std()) > 1e-3


@pytest.fixture(scope="module")
def onnx_export(tmp_path_factory):
    detector = _trained_detector()
    out = export_detector(detector, tmp_path_factory.mktemp("export") / "onnx", format="onnx")
    return detector, out


@pytest.mark.parametrize("steps", [1, 2])
@pytest.mark.parametrize("variant", ["CA", "AC", "CAC", "CC"])
def test_onnx_matches_pytorch_for_every_variant(variant, steps, tmp_path):
    detector = _trained_detector(variant, steps)
    out = export_detector(detector, tmp_path / "export")
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "export.json", "model.onnx"]
    _assert_parity(detector, load_export(out, threads=2))


@pytest.mark.parametrize("fmt", ["onnx", "openvino"])
def test_the_exposure_step_is_in_the_graph(fmt, tmp_path):
    if fmt == "openvino":
        pytest.importorskip("openvino")
    detector = perturbed_detector(SIZE, photometric="standardize", photometric_target=(0.3, 0.08))
    out = export_detector(detector, tmp_path / "export", format=fmt)
    exported = load_export(out, threads=2)
    _assert_parity(detector, exported)
    # A darker, flatter copy of an image scores the same: the graph standardised its exposure.
    images = _images(1, seed=5)
    darker = (images * 0.5 - 0.3).numpy()
    np.testing.assert_allclose(
        exported.score_batch(darker)[1], exported.score_batch(images.numpy())[1], atol=1e-3
    )
    assert "0.300 ± 0.080" in json.loads((out / "export.json").read_text())["input"]["preprocessing"]


@pytest.mark.parametrize(("variant", "steps"), [("CAC", 1), ("CC", 2)])
def test_openvino_matches_pytorch(variant, steps, tmp_path):
    pytest.importorskip("openvino")
    detector = _trained_detector(variant, steps)
    out = export_detector(detector, tmp_path / "export", format="openvino")
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "export.json", "model.bin", "model.xml"]
    exported = load_export(out, threads=2)
    assert exported.engine == "OpenVINO"
    _assert_parity(detector, exported)


def test_openvino_engine_compiles_each_batch_size_and_is_safe_to_share(tmp_path):
    pytest.importorskip("openvino")
    from concurrent.futures import ThreadPoolExecutor

    detector = _trained_detector()
    exported = load_export(export_detector(detector, tmp_path / "v", format="openvino"), threads=1)
    engine = exported._engine
    images = _images(6, seed=7).numpy()
    ref_maps, ref_scores = exported.score_batch(images)
    for n in (1, 2, 3, 4, 5, 6, 1):  # more sizes than are kept compiled: the oldest are recompiled
        maps, scores = exported.score_batch(images[:n])
        np.testing.assert_allclose(maps, ref_maps[:n], atol=1e-5, rtol=0)
        np.testing.assert_allclose(scores, ref_scores[:n], atol=1e-5, rtol=0)
    assert len(engine._compiled) == engine.STATIC_BATCHES and 1 in engine._compiled
    # Copies share the engine; calls from several threads each get their own images' results.
    copies = [exported.copy() for _ in range(4)]
    jobs = [(copies[i % 4], i % 5, 1 + i % 2) for i in range(24)]  # (detector, first image, batch)

    def run(job):
        detector, first, n = job
        return detector.score_batch(images[first : first + n])

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(run, jobs))
    for (_, first, n), (maps, scores) in zip(jobs, results, strict=True):
        np.testing.assert_allclose(scores, ref_scores[first : first + n], atol=1e-5, rtol=0)
        np.testing.assert_allclose(maps, ref_maps[first : first + n], atol=1e-5, rtol=0)


def test_export_json_documents_the_graph(onnx_export):
    detector, out = onnx_export
    doc = json.loads((out / "export.json").read_text())
    assert doc["input"]["name"] == "image" and doc["input"]["shape"] == ["batch", 3, SIZE, SIZE]
    assert [o["name"] for o in doc["outputs"]] == ["anomaly_map", "score"]
    assert doc["input"]["mean"] == list(detector.backbone.mean)
    assert doc["threshold"] == pytest.approx(detector.threshold)
    assert doc["model"] == detector.config.to_dict()
    assert doc["backbone"]["weights_source"] == detector.backbone.weights_source


def test_predict_with_a_changeable_threshold(onnx_export, tmp_path):
    detector, out = onnx_export
    exported = load_export(out)
    paths = []
    for i, mode in enumerate(("RGB", "L", "RGBA")):
        rng = np.random.default_rng(i)
        image = Image.fromarray(rng.integers(0, 255, (80, 90, 3), dtype=np.uint8)).convert(mode)
        image.save(tmp_path / f"{i}.png")
        paths.append(tmp_path / f"{i}.png")
    pred = exported.predict(paths)
    ref = detector.predict(paths)
    np.testing.assert_allclose(pred.scores, ref.scores, atol=ATOL, rtol=0)
    assert pred.threshold == pytest.approx(detector.threshold)
    assert exported.predict(paths, threshold=-1.0).is_anomalous.all()
    exported.threshold = 2.0  # maps lie in [0, 1): nothing reaches it
    assert not exported.predict(paths).is_anomalous.any()


@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA", "I;16"])
def test_both_engines_preprocess_through_one_numpy_core(mode, onnx_export):
    detector, out = onnx_export
    exported = load_export(out)
    rng = np.random.default_rng(0)
    if mode == "I;16":
        image = Image.fromarray(rng.integers(0, 65535, (70, 50), dtype=np.uint16))
    else:
        image = Image.fromarray(rng.integers(0, 255, (70, 50, 4), dtype=np.uint8), "RGBA").convert(mode)
    core = preprocess_image(image, SIZE, detector.backbone.mean, detector.backbone.std)
    assert core.dtype == np.float32 and core.shape == (3, SIZE, SIZE)
    np.testing.assert_array_equal(exported.preprocess([image])[0], core)
    np.testing.assert_array_equal(detector.preprocess([image])[0].cpu().numpy(), core)
    np.testing.assert_array_equal(
        preprocess(image, SIZE, detector.backbone.mean, detector.backbone.std).numpy(), core
    )


def test_both_engines_are_scorers_with_one_prediction_type(onnx_export, tmp_path):
    detector, out = onnx_export
    exported = load_export(out)
    assert isinstance(detector, Scorer) and isinstance(exported, Scorer)
    assert exported.image_size == detector.image_size == SIZE
    assert exported.stats == detector.stats  # read back through ScoreStats.from_dict
    image = Image.fromarray(np.random.default_rng(3).integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8))
    for engine in (detector, exported):
        prediction = engine.predict([image], threshold=0.0)
        assert type(prediction) is Prediction and prediction.is_anomalous.all()
    twin = exported.copy()
    twin.threshold = 5.0
    assert exported.threshold == pytest.approx(detector.threshold)  # a copy has its own threshold


def test_both_engines_evaluate_through_one_loop(onnx_export, tmp_path):
    detector, out = onnx_export
    exported = load_export(out)
    make_demo_dataset(
        tmp_path,
        categories=[CATEGORY],
        image_size=SIZE,
        n_train=2,
        n_test_good=2,
        n_test_per_defect=1,
        workers=1,
    )
    data = load_mvtec_category(tmp_path, CATEGORY)
    ours, theirs = exported.evaluate(data, batch_size=3), detector.evaluate(data, batch_size=3)
    np.testing.assert_allclose(ours.scores, theirs.scores, atol=ATOL, rtol=0)
    np.testing.assert_array_equal(ours.has_mask, theirs.has_mask)
    assert (ours.masks is None) == (theirs.masks is None)
    if ours.masks is not None:
        np.testing.assert_array_equal(ours.masks, theirs.masks)
    assert ours.image_auroc == pytest.approx(theirs.image_auroc, abs=1e-6)


def test_zip_bytes_hold_a_loadable_export(onnx_export, tmp_path):
    detector, _ = onnx_export
    data = export_zip_bytes(detector)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert sorted(archive.namelist()) == ["README.md", "export.json", "model.onnx"]
        archive.extractall(tmp_path)
    _assert_parity(detector, load_export(tmp_path))


def test_export_json_states_the_decision_rule(onnx_export):
    detector, out = onnx_export
    doc = json.loads((out / "export.json").read_text())
    assert doc["decision"]["image"].startswith("score >= threshold")
    assert doc["decision"]["pixel"].startswith("anomaly_map >= pixel_threshold")
    assert doc["pixel_threshold"] == pytest.approx(detector.stats.pixel_max)
    info = load_export(out).info
    assert info.pixel_threshold == pytest.approx(detector.stats.pixel_max)
    readme = (out / "README.md").read_text()
    for text in ("score >= threshold", "anomaly_map >= pixel_threshold", str(list(detector.backbone.mean))):
        assert text in readme
    assert f"{detector.threshold:.6g}" in readme


def test_an_export_without_the_newer_fields_still_loads(onnx_export, tmp_path):
    """Exports written before ``pixel_threshold``, ``decision`` and the README (the shipped demo's era)."""
    _, out = onnx_export
    old = tmp_path / "old"
    shutil.copytree(out, old)
    (old / "README.md").unlink()
    doc = json.loads((old / "export.json").read_text())
    for key in ("pixel_threshold", "decision"):
        del doc[key]
    (old / "export.json").write_text(json.dumps(doc))
    info = load_export(old).info
    assert info.pixel_threshold == info.stats.pixel_max


# Blocks cainnflow and torch in the snippet's interpreter: it must run on numpy, pillow and the engine.
_NO_PROJECT = """\
import sys
class _Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("cainnflow", "torch", "app"):
            raise ImportError(f"the export's README snippet imported {name}")
sys.meta_path.insert(0, _Block())
"""


def _snippet_images(folder: Path) -> list[Path]:
    """Images of the kinds the snippet must read as cainnflow does (modes, transparency, a large side)."""
    rng = np.random.default_rng(7)
    rgba = Image.fromarray(rng.integers(0, 255, (70, 50, 4), dtype=np.uint8), "RGBA")
    images = {
        "rgb.png": rgba.convert("RGB"),
        "gray.png": rgba.convert("L"),
        "alpha.png": rgba,
        "wide.png": Image.fromarray(rng.integers(0, 255, (40, 2100, 3), dtype=np.uint8)),
        "photo.jpg": rgba.convert("RGB").resize((120, 90)),
    }
    paths = []
    for name, image in images.items():
        image.save(folder / name)
        paths.append(folder / name)
    return paths


@pytest.fixture(scope="module")
def unzipped_export(onnx_export, tmp_path_factory):
    """The app's download (export_zip_bytes) of the module's detector, unpacked."""
    detector, _ = onnx_export
    folder = tmp_path_factory.mktemp("unzipped")
    with zipfile.ZipFile(io.BytesIO(export_zip_bytes(detector))) as archive:
        archive.extractall(folder)
    return folder


@pytest.mark.parametrize("engine", ["onnxruntime", "openvino"])
def test_the_readme_snippet_runs_without_cainnflow_and_matches(
    engine, onnx_export, unzipped_export, tmp_path
):
    """Unzip an export, run its README's script in a fresh interpreter: the library's scores to 1e-4."""
    from cainnflow.export_readme import readme_snippets

    pytest.importorskip(engine)
    detector, _ = onnx_export
    folder = unzipped_export
    snippet = readme_snippets((folder / "README.md").read_text())[engine]
    assert "import cainnflow" not in snippet and "from cainnflow" not in snippet
    script = folder / f"score_{engine}.py"
    script.write_text(_NO_PROJECT + snippet)
    paths = _snippet_images(tmp_path)
    run = subprocess.run(
        [sys.executable, "-I", script.name, *map(str, paths)],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    rows = [line.split("\t") for line in run.stdout.strip().splitlines()]
    assert [row[0] for row in rows] == list(map(str, paths))
    reference = detector.predict(paths)
    np.testing.assert_allclose([float(r[1]) for r in rows], reference.scores, atol=ATOL, rtol=0)
    verdicts = ["anomalous" if a else "good" for a in reference.is_anomalous]
    assert [r[2] for r in rows] == verdicts


def test_untrained_detector_is_not_exported(tmp_path):
    detector = Detector.create(CAINNFlowConfig(image_size=SIZE), device="cpu")
    with pytest.raises(ExportError, match="not trained"):
        export_detector(detector, tmp_path / "x")


# --------------------------------------------------------------------------- hostile folders


def _edit_json(root: Path, **changes) -> None:
    path = root / "export.json"
    doc = json.loads(path.read_text())
    for key, value in changes.items():
        target = doc
        *parents, last = key.split("__")
        for parent in parents:
            target = target[int(parent)] if isinstance(target, list) else target[parent]
        target[last] = value
    path.write_text(json.dumps(doc))


def _nan_threshold(root: Path) -> None:
    path = root / "export.json"
    doc = json.loads(path.read_text())
    doc["threshold"] = float("nan")
    path.write_text(json.dumps(doc))  # json writes the non-standard token NaN


def _escaping_link(root: Path) -> None:
    outside = root.parent / "elsewhere.onnx"
    shutil.copy(root / "model.onnx", outside)
    (root / "model.onnx").unlink()
    (root / "model.onnx").symlink_to(outside)


def _flip_a_byte(root: Path) -> None:
    data = bytearray((root / "model.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (root / "model.onnx").write_bytes(bytes(data))


HOSTILE = {
    "no export.json": (lambda r: (r / "export.json").unlink(), "export.json is missing"),
    "no graph": (lambda r: (r / "model.onnx").unlink(), "model.onnx is missing"),
    "not JSON": (lambda r: (r / "export.json").write_text("{not json"), "not valid JSON"),
    "JSON list": (lambda r: (r / "export.json").write_text("[1, 2]"), "JSON object"),
    "NaN threshold": (_nan_threshold, "non-JSON number NaN"),
    "huge threshold": (lambda r: _edit_json(r, threshold=1e300), "finite number of sane size"),
    "string size": (lambda r: _edit_json(r, image_size="64"), "wrong type"),
    "bool threshold": (lambda r: _edit_json(r, threshold=True), "wrong type"),
    "huge size": (lambda r: _edit_json(r, image_size=10**9), "must be in"),
    "zero std": (lambda r: _edit_json(r, input__std=[0.2, 0.0, 0.2]), "must be positive"),
    "future version": (lambda r: _edit_json(r, format_version=99), "unsupported export format version"),
    "unknown format": (lambda r: _edit_json(r, format="tflite"), "unknown export format"),
    "graph escapes": (lambda r: _edit_json(r, files__0__name="../model.onnx"), "files must be"),
    "link escapes": (_escaping_link, "points outside"),
    "wrong size": (lambda r: _edit_json(r, files__0__bytes=12), "export.json says 12"),
    "tampered graph": (_flip_a_byte, "does not match its sha256"),
    "missing stats": (lambda r: _edit_json(r, stats={}), "has no 'image_mean'"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_export_folders_are_refused(case, onnx_export, tmp_path):
    _, out = onnx_export
    root = tmp_path / "export"
    shutil.copytree(out, root)
    damage, message = HOSTILE[case]
    damage(root)
    with pytest.raises(ExportError, match=message):
        load_export(root)


def test_cli_refuses_a_bad_folder_in_one_line(tmp_path, capsys):
    (tmp_path / "bad").mkdir()
    code = main(["predict", "--checkpoint", str(tmp_path / "bad"), "x.png", "--out", str(tmp_path / "o")])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "export.json is missing" in err[0]


def test_missing_engine_gives_an_install_hint(onnx_export, monkeypatch):
    detector, out = onnx_export
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # makes `import onnxruntime` fail
    with pytest.raises(EngineUnavailableError, match=r"pip install 'cainnflow\[deploy\]'"):
        load_export(out)
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(EngineUnavailableError, match="pip install"):
        export_detector(detector, out.parent / "again")


# --------------------------------------------------------------------------- end to end, no torch


@pytest.fixture(scope="module")
def demo_checkpoint(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    make_demo_dataset(
        root, categories=(CATEGORY,), image_size=96, n_train=12, n_test_good=3, n_test_per_defect=2
    )
    ckpt = tmp_path_factory.mktemp("ckpt") / "model.safetensors"
    code = main(
        ["train", "--data-root", str(root), "--category", CATEGORY, "--out", str(ckpt),
         "--epochs", "2", "--image-size", str(SIZE), "--batch-size", "4", "--quiet"]
    )  # fmt: skip
    assert code == 0
    return root, ckpt


def test_export_then_evaluate_and_predict_without_torch(demo_checkpoint, tmp_path):
    root, ckpt = demo_checkpoint
    out = tmp_path / "deploy"
    assert main(["export", "--checkpoint", str(ckpt), "--out", str(out)]) == 0
    reference = tmp_path / "ref.json"
    common = ["--data-root", str(root), "--category", CATEGORY]
    assert main(["evaluate", "--checkpoint", str(ckpt), *common, "--json", str(reference)]) == 0
    exported = tmp_path / "exported.json"
    images = sorted((root / CATEGORY / "test").rglob("*.png"))[:2]
    # A fresh interpreter: evaluate and predict on the export must never import torch.
    script = (
        "import sys\n"
        "from cainnflow.cli import main\n"
        f"assert main(['evaluate', '--checkpoint', {str(out)!r}, *{common!r}, '--json', {str(exported)!r}]) == 0\n"
        f"assert main(['predict', '--checkpoint', {str(out)!r}, *{list(map(str, images))!r},"
        f" '--out', {str(tmp_path / 'pred')!r}]) == 0\n"
        "loaded = sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.'))\n"
        "assert not loaded, loaded[:5]\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr[-2000:]
    ref, got = json.loads(reference.read_text()), json.loads(exported.read_text())
    assert abs(ref["image_auroc"] - got["image_auroc"]) <= 0.005
    assert abs(ref["pixel_auroc"] - got["pixel_auroc"]) <= 0.005
    np.testing.assert_allclose(
        [i["score"] for i in got["images"]], [i["score"] for i in ref["images"]], atol=ATOL
    )
    for image in images:
        assert (tmp_path / "pred" / f"{image.stem}_overlay.png").exists()
        amap = np.load(tmp_path / "pred" / f"{image.stem}_map.npy", allow_pickle=False)
        assert amap.shape == (SIZE, SIZE) and np.isfinite(amap).all()


def _export_page(checkpoint: str) -> None:
    from app.export_view import render_export
    from cainnflow.detector import Detector

    render_export(Detector.load(checkpoint, device="cpu"))


def test_app_export_view_offers_a_zip(onnx_export, tmp_path):
    from streamlit.testing.v1 import AppTest

    detector, _ = onnx_export
    checkpoint = detector.save(tmp_path / "model.safetensors")
    at = AppTest.from_function(_export_page, args=(str(checkpoint),), default_timeout=300).run()
    assert not at.exception
    at.button(key="export_view_button").click().run()
    assert not at.exception
    assert at.get("download_button"), "no download offered after exporting"


# --------------------------------------------------------------------------- hostile graphs (#16 item 2)


def _rehash(root: Path) -> None:
    """Makes export.json list model.onnx's current size and SHA-256 (a tamperer who rehashes)."""
    import hashlib

    graph = (root / "model.onnx").read_bytes()
    _edit_json(root, files__0__bytes=len(graph), files__0__sha256=hashlib.sha256(graph).hexdigest())


def _rewrite_graph(root: Path, change) -> None:
    import onnx

    model = onnx.load(str(root / "model.onnx"))
    change(model)
    (root / "model.onnx").write_bytes(model.SerializeToString())
    _rehash(root)


def _largest_float_initializer(model):
    import onnx

    floats = [t for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT]
    return max(floats, key=lambda t: int(np.prod(t.dims)))


def test_a_graph_with_external_data_is_refused_and_reads_nothing(onnx_export, tmp_path, monkeypatch):
    import onnx
    from onnx import numpy_helper

    _, out = onnx_export
    root = tmp_path / "export"
    shutil.copytree(out, root)
    secret = tmp_path / "cwd"
    secret.mkdir()
    monkeypatch.chdir(secret)

    def point_at_env(model) -> None:
        tensor = _largest_float_initializer(model)
        values = numpy_helper.to_array(tensor)
        (secret / ".env").write_bytes(values.astype(np.float32).tobytes())  # a file in the working folder
        tensor.ClearField("raw_data")
        tensor.ClearField("float_data")
        tensor.data_location = onnx.TensorProto.EXTERNAL
        for key, value in (("location", ".env"), ("offset", "0"), ("length", str(values.nbytes))):
            entry = tensor.external_data.add()
            entry.key, entry.value = key, value

    _rewrite_graph(root, point_at_env)
    with pytest.raises(ExportError, match="external data"):
        load_export(root)


def test_an_edited_image_size_is_refused_in_one_line(onnx_export, tmp_path):
    _, out = onnx_export
    root = tmp_path / "export"
    shutil.copytree(out, root)
    _edit_json(root, image_size=SIZE + 32)
    with pytest.raises(ExportError, match="were changed"):
        load_export(root)
    doc = json.loads((root / "export.json").read_text())
    del doc["settings_sha256"]  # an export without the settings hash: the graph itself is checked
    (root / "export.json").write_text(json.dumps(doc))
    with pytest.raises(ExportError, match=f"image_size {SIZE + 32}, but model.onnx takes input"):
        load_export(root)
    run = subprocess.run(
        [sys.executable, "-m", "cainnflow", "predict", "--checkpoint", str(root), "x.png", "--out", str(tmp_path / "o")],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode != 0 and "Traceback" not in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1, run.stderr


def test_a_graph_that_outputs_nan_is_not_called_good(onnx_export, tmp_path):
    from onnx import numpy_helper

    _, out = onnx_export
    root = tmp_path / "export"
    shutil.copytree(out, root)

    def poison(model) -> None:
        tensor = _largest_float_initializer(model)
        values = np.full(numpy_helper.to_array(tensor).shape, np.nan, dtype=np.float32)
        tensor.CopyFrom(numpy_helper.from_array(values, tensor.name))

    _rewrite_graph(root, poison)
    image = tmp_path / "part.png"
    Image.fromarray(np.full((SIZE, SIZE, 3), 128, np.uint8)).save(image)
    with pytest.raises(ExportError, match="non-finite"):
        load_export(root).predict([image])
    run = subprocess.run(
        [sys.executable, "-m", "cainnflow", "predict", "--checkpoint", str(root), str(image), "--out", str(tmp_path / "o")],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode != 0, run.stdout
    assert "Traceback" not in run.stderr and "non-finite" in run.stderr
