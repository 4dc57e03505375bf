"""Datasets: MVTec AD folders, custom folders, robust image / mask reading and preprocessing.

The MVTec AD layout is::

    CATEGORY/train/good/*.png
    CATEGORY/test/good/*.png
    CATEGORY/test/<defect>/*.png
    CATEGORY/ground_truth/<defect>/<stem>_mask.png

A defect image without a mask keeps ``mask_path=None``: it still counts for image-level
metrics but is left out of pixel-level ones (no zero mask is ever invented).
"""

from __future__ import annotations

import contextlib
import io
import re
import threading
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, NamedTuple

import numpy as np
from PIL import Image, UnidentifiedImageError

from cainnflow.errors import DataError

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
    "Sample",
    "find_images",
    "list_categories",
    "load_custom_folder",
    "load_mvtec_category",
    "preprocess",
    "preprocess_image",
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

#: Largest image (in pixels) that is decoded; bigger files are refused as decompression bombs.
MAX_IMAGE_PIXELS = 16_384 * 16_384
#: Longest side :func:`read_image` keeps by default (the models work at 512 px or less).
MAX_WORKING_SIDE = 2048
#: Decodes of images above this many pixels run one at a time (their transient memory adds up).
LARGE_DECODE_PIXELS = 16_000_000
_LARGE_DECODES = threading.Lock()

_UINT8_MAX = 255
_UINT16_MAX = 65_535
_UINT16_TO_UINT8 = 257  # 65535 / 255
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I"})
_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})

# Formats PIL registers but cannot decode without extra plugins, or that are not raster images.
_UNREADABLE_FORMATS = frozenset({"BUFR", "GRIB", "HDF5", "EPS", "WMF", "PDF", "MPEG"})


def _readable_extensions() -> frozenset[str]:
    Image.init()
    return frozenset(
        ext.lower()
        for ext, fmt in Image.registered_extensions().items()
        if fmt in Image.OPEN and fmt not in _UNREADABLE_FORMATS
    )


#: Lower-case file extensions (with the dot) PIL can read; matched case-insensitively.
IMAGE_EXTENSIONS: frozenset[str] = _readable_extensions()


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


ImageSource = Image.Image | str | Path | bytes | bytearray | BinaryIO
"""Anything an image can be read from: a decoded PIL image, a path, file bytes or a file object."""


def _source_name(source: ImageSource, name: str | None) -> str:
    if name is not None:
        return name
    if isinstance(source, str | Path):
        return Path(source).name
    stream_name = getattr(source, "name", None)
    return Path(stream_name).name if isinstance(stream_name, str) and stream_name else "<uploaded image>"


def _shrink(image: Image.Image, max_side: int | None) -> Image.Image:
    if max_side is not None and max(image.size) > max_side:
        image = image.copy()
        image.thumbnail((max_side, max_side), Image.Resampling.BILINEAR)
    return image


def _open_image(source: ImageSource, display: str, what: str, max_side: int | None = None) -> Image.Image:
    """Open and fully decode an image, turning every failure into a one-line DataError."""
    return _decode(source, display, what, max_side=max_side, max_pixels=MAX_IMAGE_PIXELS)


def _open_checked(source: ImageSource, display: str, what: str, max_pixels: int) -> Image.Image:
    """Opens an image (header only) and refuses it before decoding when it has too many pixels."""
    if isinstance(source, bytes | bytearray):
        source = io.BytesIO(bytes(source))
    elif isinstance(source, str | Path):
        path = Path(source)
        if not path.exists():
            raise DataError(f"cannot read {what} {display}: file does not exist")
        if path.is_dir():
            raise DataError(f"cannot read {what} {display}: it is a folder")
    image = Image.open(source)
    width, height = image.size
    if width * height > max_pixels:
        image.close()
        raise DataError(
            f"cannot read {what} {display}: {width}x{height} pixels is too large "
            f"(limit {max_pixels / 1e6:.3g} megapixels)"
        )
    return image


def _reducible(image: Image.Image) -> Image.Image:
    """``image`` in a mode :meth:`PIL.Image.Image.reduce` averages correctly (P, 1, I;16 are not)."""
    if image.mode == "P":
        return image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode == "1":
        return image.convert("L")
    if image.mode in _SIXTEEN_BIT_MODES and image.mode != "I":
        return image.convert("I")
    return image


def _decode(
    source: ImageSource, display: str, what: str, *, max_side: int | None, max_pixels: int
) -> Image.Image:
    """The decode guard every image read goes through.

    Pixels are counted from the header before anything is decoded; JPEGs are decoded at a
    reduced scale (``draft``), other formats are reduced by an integer factor right after
    decoding, so what is kept is at most about ``2 * max_side`` wide. Decodes of more than
    :data:`LARGE_DECODE_PIXELS` pixels run one at a time in this process, which caps the
    transient memory of many large images arriving at once.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = _open_checked(source, display, what, max_pixels)
            orientation = _orientation(image)
            width, height = image.size
            large = width * height > LARGE_DECODE_PIXELS
            if max_side is not None and max(width, height) > max_side:
                image.draft(image.mode, (max_side, max_side))  # JPEG: decode at a reduced scale
            with _LARGE_DECODES if large else contextlib.nullcontext():
                image.load()
                if max_side is not None and (factor := max(image.size) // max_side) >= 2:
                    image = _reducible(image).reduce(factor)
            for step in _ORIENTATIONS.get(orientation, ()):  # EXIF orientation, after reducing
                image = image.transpose(step)
    except DataError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DataError(f"cannot read {what} {display}: image is too large ({exc})") from exc
    except UnidentifiedImageError as exc:
        raise DataError(f"cannot read {what} {display}: not a recognised image file") from exc
    except (OSError, SyntaxError, ValueError, EOFError, TypeError, MemoryError) as exc:
        raise DataError(f"cannot read {what} {display}: {exc}") from exc
    return image


_ORIENTATION_TAG = 0x0112
_ORIENTATIONS = {
    2: (Image.Transpose.FLIP_LEFT_RIGHT,),
    3: (Image.Transpose.ROTATE_180,),
    4: (Image.Transpose.FLIP_TOP_BOTTOM,),
    5: (Image.Transpose.TRANSPOSE,),
    6: (Image.Transpose.ROTATE_270,),
    7: (Image.Transpose.TRANSVERSE,),
    8: (Image.Transpose.ROTATE_90,),
}


def _orientation(image: Image.Image) -> int:
    """The EXIF orientation (1-8) recorded in an opened image; 1 when absent or unreadable."""
    try:
        value = image.getexif().get(_ORIENTATION_TAG, 1)
    except Exception:  # a broken EXIF block must not make the image unreadable
        return 1
    return value if isinstance(value, int) else 1


def _scale_to_uint8(array: np.ndarray) -> np.ndarray:
    """Scale a single-channel integer/float array to uint8 (16-bit → /257, floats in [0, 1] → ×255)."""
    array = np.asarray(array)
    if array.dtype == np.uint8:
        return array
    values = array.astype(np.float64)
    finite = np.isfinite(values)
    if not finite.any():
        return np.zeros(array.shape, dtype=np.uint8)
    values = np.where(finite, values, 0.0)
    low, high = float(values.min()), float(values.max())
    if np.issubdtype(array.dtype, np.floating):
        if low >= 0.0 and high <= 1.0:
            values = values * _UINT8_MAX
        elif high > _UINT8_MAX or low < 0.0:
            values = (values - low) / max(high - low, np.finfo(np.float64).eps) * _UINT8_MAX
    elif low >= 0 and high <= _UINT8_MAX:
        pass
    elif low >= 0 and high <= _UINT16_MAX:
        values = values / _UINT16_TO_UINT8
    else:
        values = (values - low) / max(high - low, 1.0) * _UINT8_MAX
    return np.clip(np.rint(values), 0, _UINT8_MAX).astype(np.uint8)


def _to_rgb(image: Image.Image) -> Image.Image:
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in _SIXTEEN_BIT_MODES or mode == "F":
        return Image.fromarray(_scale_to_uint8(np.asarray(image)), mode="L").convert("RGB")
    if mode == "P" and "transparency" in image.info:
        image, mode = image.convert("RGBA"), "RGBA"
    if mode in _ALPHA_MODES:
        rgba = image.convert("RGBA")
        black = Image.new("RGBA", rgba.size, (0, 0, 0, _UINT8_MAX))
        return Image.alpha_composite(black, rgba).convert("RGB")
    return image.convert("RGB")


def read_image(
    source: ImageSource,
    name: str | None = None,
    *,
    max_side: int | None = MAX_WORKING_SIDE,
    max_pixels: int | None = None,
) -> Image.Image:
    """Read any image PIL can decode as an 8-bit RGB image.

    Handles grayscale, palette, RGBA / LA (composited on black), 16-bit and 32-bit integer
    grayscale (scaled to 8 bit), float, CMYK and EXIF orientation; multi-frame files give
    their first frame.

    Args:
        source: A path, the file bytes, a binary file-like object (for example an upload), or
            an already decoded PIL image (converted to RGB).
        name: Name to use in error messages (defaults to the file name).
        max_side: The image is shrunk (aspect kept) so neither side exceeds it; JPEGs are
            decoded at reduced size directly, other formats reduced right after decoding.
            Default :data:`MAX_WORKING_SIDE`; None keeps the full resolution.
        max_pixels: Refuse images with more pixels than this (counted from the header,
            before decoding); at most :data:`MAX_IMAGE_PIXELS`.

    Returns:
        An RGB image.

    Raises:
        DataError: the file is missing, corrupt, truncated, not an image or too large.
    """
    if isinstance(source, Image.Image):
        return _shrink(_to_rgb(source), max_side)
    display = _source_name(source, name)
    limit = MAX_IMAGE_PIXELS if max_pixels is None else min(max_pixels, MAX_IMAGE_PIXELS)
    image = _decode(source, display, "image", max_side=max_side, max_pixels=limit)
    try:
        return _shrink(_to_rgb(image), max_side)  # mode normalised on the reduced image
    except (OSError, SyntaxError, ValueError, TypeError, MemoryError) as exc:
        raise DataError(f"cannot read image {display}: {exc}") from exc


def _size_hw(size: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    height, width = size
    return int(height), int(width)


def read_mask(path: str | Path, size: int | tuple[int, int]) -> np.ndarray:
    """Read a ground-truth mask; any nonzero pixel (in any colour channel) is a defect.

    Args:
        path: Mask file (``1``, ``L``, ``P``, ``RGB``, 16-bit, ... modes).
        size: Output size, an int for a square or ``(height, width)``.

    Returns:
        Bool array ``(H, W)``, resized with nearest-neighbour interpolation.

    Raises:
        DataError: the mask file cannot be read.
    """
    path = Path(path)
    height, width = _size_hw(size)
    image = _open_image(path, path.name, "mask")  # EXIF orientation applied there
    try:
        if image.mode == "P":
            image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        array = np.asarray(image)
    except (OSError, SyntaxError, ValueError, TypeError) as exc:
        raise DataError(f"cannot read mask {path.name}: {exc}") from exc
    if array.ndim == 3:
        colour = array[..., :3] if image.mode in _ALPHA_MODES else array
        defect = np.any(colour != 0, axis=-1)
    else:
        defect = array != 0
    resized = Image.fromarray(defect.astype(np.uint8) * _UINT8_MAX, mode="L").resize(
        (width, height), Image.Resampling.NEAREST
    )
    return np.asarray(resized) > 0


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
