"""Tests for cainnflow.data on small generated image trees."""

import io
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from cainnflow.data import (
    IMAGE_EXTENSIONS,
    MVTEC_CATEGORIES,
    AnomalyDataset,
    DatasetItem,
    Sample,
    list_categories,
    load_custom_folder,
    load_mvtec_category,
    preprocess,
    read_image,
    read_mask,
    split_train_val,
)
from cainnflow.errors import CainnflowError, DataError

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
SIZE = 16


def _png(path: Path, value: int = 128, size: int = SIZE, mode: str = "RGB") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    colour = (value,) * len(mode) if mode in ("RGB", "RGBA") else value
    Image.new(mode, (size, size), colour).save(path)
    return path


def _mask(path: Path, box: tuple[int, int, int, int] = (4, 4, 8, 8), size: int = SIZE) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    array = np.zeros((size, size), np.uint8)
    x0, y0, x1, y1 = box
    array[y0:y1, x0:x1] = 255
    Image.fromarray(array, mode="L").save(path)
    return path


def _mvtec_tree(root: Path) -> Path:
    cat = root / "widget"
    for i in range(5):
        _png(cat / "train" / "good" / f"{i:03d}.png")
    _png(cat / "test" / "good" / "000.png")
    _png(cat / "test" / "scratch" / "000.png", 200)
    _png(cat / "test" / "scratch" / "001.png", 200)
    _png(cat / "test" / "crack" / "000.png", 50)
    _mask(cat / "ground_truth" / "scratch" / "000_mask.png")
    _mask(cat / "ground_truth" / "crack" / "000.png")  # fallback: <stem>.png
    # 001 scratch has no mask; noise that must be ignored:
    (cat / "train" / "good" / ".DS_Store").write_bytes(b"junk")
    (cat / "train" / "good" / "notes.txt").write_text("hello")
    (cat / "test" / ".ipynb_checkpoints").mkdir()
    (root / "empty_cat" / "train" / "good").mkdir(parents=True)
    return root


def test_constants():
    assert len(MVTEC_CATEGORIES) == 15 and "metal_nut" in MVTEC_CATEGORIES
    for ext in (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"):
        assert ext in IMAGE_EXTENSIONS
    assert issubclass(DataError, CainnflowError)


def test_list_categories(tmp_path):
    root = _mvtec_tree(tmp_path)
    assert list_categories(root) == ["widget"]
    with pytest.raises(DataError, match="does not exist"):
        list_categories(tmp_path / "nope")
    with pytest.raises(DataError, match="not a folder"):
        list_categories(_png(tmp_path / "file.png"))


def test_load_mvtec_category(tmp_path):
    data = load_mvtec_category(_mvtec_tree(tmp_path), "widget")
    assert data.name == "widget"
    assert [s.path.name for s in data.train] == [f"{i:03d}.png" for i in range(5)]
    assert all(s.label == 0 and s.defect_type == "good" for s in data.train)
    assert [(s.defect_type, s.path.name) for s in data.test] == [
        ("good", "000.png"),
        ("crack", "000.png"),
        ("scratch", "000.png"),
        ("scratch", "001.png"),
    ]
    by_key = {(s.defect_type, s.path.name): s for s in data.test}
    assert by_key[("scratch", "000.png")].mask_path.name == "000_mask.png"
    assert by_key[("crack", "000.png")].mask_path.name == "000.png"
    assert by_key[("scratch", "001.png")].mask_path is None
    assert by_key[("good", "000.png")].label == 0
    assert data.has_test and data.n_anomalous == 3
    assert data.defect_types == ("crack", "scratch")
    assert not data.has_masks  # one defect lacks a mask
    # deterministic
    assert load_mvtec_category(tmp_path, "widget") == data


def test_has_masks_when_complete(tmp_path):
    root = _mvtec_tree(tmp_path)
    _mask(root / "widget" / "ground_truth" / "scratch" / "001_mask.bmp")
    assert load_mvtec_category(root, "widget").has_masks


def test_load_mvtec_errors(tmp_path):
    root = _mvtec_tree(tmp_path)
    with pytest.raises(DataError, match="widget"):  # lists existing categories
        load_mvtec_category(root, "bottle")
    with pytest.raises(DataError, match="no training images"):
        load_mvtec_category(root, "empty_cat")
    (root / "only_test" / "train" / "good").mkdir(parents=True)
    with pytest.raises(DataError):
        load_mvtec_category(root, "only_test")
    _png(root / "no_test_imgs" / "train" / "good" / "a.png")
    (root / "no_test_imgs" / "test" / "good").mkdir(parents=True)
    with pytest.raises(DataError, match="holds no images"):
        load_mvtec_category(root, "no_test_imgs")
    with pytest.raises(DataError, match="does not exist"):
        load_mvtec_category(tmp_path / "missing", "widget")


def test_train_only_category(tmp_path):
    _png(tmp_path / "solo" / "train" / "good" / "a.PNG")
    data = load_mvtec_category(tmp_path, "solo")
    assert len(data.train) == 1 and not data.has_test and not data.has_masks


def test_load_custom_folder(tmp_path):
    for name in ("img1.png", "img10.jpg", "img2.png"):
        _png(tmp_path / "good" / name)
    _png(tmp_path / "test_good" / "g.png")
    _png(tmp_path / "defects" / "loose.png")
    _png(tmp_path / "defects" / "dent" / "d1.png")
    _png(tmp_path / "defects" / "dent" / "d2.png")
    _mask(tmp_path / "masks" / "loose_mask.png")
    _mask(tmp_path / "masks" / "dent" / "d1.png")
    data = load_custom_folder(
        tmp_path / "good",
        test_good_dir=tmp_path / "test_good",
        test_defect_dir=tmp_path / "defects",
        mask_dir=tmp_path / "masks",
        name="parts",
    )
    assert data.name == "parts"
    assert [s.path.name for s in data.train] == ["img1.png", "img2.png", "img10.jpg"]
    kinds = {s.path.name: (s.label, s.defect_type, s.mask_path) for s in data.test}
    assert kinds["g.png"][:2] == (0, "good")
    assert kinds["loose.png"][:2] == (1, "defect") and kinds["loose.png"][2].name == "loose_mask.png"
    assert kinds["d1.png"][:2] == (1, "dent") and kinds["d1.png"][2].name == "d1.png"
    assert kinds["d2.png"][2] is None
    assert data.defect_types == ("defect", "dent")

    only_good = load_custom_folder(tmp_path / "good")
    assert not only_good.has_test


def test_load_custom_folder_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images"):
        load_custom_folder(tmp_path / "empty")
    with pytest.raises(DataError, match="does not exist"):
        load_custom_folder(tmp_path / "missing")
    _png(tmp_path / "good" / "a.png")
    with pytest.raises(DataError, match="no images"):
        load_custom_folder(tmp_path / "good", test_defect_dir=tmp_path / "empty")


def test_split_train_val():
    samples = tuple(Sample(Path(f"{i}.png"), 0, "good", None) for i in range(20))
    train, val = split_train_val(samples, 0.15, seed=3)
    assert len(val) == 3 and len(train) == 17
    assert set(train).isdisjoint(val) and set(train) | set(val) == set(samples)
    assert split_train_val(samples, 0.15, seed=3) == (train, val)
    assert split_train_val(samples, 0.15, seed=4) != (train, val)
    assert len(split_train_val(samples[:2], 0.01)[1]) == 1
    assert split_train_val(samples[:1], 0.5) == (samples[:1], ())
    with pytest.raises(DataError):
        split_train_val((), 0.2)
    with pytest.raises(DataError):
        split_train_val((Sample(Path("x.png"), 1, "crack", None),), 0.2)


def test_read_image_modes(tmp_path):
    gray = _png(tmp_path / "gray.png", 77, mode="L")
    assert read_image(gray).mode == "RGB"
    assert read_image(gray).getpixel((0, 0)) == (77, 77, 77)

    sixteen = tmp_path / "16bit.png"
    Image.fromarray(np.full((8, 8), 65535 // 2, np.uint16)).save(sixteen)
    assert Image.open(sixteen).mode.startswith("I")
    img = read_image(sixteen)
    assert img.mode == "RGB" and img.getpixel((0, 0))[0] in (127, 128)

    rgba = tmp_path / "rgba.png"
    Image.new("RGBA", (8, 8), (200, 100, 50, 0)).save(rgba)
    assert read_image(rgba).getpixel((0, 0)) == (0, 0, 0)  # transparent -> black
    Image.new("RGBA", (8, 8), (200, 100, 50, 255)).save(rgba)
    assert read_image(rgba).getpixel((0, 0)) == (200, 100, 50)

    palette = tmp_path / "p.png"
    Image.new("RGB", (8, 8), (10, 200, 30)).convert("P").save(palette)
    assert read_image(palette).mode == "RGB"

    cmyk = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (8, 8), (0, 0, 0, 0)).save(cmyk)
    assert read_image(cmyk).mode == "RGB"

    tiff = tmp_path / "f.tif"
    Image.fromarray(np.full((8, 8), 0.5, np.float32)).save(tiff)
    assert read_image(tiff).getpixel((0, 0))[0] in (127, 128)


def test_read_image_exif_orientation(tmp_path):
    path = tmp_path / "rot.jpg"
    image = Image.new("RGB", (20, 10), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    image.save(path, exif=exif)
    assert read_image(path).size == (10, 20)


def test_read_image_bytes_and_stream(tmp_path):
    path = _png(tmp_path / "x.png", 10)
    data = path.read_bytes()
    assert read_image(data).size == (SIZE, SIZE)
    assert read_image(io.BytesIO(data)).size == (SIZE, SIZE)
    with pytest.raises(DataError, match=r"upload\.png"):
        read_image(b"not an image", name="upload.png")


def test_read_image_errors(tmp_path):
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"\x00\x01garbage" * 10)
    with pytest.raises(DataError, match=r"cannot read image garbage\.png"):
        read_image(garbage)
    full = _png(tmp_path / "full.png", 3, size=64).read_bytes()
    truncated = tmp_path / "trunc.png"
    truncated.write_bytes(full[: len(full) // 2])
    with pytest.raises(DataError, match=r"trunc\.png"):
        read_image(truncated)
    with pytest.raises(DataError, match="does not exist"):
        read_image(tmp_path / "missing.png")


def test_read_image_refuses_bombs(tmp_path, monkeypatch):
    import cainnflow.image_io as image_io

    monkeypatch.setattr(image_io, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(DataError, match="too large"):
        read_image(_png(tmp_path / "big.png", size=20))


def test_read_image_refuses_what_pil_only_warns_about_whatever_the_warning_filters(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 300)  # a 20 x 20 image is in PIL's warning band
    path = _png(tmp_path / "big.png", size=20)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # another thread silencing warnings must not let it through
        with pytest.raises(DataError, match="too large"):
            read_image(path)


def test_read_mask(tmp_path):
    mask = read_mask(_mask(tmp_path / "m.png"), SIZE)
    assert mask.dtype == bool and mask.shape == (SIZE, SIZE) and mask.sum() == 16
    resized = read_mask(tmp_path / "m.png", (8, 4))
    assert resized.shape == (8, 4) and set(np.unique(resized)) == {False, True}
    rgb = tmp_path / "rgb.png"
    array = np.zeros((4, 4, 3), np.uint8)
    array[0, 0, 2] = 1  # any nonzero channel counts
    Image.fromarray(array).save(rgb)
    assert read_mask(rgb, 4).sum() == 1
    one_bit = tmp_path / "b.png"
    Image.fromarray(np.eye(4, dtype=bool)).save(one_bit)
    assert read_mask(one_bit, 4).sum() == 4
    bad = tmp_path / "bad_mask.png"
    bad.write_bytes(b"nope")
    with pytest.raises(DataError, match=r"bad_mask\.png"):
        read_mask(bad, 4)


def test_preprocess():
    image = Image.new("RGB", (40, 30), (255, 0, 128))
    tensor = preprocess(image, 8, MEAN, STD)
    assert tensor.shape == (3, 8, 8) and tensor.dtype == torch.float32
    expected = (torch.tensor([1.0, 0.0, 128 / 255]) - torch.tensor(MEAN)) / torch.tensor(STD)
    assert torch.allclose(tensor[:, 0, 0], expected, atol=1e-5)


def test_anomaly_dataset_and_loader(tmp_path):
    data = load_mvtec_category(_mvtec_tree(tmp_path), "widget")
    dataset = AnomalyDataset(data.test, 8, MEAN, STD)
    assert len(dataset) == 4
    item = dataset[2]  # scratch 000 with mask
    assert isinstance(item, DatasetItem)
    assert item.image.shape == (3, 8, 8) and item.mask.shape == (1, 8, 8)
    assert item.label == 1 and item.has_mask and item.mask.sum() == 4 and item.index == 2
    no_mask = dataset[3]
    assert no_mask.label == 1 and not no_mask.has_mask and no_mask.mask.sum() == 0
    good = dataset[0]
    assert good.label == 0 and good.has_mask and good.mask.sum() == 0
    batch = next(iter(DataLoader(dataset, batch_size=4)))
    assert batch.image.shape == (4, 3, 8, 8) and batch.mask.shape == (4, 1, 8, 8)
    assert batch.label.tolist() == [0, 1, 1, 1]
    assert batch.has_mask.tolist() == [True, True, True, False]
    assert batch.index.tolist() == [0, 1, 2, 3]


def test_read_image_shrinks_on_decode(tmp_path):
    big = Image.fromarray(np.random.default_rng(0).integers(0, 255, (900, 1200, 3), dtype=np.uint8))
    for suffix in ("png", "jpg"):
        path = tmp_path / f"big.{suffix}"
        big.save(path)
        small = read_image(path, max_side=256)
        assert max(small.size) == 256 and small.mode == "RGB"
        assert abs(small.size[0] / small.size[1] - 1200 / 900) < 0.02
    assert read_image(big, max_side=100).size == (100, 75)
    assert read_image(big.convert("L")).mode == "RGB"
