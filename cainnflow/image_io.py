"""Image and mask reading: the decode guard every image read in cainnflow goes through.

:func:`read_image` turns anything PIL can decode (paths, bytes, uploads, PIL images; grayscale,
palette, alpha, 16-bit, float, CMYK, EXIF-rotated) into a bounded 8-bit RGB image, and
:func:`read_mask` a ground-truth mask into a bool array. Pixels are counted from the header
before decoding, large images are decoded reduced, and every failure is one-line
:class:`~cainnflow.errors.DataError`. :mod:`cainnflow.data` re-exports the public names.
"""

from __future__ import annotations

import contextlib
import io
import threading
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, UnidentifiedImageError

from cainnflow.errors import DataError

__all__ = [
    "IMAGE_EXTENSIONS",
    "LARGE_DECODE_PIXELS",
    "MAX_IMAGE_PIXELS",
    "MAX_WORKING_SIDE",
    "ImageSource",
    "read_image",
    "read_mask",
]

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
    # PIL only warns between its own limit and twice that; the refusal is made here, from the
    # header, rather than by turning the warning into an error: warning filters are
    # process-wide, and another thread may have changed them.
    limit = min(max_pixels, Image.MAX_IMAGE_PIXELS or max_pixels)
    if width * height > limit:
        image.close()
        raise DataError(
            f"cannot read {what} {display}: {width}x{height} pixels is too large "
            f"(limit {limit / 1e6:.3g} megapixels)"
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
    except Image.DecompressionBombError as exc:  # PIL's own, beyond twice its limit
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
