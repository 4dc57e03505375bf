"""Tests for the synthetic demo dataset generator."""

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from cainnflow.data import list_categories, load_mvtec_category, read_mask
from cainnflow.demo_data import (
    COMPLETE_MARKER,
    DEMO_CATEGORIES,
    DEMO_DEFECTS,
    TEST_SPLIT_MARKER,
    demo_dataset_ready,
    demo_test_split_ready,
    make_demo_dataset,
    render_demo_sample,
)
from cainnflow.errors import DataError

SMALL = {"image_size": 96, "n_train": 4, "n_test_good": 2, "n_test_per_defect": 2}


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory):
    return make_demo_dataset(tmp_path_factory.mktemp("demo"), seed=0, **SMALL)


def _files(root):
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_categories_cover_texture_surface_object():
    assert len(DEMO_CATEGORIES) >= 3
    assert all(len(DEMO_DEFECTS[c]) >= 3 for c in DEMO_CATEGORIES)


def test_layout_loads_as_mvtec(demo_root):
    assert demo_dataset_ready(demo_root)
    assert list_categories(demo_root) == sorted(DEMO_CATEGORIES)
    assert "synthetic" in (demo_root / "README.txt").read_text().lower()
    for category in DEMO_CATEGORIES:
        data = load_mvtec_category(demo_root, category)
        assert len(data.train) == SMALL["n_train"]
        assert data.defect_types == tuple(sorted(DEMO_DEFECTS[category]))
        assert data.n_anomalous == SMALL["n_test_per_defect"] * len(DEMO_DEFECTS[category])
        assert data.has_masks
        for sample in data.test:
            if sample.label == 1:
                mask_image = Image.open(sample.mask_path)
                assert mask_image.mode == "L" and set(np.unique(np.asarray(mask_image))) <= {0, 255}
                assert read_mask(sample.mask_path, SMALL["image_size"]).any()
        image = Image.open(data.train[0].path)
        assert image.mode == "RGB" and image.size == (SMALL["image_size"],) * 2


def test_deterministic_same_bytes(demo_root, tmp_path):
    again = make_demo_dataset(tmp_path / "again", seed=0, categories=("pill_disc",), **SMALL)
    first = _files(demo_root / "pill_disc")
    second = _files(again / "pill_disc")
    assert first == second
    other = make_demo_dataset(tmp_path / "other", seed=1, categories=("pill_disc",), **SMALL)
    assert _files(other / "pill_disc") != first


def test_worker_threads_write_the_same_bytes(demo_root, tmp_path):
    one = make_demo_dataset(tmp_path / "one", seed=0, categories=("carpet_weave",), workers=1, **SMALL)
    four = make_demo_dataset(tmp_path / "four", seed=0, categories=("carpet_weave",), workers=4, **SMALL)
    assert _files(one / "carpet_weave") == _files(four / "carpet_weave") == _files(demo_root / "carpet_weave")


def test_test_split_is_usable_before_the_training_images(tmp_path):
    """The test split is written first and marked, so an app can show it while training images come."""
    root = make_demo_dataset(tmp_path, categories=("carpet_weave",), **SMALL)
    cat_dir = root / "carpet_weave"
    assert (cat_dir / TEST_SPLIT_MARKER).is_file()
    full = load_mvtec_category(root, "carpet_weave")
    shutil.rmtree(cat_dir / "train")  # as if the training images were still being written
    (cat_dir / COMPLETE_MARKER).unlink()
    assert demo_test_split_ready(root, "carpet_weave") and not demo_dataset_ready(
        root, categories=("carpet_weave",)
    )
    with pytest.raises(DataError, match="no training images"):
        load_mvtec_category(root, "carpet_weave")
    preview = load_mvtec_category(root, "carpet_weave", require_train=False)
    assert preview.train == () and preview.test == full.test
    (cat_dir / TEST_SPLIT_MARKER).unlink()
    assert not demo_test_split_ready(root, "carpet_weave")


def test_idempotent_and_regenerates_half_written(tmp_path):
    root = make_demo_dataset(tmp_path, categories=("metal_plate",), **SMALL)
    image = next((root / "metal_plate" / "train" / "good").iterdir())
    mtime = image.stat().st_mtime_ns
    make_demo_dataset(tmp_path, categories=("metal_plate",), **SMALL)
    assert image.stat().st_mtime_ns == mtime  # complete -> skipped
    (root / "metal_plate" / COMPLETE_MARKER).unlink()
    image.unlink()
    assert not demo_dataset_ready(root, categories=("metal_plate",))
    make_demo_dataset(tmp_path, categories=("metal_plate",), **SMALL)
    assert image.exists() and demo_dataset_ready(root, categories=("metal_plate",))
    assert not demo_dataset_ready(root)  # other categories were not generated


def test_refuses_foreign_folder_and_bad_args(tmp_path):
    (tmp_path / "carpet_weave").mkdir()
    (tmp_path / "carpet_weave" / "mine.txt").write_text("user data")
    with pytest.raises(DataError, match="refusing"):
        make_demo_dataset(tmp_path, categories=("carpet_weave",), **SMALL)
    with pytest.raises(DataError, match="unknown demo category"):
        make_demo_dataset(tmp_path, categories=("bottle",))
    with pytest.raises(ValueError):
        render_demo_sample("pill_disc", difficulty=0)


def test_normal_images_vary():
    a = render_demo_sample("carpet_weave", index=0, image_size=96).image.astype(float)
    b = render_demo_sample("carpet_weave", index=1, image_size=96).image.astype(float)
    assert np.abs(a - b).mean() > 5


@pytest.mark.parametrize("category", DEMO_CATEGORIES)
def test_masks_aligned_with_defects(category):
    size = 128
    normals = np.stack(
        [render_demo_sample(category, split="test", index=i, image_size=size).image for i in range(4)]
    ).astype(float)
    typical = normals.mean(axis=0)
    for defect in DEMO_DEFECTS[category]:
        ratios = []
        for index in range(2):
            sample = render_demo_sample(category, split="test", defect=defect, index=index, image_size=size)
            mask = sample.mask
            assert mask.any() and mask.mean() < 0.1  # small, non-empty
            change = np.abs(sample.image.astype(float) - sample.clean).sum(-1)
            assert change[mask].mean() > 5 * max(change[~mask].mean(), 0.05), (defect, index)
            # against the typical normal image, as a model would see it
            diff = np.abs(sample.image.astype(float) - typical).sum(-1)
            ratios.append(diff[mask].mean() / diff[~mask].mean())
        if defect != "stain":  # stains change texture more than intensity, by design
            assert np.mean(ratios) > 1.0, (defect, ratios)


def test_difficulty_scales_contrast():
    easy = render_demo_sample("metal_plate", split="test", defect="scratch", difficulty=0.5, image_size=96)
    hard = render_demo_sample("metal_plate", split="test", defect="scratch", difficulty=2.0, image_size=96)
    assert np.array_equal(easy.mask, hard.mask)
    change_easy = np.abs(easy.image.astype(float) - easy.clean)[easy.mask].mean()
    change_hard = np.abs(hard.image.astype(float) - hard.clean)[hard.mask].mean()
    assert change_easy > 2 * change_hard


# Pinned renders of the first three categories (sha256 of image + mask bytes, first 16 hex
# digits), recorded before the structural categories were added: they must never change.
PINNED = {
    ("carpet_weave", "train", "good", 0, 96): "cdd2be5e34469476",
    ("carpet_weave", "test", "cut", 1, 96): "fe10da4f7285fdff",
    ("carpet_weave", "test", "thread", 2, 256): "975c97153ce514f2",
    ("metal_plate", "test", "good", 3, 96): "cb3bcede672abff7",
    ("metal_plate", "test", "dent", 1, 96): "75d26ec76427c014",
    ("metal_plate", "test", "stain", 2, 256): "83d1b26c7ab3f5b6",
    ("pill_disc", "train", "good", 0, 256): "8e8c5a8e37e5995d",
    ("pill_disc", "test", "chip", 1, 96): "ec197ef9e54ab7b5",
    ("pill_disc", "test", "stain", 2, 96): "222db086b1e17121",
}
STRUCTURAL = ("circuit_board", "blister_pack")


@pytest.mark.parametrize(("key", "digest"), PINNED.items(), ids=lambda k: "-".join(map(str, k)))
def test_original_categories_unchanged(key, digest):
    category, split, defect, index, size = key
    sample = render_demo_sample(category, split=split, defect=defect, index=index, image_size=size)
    assert hashlib.sha256(sample.image.tobytes() + sample.mask.tobytes()).hexdigest()[:16] == digest


def test_structural_categories_registered():
    for category in STRUCTURAL:
        assert category in DEMO_CATEGORIES
        assert len(DEMO_DEFECTS[category]) >= 4
    assert DEMO_CATEGORIES[:3] == ("carpet_weave", "metal_plate", "pill_disc")


@pytest.mark.parametrize("category", STRUCTURAL)
def test_structural_defects_change_only_their_footprint(category):
    size = 128
    reach = 6  # pixels: soft shadows may fall just outside a part's footprint
    for defect in DEMO_DEFECTS[category]:
        for index in range(3):
            sample = render_demo_sample(category, split="test", defect=defect, index=index, image_size=size)
            changed = np.abs(sample.image.astype(int) - sample.clean).max(axis=-1) > 0
            near = ndimage.binary_dilation(sample.mask, iterations=reach)
            assert sample.mask.any() and sample.mask.mean() < 0.1, (defect, index)
            assert not changed[~near].any(), (defect, index)  # nothing else moved
            assert changed[sample.mask].mean() > 0.3, (defect, index)  # the masked part did change


@pytest.mark.parametrize("category", STRUCTURAL)
def test_structural_layout_is_fixed(category):
    """Good images differ little from each other; a defect differs from them inside its mask."""
    size = 128
    goods = [render_demo_sample(category, index=i, image_size=size).image.astype(float) for i in range(4)]
    typical = np.median(goods, axis=0)
    normal_diff = np.mean([np.abs(g - typical).sum(-1).mean() for g in goods])
    for defect in DEMO_DEFECTS[category]:
        sample = render_demo_sample(category, split="test", defect=defect, index=0, image_size=size)
        diff = np.abs(sample.image.astype(float) - typical).sum(-1)
        assert diff[sample.mask].mean() > 2 * normal_diff, defect


def test_difficulty_scales_shift():
    easy = render_demo_sample("circuit_board", split="test", defect="shifted", difficulty=0.5, image_size=128)
    hard = render_demo_sample("circuit_board", split="test", defect="shifted", difficulty=3.0, image_size=128)
    assert easy.mask.sum() > hard.mask.sum()  # footprints overlap more when the shift is small
    missing = render_demo_sample("blister_pack", split="test", defect="empty", image_size=128)
    assert missing.mask.sum() < easy.mask.sum() * 4  # one tablet's footprint, not the pack


def test_structural_generation_deterministic(tmp_path):
    kwargs = {**SMALL, "categories": STRUCTURAL}
    a = make_demo_dataset(tmp_path / "a", seed=0, **kwargs)
    b = make_demo_dataset(tmp_path / "b", seed=0, **kwargs)
    for category in STRUCTURAL:
        assert _files(a / category) == _files(b / category)
        data = load_mvtec_category(a, category)
        assert data.has_masks and data.defect_types == tuple(sorted(DEMO_DEFECTS[category]))


# Every file of a tiny generated dataset, per category (sha256 over relative path + bytes, first
# 16 hex digits), recorded before demo_data became a package: the shipped demo checkpoint and
# its export were trained on these bytes, so they must never change.
PINNED_TREES = {
    "carpet_weave": "1bdb6853d319c2b6",
    "metal_plate": "867033ca9017b7b2",
    "pill_disc": "2cb50daa714d48e8",
    "circuit_board": "f7d499e83e408c9e",
    "blister_pack": "f8853229715c3f0e",
}


def test_generated_files_unchanged(tmp_path):
    root = make_demo_dataset(tmp_path, seed=0, image_size=64, n_train=2, n_test_good=1, n_test_per_defect=1)
    assert tuple(PINNED_TREES) == DEMO_CATEGORIES
    for category, digest in PINNED_TREES.items():
        h = hashlib.sha256()
        for path, payload in _files(root / category).items():
            h.update(str(Path(category) / path).encode())
            h.update(payload)
        assert h.hexdigest()[:16] == digest, category
