"""Datasets: MVTec AD folders, custom folders, samples and preprocessing.

The MVTec AD layout is::

    CATEGORY/train/good/*.png
    CATEGORY/test/good/*.png
    CATEGORY/test/<defect>/*.png
    CATEGORY/ground_truth/<defect>/<stem>_mask.png

A defect image without a mask keeps ``mask_path=None``: it still counts for image-level
metrics but is left out of pixel-level ones (no zero mask is ever invented).

Image and mask reading (the decode guard) live in :mod:`cainnflow.image_io`; this module
re-exports :func:`read_image`, :func:`read_mask` and their limits, so imports from here keep
working.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
from PIL import Image

from cainnflow.errors import DataError
from cainnflow.image_io import (
    _UINT8_MAX,
    IMAGE_EXTENSIONS,
    MAX_IMAGE_PIXELS,
    MAX_WORKING_SIDE,
    ImageSource,
    _to_rgb,
    read_image,
    read_mask,
)

if TYPE_CHECKING:
    import torch

__all__ = [
    "ANOMALOUS_LABEL",
    "DEFAULT_VAL_FRACTION",
    "GOOD_LABEL",
    "GOOD_TYPE",
    "IMAGE_EXTENSIONS",
    "MAX_IMAGE_PIXELS",
    "MAX_WORKING_SIDE",
    "MVTEC_CATEGORIES",
    "AnomalyDataset",
    "CategoryData",
    "DatasetItem",
    "ImageSource",
    "Sample",
    "find_images",
    "list_categories",
    "load_custom_folder",
    "load_mvtec_category",
    "preprocess",
    "preprocess_image",
    "preprocess_images",
    "read_image",
    "read_mask",
    "sample_mask",
    "split_train_val",
]

MVTEC_CATEGORIES: tuple[str, ...] = (
    "bottle",
    "cable",
    "capsule",
    "carpet",
    "grid",
    "hazelnut",
    "leather",
    "metal_nut",
    "pill",
    "screw",
    "tile",
    "toothbrush",
    "transistor",
    "wood",
    "zipper",
)

GOOD_LABEL = 0
ANOMALOUS_LABEL = 1
GOOD_TYPE = "good"
CUSTOM_DEFECT_TYPE = "defect"
MASK_SUFFIX = "_mask"
DEFAULT_VAL_FRACTION = 0.15


@dataclass(frozen=True)
class Sample:
    """One image of a dataset.

    Attributes:
        path: Image file.
        label: 0 for good, 1 for anomalous.
        defect_type: ``"good"`` or the defect folder name.
        mask_path: Ground-truth mask file, or None (good images, or defects without a mask).
    """

    path: Path
    label: int
    defect_type: str
    mask_path: Path | None = None


@dataclass(frozen=True)
class CategoryData:
    """The samples of one category (an MVTec category or a custom folder set).

    Attributes:
        name: Category name.
        root: Category folder (for custom data, the folder of the good images).
        train: Good training images.
        test: Test images, good and anomalous (may be empty).
    """

    name: str
    root: Path
    train: tuple[Sample, ...]
    test: tuple[Sample, ...]

    @property
    def has_test(self) -> bool:
        """True when there is at least one test image."""
        return len(self.test) > 0

    @property
    def n_anomalous(self) -> int:
        """Number of anomalous test images."""
        return sum(1 for s in self.test if s.label == ANOMALOUS_LABEL)

    @property
    def has_masks(self) -> bool:
        """True only if there are anomalous test images and every one of them has a mask."""
        anomalous = [s for s in self.test if s.label == ANOMALOUS_LABEL]
        return bool(anomalous) and all(s.mask_path is not None for s in anomalous)

    @property
    def defect_types(self) -> tuple[str, ...]:
        """Sorted distinct defect types of the anomalous test images (``"good"`` excluded)."""
        return tuple(sorted({s.defect_type for s in self.test if s.label == ANOMALOUS_LABEL}))


# --------------------------------------------------------------------------- folder parsing


def _natural_key(path: Path) -> list[int | str]:
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", path.name)]


def _is_hidden(path: Path) -> bool:
    return path.name.startswith(".")


def _is_image_file(path: Path) -> bool:
    return path.is_file() and not _is_hidden(path) and path.suffix.lower() in IMAGE_EXTENSIONS


def find_images(folder: str | Path) -> list[Path]:
    """Image files directly inside ``folder``, hidden and non-image files ignored.

    Args:
        folder: Folder to list.

    Returns:
        Paths in natural sort order (``img2`` before ``img10``); empty if the folder is missing.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted((p for p in folder.iterdir() if _is_image_file(p)), key=_natural_key)


def _subfolders(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted((p for p in folder.iterdir() if p.is_dir() and not _is_hidden(p)), key=_natural_key)


def _require_dir(path: Path, what: str) -> None:
    if not path.exists():
        raise DataError(f"{what} {path} does not exist")
    if not path.is_dir():
        raise DataError(f"{what} {path} is not a folder")


def list_categories(root: str | Path) -> list[str]:
    """Categories under a dataset root: sub-folders having ``train/good`` with at least one image.

    Args:
        root: Dataset root (for example the MVTec AD folder).

    Returns:
        Sorted category names.

    Raises:
        DataError: ``root`` does not exist or is not a folder.
    """
    root = Path(root)
    _require_dir(root, "dataset root")
    return sorted(p.name for p in _subfolders(root) if find_images(p / "train" / GOOD_TYPE))


def _mask_index(folder: Path | None) -> dict[str, Path]:
    """Map each mask-candidate stem in ``folder`` to its file (``.png`` preferred on clashes)."""
    index: dict[str, Path] = {}
    if folder is None:
        return index
    for path in find_images(folder):
        stem = path.stem
        if stem not in index or path.suffix.lower() == ".png":
            index[stem] = path
    return index


def _find_mask(stem: str, indexes: Iterable[dict[str, Path]]) -> Path | None:
    for index in indexes:
        for key in (f"{stem}{MASK_SUFFIX}", stem):
            if key in index:
                return index[key]
    return None


def load_mvtec_category(root: str | Path, category: str, *, require_train: bool = True) -> CategoryData:
    """Load one category in the MVTec AD layout.

    Args:
        root: Dataset root holding the category folders.
        category: Category folder name.
        require_train: False: a missing or empty ``train/good`` gives ``train=()`` (to look
            at a test split on its own).

    Returns:
        Train (``train/good``) and test samples in a deterministic order (test: ``good`` first,
        then defect types alphabetically; files in natural order).

    Raises:
        DataError: the root or category is missing, ``train/good`` has no images, or a
            ``test`` folder exists but holds no images.
    """
    root = Path(root)
    _require_dir(root, "dataset root")
    cat_dir = root / category
    if not cat_dir.is_dir():
        existing = list_categories(root)
        hint = f"categories found: {', '.join(existing)}" if existing else "no categories found there"
        raise DataError(f"category folder {cat_dir} does not exist ({hint})")

    train_dir = cat_dir / "train" / GOOD_TYPE
    train_images = find_images(train_dir)
    if not train_images and require_train:
        raise DataError(f"no training images in {train_dir} (expected good images there)")
    train = tuple(Sample(p, GOOD_LABEL, GOOD_TYPE, None) for p in train_images)

    test: list[Sample] = []
    test_dir = cat_dir / "test"
    if test_dir.is_dir():
        folders = _subfolders(test_dir)
        folders.sort(key=lambda p: (p.name != GOOD_TYPE, p.name))
        for folder in folders:
            images = find_images(folder)
            if folder.name == GOOD_TYPE:
                test.extend(Sample(p, GOOD_LABEL, GOOD_TYPE, None) for p in images)
                continue
            masks = _mask_index(cat_dir / "ground_truth" / folder.name)
            test.extend(Sample(p, ANOMALOUS_LABEL, folder.name, _find_mask(p.stem, (masks,))) for p in images)
        if not test:
            raise DataError(f"test folder {test_dir} holds no images (expected test/<good|defect>/*.png)")
    return CategoryData(name=category, root=cat_dir, train=train, test=tuple(test))


def load_custom_folder(
    good_dir: str | Path,
    *,
    test_good_dir: str | Path | None = None,
    test_defect_dir: str | Path | None = None,
    mask_dir: str | Path | None = None,
    name: str = "custom",
) -> CategoryData:
    """Load a custom layout: a folder of good images plus optional test folders.

    Args:
        good_dir: Good images to train on.
        test_good_dir: Good test images.
        test_defect_dir: Defective test images; images directly inside get the defect type
            ``"defect"``, images in sub-folders get the sub-folder name as defect type.
        mask_dir: Masks found by image stem (``<stem>_mask.*`` or ``<stem>.*``), first in
            ``mask_dir/<defect_type>/`` and then in ``mask_dir`` itself.
        name: Category name to report.

    Returns:
        The category data.

    Raises:
        DataError: a given folder is missing or has no images.
    """
    good_path = Path(good_dir)
    _require_dir(good_path, "good-image folder")
    train_images = find_images(good_path)
    if not train_images:
        raise DataError(f"no images in good-image folder {good_path}")
    train = tuple(Sample(p, GOOD_LABEL, GOOD_TYPE, None) for p in train_images)

    test: list[Sample] = []
    if test_good_dir is not None:
        test_good = Path(test_good_dir)
        _require_dir(test_good, "test good-image folder")
        images = find_images(test_good)
        if not images:
            raise DataError(f"no images in test good-image folder {test_good}")
        test.extend(Sample(p, GOOD_LABEL, GOOD_TYPE, None) for p in images)

    mask_root = None
    if mask_dir is not None:
        mask_root = Path(mask_dir)
        _require_dir(mask_root, "mask folder")
    root_masks = _mask_index(mask_root)

    if test_defect_dir is not None:
        defect_root = Path(test_defect_dir)
        _require_dir(defect_root, "defect-image folder")
        groups: list[tuple[str, list[Path]]] = [(CUSTOM_DEFECT_TYPE, find_images(defect_root))]
        groups += [(sub.name, find_images(sub)) for sub in _subfolders(defect_root)]
        n_before = len(test)
        for defect_type, images in groups:
            type_masks = _mask_index(mask_root / defect_type) if mask_root is not None else {}
            test.extend(
                Sample(p, ANOMALOUS_LABEL, defect_type, _find_mask(p.stem, (type_masks, root_masks)))
                for p in images
            )
        if len(test) == n_before:
            raise DataError(f"no images in defect-image folder {defect_root} or its sub-folders")

    return CategoryData(name=name, root=good_path, train=train, test=tuple(test))


def split_train_val(
    samples: Sequence[Sample], val_fraction: float = DEFAULT_VAL_FRACTION, seed: int = 0
) -> tuple[tuple[Sample, ...], tuple[Sample, ...]]:
    """Deterministically carve a validation set out of good training samples.

    Args:
        samples: Good training samples (label 0).
        val_fraction: Fraction for validation in ``[0, 1)``; with ``> 0`` and at least two
            samples, validation gets at least one and training keeps at least one.
        seed: Random seed.

    Returns:
        ``(train, val)``, each in the original order.

    Raises:
        DataError: no samples, or an anomalous sample was given.
        ValueError: ``val_fraction`` outside ``[0, 1)``.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    samples = tuple(samples)
    if not samples:
        raise DataError("cannot split an empty training set")
    if any(s.label != GOOD_LABEL for s in samples):
        raise DataError("the validation split is carved from good training images only")
    n = len(samples)
    n_val = round(n * val_fraction)
    n_val = min(max(n_val, 1), n - 1) if val_fraction > 0 and n >= 2 else 0
    order = np.random.default_rng(seed).permutation(n)
    val_idx = set(order[:n_val].tolist())
    train = tuple(s for i, s in enumerate(samples) if i not in val_idx)
    val = tuple(s for i, s in enumerate(samples) if i in val_idx)
    return train, val


# --------------------------------------------------------------------------- image reading


def preprocess_image(
    image: Image.Image, size: int, mean: Sequence[float], std: Sequence[float]
) -> np.ndarray:
    """Resize (bilinear, antialiased), scale to ``[0, 1]`` and normalise an image, in numpy.

    The one preprocessing of every engine: :func:`preprocess` (PyTorch) wraps it, and the
    exported runtime (:mod:`cainnflow.runtime`) calls it directly.

    Args:
        image: Input image (converted to RGB if needed).
        size: Output side length.
        mean: Per-channel mean to subtract.
        std: Per-channel standard deviation to divide by.

    Returns:
        Float32 array ``(3, size, size)``.
    """
    if image.mode != "RGB":
        image = _to_rgb(image)
    if image.size != (size, size):
        # PIL's bilinear filter widens its support when downsampling, i.e. it antialiases.
        image = image.resize((size, size), Image.Resampling.BILINEAR)
    array = np.asarray(image, dtype=np.float32) / _UINT8_MAX
    chw = np.ascontiguousarray(array.transpose(2, 0, 1))
    mean_a = np.asarray(mean, dtype=np.float32).reshape(3, 1, 1)
    std_a = np.asarray(std, dtype=np.float32).reshape(3, 1, 1)
    return (chw - mean_a) / std_a


def preprocess_images(
    images: Sequence[ImageSource], size: int, mean: Sequence[float], std: Sequence[float]
) -> np.ndarray:
    """PIL images, paths or bytes, each read by :func:`read_image` → float32 ``(N, 3, size, size)``:
    the batch both engines score. Raises DataError: no images, or one cannot be read (named)."""
    if not images:
        raise DataError("no images given")
    return np.stack([preprocess_image(read_image(item), size, mean, std) for item in images])


def preprocess(
    image: Image.Image,
    size: int,
    mean: tuple[float, float, float],
    std: tuple[float, float, float],
) -> torch.Tensor:
    """:func:`preprocess_image` as a float32 tensor ``(3, size, size)``."""
    import torch  # lazily: folder parsing and image reading stay usable without torch

    return torch.from_numpy(preprocess_image(image, size, mean, std))


def sample_mask(sample: Sample, size: int) -> tuple[np.ndarray, bool]:
    """A test sample's ground truth ``(size, size)`` bool and whether it is real ground truth.

    Good images have an exact all-zero mask; a defect without a mask file gets zeros that
    count for nothing (``False``), so pixel metrics leave it out.
    """
    if sample.mask_path is not None:
        return read_mask(sample.mask_path, size), True
    return np.zeros((size, size), dtype=bool), sample.label == GOOD_LABEL


class DatasetItem(NamedTuple):
    """One dataset item.

    Attributes:
        image: Normalised image ``(3, S, S)``.
        label: 0 good, 1 anomalous.
        mask: Ground truth ``(1, S, S)`` float 0/1; zeros for good images and for defects
            without a mask.
        has_mask: Whether ``mask`` is real ground truth (True for good images).
        index: Position of the sample in the dataset.
    """

    image: torch.Tensor
    label: int
    mask: torch.Tensor
    has_mask: bool
    index: int


class AnomalyDataset:
    """Map-style torch dataset over :class:`Sample` objects; works with the default DataLoader collate.

    Args:
        samples: Samples to serve.
        image_size: Side length ``S`` of the square output.
        mean: Per-channel normalisation mean.
        std: Per-channel normalisation standard deviation.
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        image_size: int,
        mean: tuple[float, float, float],
        std: tuple[float, float, float],
    ) -> None:
        self.samples: tuple[Sample, ...] = tuple(samples)
        self.image_size = image_size
        self.mean = tuple(mean)
        self.std = tuple(std)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> DatasetItem:
        import torch

        sample = self.samples[index]
        image = preprocess(read_image(sample.path), self.image_size, self.mean, self.std)
        mask_np, has_mask = sample_mask(sample, self.image_size)
        mask = torch.from_numpy(mask_np.astype(np.float32)).unsqueeze(0)
        return DatasetItem(image=image, label=sample.label, mask=mask, has_mask=has_mask, index=index)
