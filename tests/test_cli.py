"""The command line end to end on a small generated demo set."""

import json
import subprocess
import sys

import numpy as np
import pytest

from cainnflow.cli import main

CATEGORY = "carpet_weave"


@pytest.fixture(scope="module")
def demo_root(small_demo):
    return small_demo(n_train=12, n_test_good=3, n_test_per_defect=2, category=CATEGORY)


@pytest.fixture(scope="module")
def checkpoint(demo_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("ckpt") / "model.safetensors"
    code = main(
        [
            "train", "--data-root", str(demo_root), "--category", CATEGORY, "--out", str(out),
            "--epochs", "2", "--image-size", "64", "--batch-size", "4", "--quiet",
        ]
    )  # fmt: skip
    assert code == 0
    return out


def test_train_evaluate_predict(demo_root, checkpoint, tmp_path, capsys):
    assert checkpoint.exists() and checkpoint.stat().st_size > 0
    report = tmp_path / "metrics.json"
    code = main(
        ["evaluate", "--checkpoint", str(checkpoint), "--data-root", str(demo_root), "--category", CATEGORY,
         "--json", str(report)]
    )  # fmt: skip
    assert code == 0
    metrics = json.loads(report.read_text())
    for key in ("image_auroc", "pixel_auroc", "aupro", "n_test", "n_anomalous", "ms_per_image", "threshold"):
        assert key in metrics
    assert metrics["n_test"] == len(list((demo_root / CATEGORY / "test").rglob("*.png")))
    assert 0.0 <= metrics["image_auroc"] <= 1.0 and 0.0 <= metrics["pixel_auroc"] <= 1.0
    assert "image AUROC" in capsys.readouterr().out

    images = sorted((demo_root / CATEGORY / "test").rglob("*.png"))[:2]
    out_dir = tmp_path / "pred"
    code = main(["predict", "--checkpoint", str(checkpoint), *map(str, images), "--out", str(out_dir)])
    assert code == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.strip()]
    assert len(lines) == 2 and all(("good" in ln) or ("ANOMALOUS" in ln) for ln in lines)
    for image in images:
        assert (out_dir / f"{image.stem}_overlay.png").exists()
        amap = np.load(out_dir / f"{image.stem}_map.npy", allow_pickle=False)
        assert amap.shape == (64, 64) and np.isfinite(amap).all()


def test_predict_keeps_every_output_when_names_repeat(demo_root, checkpoint, tmp_path, capsys):
    test_dir = demo_root / CATEGORY / "test"
    same_name = [d / "000.png" for d in sorted(test_dir.iterdir()) if (d / "000.png").exists()][:2]
    assert len(same_name) == 2
    out_dir = tmp_path / "pred"
    code = main(["predict", "--checkpoint", str(checkpoint), *map(str, same_name), "--out", str(out_dir)])
    assert code == 0
    overlays = sorted(p.name for p in out_dir.glob("*_overlay.png"))
    assert overlays == sorted(f"{p.parent.name}_000_overlay.png" for p in same_name)
    assert len(list(out_dir.glob("*_map.npy"))) == 2


def _one_line_error(capsys, code):
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0
    assert err and err[-1].startswith("error:")
    assert not any("Traceback" in line for line in err)
    return err[-1]


def test_bad_inputs_exit_nonzero_with_one_line(demo_root, checkpoint, tmp_path, capsys):
    line = _one_line_error(
        capsys,
        main(
            [
                "train",
                "--data-root",
                str(tmp_path / "nope"),
                "--category",
                CATEGORY,
                "--out",
                str(tmp_path / "m.safetensors"),
            ]
        ),
    )
    assert "nope" in line
    line = _one_line_error(
        capsys,
        main(
            [
                "train",
                "--data-root",
                str(demo_root),
                "--category",
                "zebra",
                "--out",
                str(tmp_path / "m.safetensors"),
            ]
        ),
    )
    assert "zebra" in line
    garbage = tmp_path / "bad.safetensors"
    garbage.write_bytes(b"\x00" * 64)
    line = _one_line_error(
        capsys,
        main(
            ["evaluate", "--checkpoint", str(garbage), "--data-root", str(demo_root), "--category", CATEGORY]
        ),
    )
    assert "bad.safetensors" in line
    pickled = tmp_path / "model.pt"
    import torch

    torch.save({"w": torch.zeros(1)}, pickled)
    line = _one_line_error(
        capsys, main(["predict", "--checkpoint", str(pickled), "x.png", "--out", str(tmp_path)])
    )
    assert "pickle" in line
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"not an image at all")
    code = main(["predict", "--checkpoint", str(checkpoint), str(corrupt), "--out", str(tmp_path / "p")])
    assert code != 0
    assert "corrupt.png" in capsys.readouterr().err


def test_module_entry_point_reports_usage_errors():
    proc = subprocess.run(
        [sys.executable, "-m", "cainnflow", "train", "--variant", "XX"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert "invalid choice" in proc.stderr


@pytest.mark.parametrize("where", ["under_a_file", "a_folder"])
def test_train_refuses_an_unwritable_out_before_training(demo_root, tmp_path, where):
    blocker = tmp_path / "blocker"
    if where == "under_a_file":
        blocker.write_text("a file, not a folder")
        out = blocker / "model.safetensors"
    else:
        out = tmp_path / "model.safetensors"
        out.mkdir()
    proc = subprocess.run(
        [sys.executable, "-m", "cainnflow", "train", "--data-root", str(demo_root), "--category", CATEGORY,
         "--out", str(out), "--epochs", "1", "--image-size", "64", "--quiet"],
        capture_output=True,
        text=True,
        timeout=300,
    )  # fmt: skip
    assert proc.returncode == 2
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --out") and "Traceback" not in proc.stderr
    assert "training" not in proc.stderr  # refused before the model was built
