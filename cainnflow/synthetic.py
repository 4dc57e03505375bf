"""Synthetic anomalies pasted into good images, for validation without any real defect.

Each kind edits one region of a good image and returns the edited image with the exact mask
of that region: nothing outside the mask changes, and a region whose edit would change too
little (a flat background, say) is placed again elsewhere.

* ``cutpaste``: a patch of the same or another good image, rotated and rescaled, pasted in.
* ``noise``: a smooth random texture of a foreign colour blended over the region.
* ``warp``: a local elastic warp (the content is pushed and swirled, nothing is added).
* ``erase``: the region removed and filled from its blurred surroundings or a flat colour.
* ``colour``: a colour / brightness shift blob.

Fine and faint kinds (:data:`FINE_KINDS`), like the defects that region-sized ones miss —
thin cracks, pin-holes, scratches, a large but faint change of surface:

* ``crack``: a thin jagged dark (or light) line, 1–3 px wide at the model's input size.
* ``pinhole``: a small dark pit, 2–4 px across at the model's input size.
* ``scratch``: a thin straight light (or dark) line.
* ``smooth``: a large region whose texture is blurred away (a polished or uneven surface),
  its mean brightness nearly kept.

Generation is deterministic given the seed, and sample ``i`` does not depend on ``n`` (the
first five of ten samples are the five samples of ``n=5``). Only numpy, PIL and scipy are
used. Example::

    samples = make_synthetic_anomalies(held_out_good_images, n=20, seed=0)
    result = evaluate_synthetic(detector, other_good_images, samples)
    print(result.image_auroc, result.pixel_auroc)

This is what a settings search can score candidates on when it must never read a test
split: hold out some good training images, paste anomalies into them, and compare.

Over 500 lines: nine kinds, their region shapes and the one placement and masking routine
they share; split apart, every kind would import the placement and the placement every kind.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
from PIL import Image
from scipy import ndimage

from .demo_data.raster import blob_distance, grid
from .errors import DataError
from .metrics import image_auroc, pixel_auroc

if TYPE_CHECKING:
    from .detector import Detector

__all__ = [
    "ALL_KINDS",
    "DEFAULT_AREA",
    "FINE_KINDS",
    "SYNTHETIC_KINDS",
    "SyntheticEvaluation",
    "SyntheticSample",
    "evaluate_synthetic",
    "f1_threshold",
    "make_synthetic_anomalies",
    "synthesize",
]

SYNTHETIC_KINDS: tuple[str, ...] = ("cutpaste", "noise", "warp", "erase", "colour")
FINE_KINDS: tuple[str, ...] = ("crack", "pinhole", "scratch", "smooth")
ALL_KINDS: tuple[str, ...] = SYNTHETIC_KINDS + FINE_KINDS
MODEL_SIDE = 256  # fine kinds are sized for images seen at about this side by the model
#: Region area as a fraction of the image area, (low, high).
DEFAULT_AREA: tuple[float, float] = (0.005, 0.03)

MIN_SIDE = 16  # pixels: smaller images cannot hold a region
_MIN_MEAN_CHANGE = 5.0  # mean absolute change (0-255, over RGB) inside the mask
_MIN_CHANGED_FRACTION = 0.5  # of the mask's pixels must change visibly
_VISIBLE = 3.0  # a pixel "changed visibly" when some channel moved by at least this much
_PLACEMENT_TRIES = 12
_CANDIDATE_CENTRES = 4  # per try, the most textured of these random centres is used
_FEATHER = 0.25  # soft inner edge, as a fraction of the region radius
_WOBBLE = 0.12  # amplitude of each of the blob outline's three harmonics
_MAX_ASPECT = 1.4
_BLOB_REACH = (1 + 3 * _WOBBLE) * _MAX_ASPECT  # farthest a blob reaches, in radii
_UINT8_MAX = 255


@dataclass(frozen=True)
class SyntheticSample:
    """One good image with a synthetic anomaly.

    Attributes:
        image: the edited RGB image, the size of the source image.
        mask: bool ``(H, W)``, True exactly where the image was edited.
        kind: one of :data:`SYNTHETIC_KINDS`.
        source: index of the good image it was made from.
    """

    image: Image.Image
    mask: np.ndarray
    kind: str
    source: int


@dataclass(frozen=True)
class SyntheticEvaluation:
    """How a detector ranks synthetic anomalies against good images.

    Attributes:
        image_auroc: image-level AUROC, good images vs edited ones.
        pixel_auroc: pixel AUROC over all images (good images contribute all-normal masks).
        n_good: good images scored.
        n_anomalous: edited images scored.
    """

    image_auroc: float | None
    pixel_auroc: float | None
    n_good: int
    n_anomalous: int


# --------------------------------------------------------------------------- regions


def _blob(rng: np.random.Generator, shape: tuple[int, int], centre: np.ndarray, radius: float) -> np.ndarray:
    """Irregular blob: soft opacity ``(H, W)`` in ``[0, 1]`` that is exactly 0 outside the blob."""
    aspect = (1 / _MAX_ASPECT, _MAX_ASPECT)
    dist = blob_distance(rng, shape, centre, radius, wobble=_WOBBLE, aspect=aspect, rotate=True)
    return np.clip((1.0 - dist) / _FEATHER, 0.0, 1.0)


def _texture_energy(gray: np.ndarray, radius: float) -> np.ndarray:
    """Local standard deviation of a gray image over windows of about ``radius``."""
    size = max(int(radius), 3)
    mean = ndimage.uniform_filter(gray, size)
    sq = ndimage.uniform_filter(gray * gray, size)
    return np.sqrt(np.maximum(sq - mean * mean, 0.0))


def _centre(rng: np.random.Generator, energy: np.ndarray, radius: float) -> np.ndarray:
    """The most textured of a few random centres kept ``radius`` inside the border."""
    height, width = energy.shape
    margin_y, margin_x = min(radius, height / 2 - 1), min(radius, width / 2 - 1)
    ys = rng.uniform(margin_y, height - margin_y, _CANDIDATE_CENTRES)
    xs = rng.uniform(margin_x, width - margin_x, _CANDIDATE_CENTRES)
    scores = energy[ys.astype(int).clip(0, height - 1), xs.astype(int).clip(0, width - 1)]
    best = int(np.argmax(scores))
    return np.array([ys[best], xs[best]], np.float32)


def _smooth_field(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    noise = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma)
    return noise / max(float(noise.std()), 1e-6)


# --------------------------------------------------------------------------- kinds
# Each takes (rng, image float32 (H, W, 3) in [0, 255], region, donor) and returns the target
# the region is blended towards, float32 (H, W, 3).


class _Region(NamedTuple):
    """Where a kind edits: opacity ``alpha`` ``(H, W)`` in [0, 1], its centre (y, x), its radius (px)."""

    alpha: np.ndarray
    centre: np.ndarray
    radius: float


def _cutpaste(rng: np.random.Generator, image: np.ndarray, region: _Region, donor: np.ndarray) -> np.ndarray:
    alpha, centre, radius = region
    height, width = alpha.shape
    scale = rng.uniform(0.8, 1.25)
    half = max(math.ceil(radius * _BLOB_REACH * scale) + 1, 2)  # covers the blob after rotation
    side = 2 * half
    src = donor if donor.shape[0] >= side and donor.shape[1] >= side else image
    side = min(side, src.shape[0], src.shape[1])
    for _ in range(_PLACEMENT_TRIES):  # a patch from somewhere else than the target
        y0 = int(rng.integers(0, src.shape[0] - side + 1))
        x0 = int(rng.integers(0, src.shape[1] - side + 1))
        far = abs(y0 + side / 2 - centre[0]) + abs(x0 + side / 2 - centre[1]) > radius
        if src is not image or far:
            break
    patch = Image.fromarray(np.clip(src[y0 : y0 + side, x0 : x0 + side], 0, 255).astype(np.uint8))
    patch = patch.rotate(rng.uniform(-45, 45), resample=Image.Resampling.BILINEAR, expand=False)
    out_side = max(round(side / scale), 2)
    patch = patch.resize((out_side, out_side), Image.Resampling.BILINEAR)
    target = image.copy()
    top, left = round(centre[0]) - out_side // 2, round(centre[1]) - out_side // 2
    ty0, tx0 = max(top, 0), max(left, 0)
    ty1, tx1 = min(top + out_side, height), min(left + out_side, width)
    arr = np.asarray(patch, np.float32)
    target[ty0:ty1, tx0:tx1] = arr[ty0 - top : ty1 - top, tx0 - left : tx1 - left]
    return target * rng.uniform(0.85, 1.15, 3).astype(np.float32)  # and a slight colour cast


def _noise(rng: np.random.Generator, image: np.ndarray, region: _Region, donor: np.ndarray) -> np.ndarray:
    alpha = region.alpha
    texture = _smooth_field(rng, alpha.shape, rng.uniform(0.5, 2.5))
    low, high = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    mix = (np.tanh(texture) * 0.5 + 0.5)[..., None]
    return (low * (1 - mix) + high * mix).astype(np.float32)


def _warp(rng: np.random.Generator, image: np.ndarray, region: _Region, donor: np.ndarray) -> np.ndarray:
    alpha, centre, radius = region
    height, width = alpha.shape
    yy, xx = grid((height, width))
    strength = radius * rng.uniform(0.35, 0.7)
    swirl = rng.uniform(0.6, 1.6) * (1 if rng.random() < 0.5 else -1)
    dy, dx = yy - centre[0], xx - centre[1]
    # a swirl around the centre plus a smooth random push, both fading to 0 at the edge
    fade = np.clip(alpha, 0, 1)
    angle = swirl * fade
    sy = centre[0] + dy * np.cos(angle) - dx * np.sin(angle)
    sx = centre[1] + dy * np.sin(angle) + dx * np.cos(angle)
    push = fade * strength
    sy = sy + push * _smooth_field(rng, alpha.shape, radius / 2)
    sx = sx + push * _smooth_field(rng, alpha.shape, radius / 2)
    warped = [ndimage.map_coordinates(image[..., c], [sy, sx], order=1, mode="reflect") for c in range(3)]
    return np.stack(warped, axis=-1).astype(np.float32)


def _erase(rng: np.random.Generator, image: np.ndarray, region: _Region, donor: np.ndarray) -> np.ndarray:
    alpha, radius = region.alpha, region.radius
    outside = (alpha <= 0).astype(np.float32)
    if rng.random() < 0.5:  # flat fill: the mean colour just around the region
        ring = ndimage.binary_dilation(alpha > 0, iterations=max(int(radius / 3), 1)) & (alpha <= 0)
        colour = image[ring].mean(axis=0) if ring.any() else image.reshape(-1, 3).mean(axis=0)
        return np.broadcast_to(colour.astype(np.float32), image.shape).copy()
    sigma = max(radius * 0.8, 1.0)  # inpaint: blur of the surroundings only
    weight = ndimage.gaussian_filter(outside, sigma)
    filled = [ndimage.gaussian_filter(image[..., c] * outside, sigma) for c in range(3)]
    return (np.stack(filled, axis=-1) / np.maximum(weight, 1e-3)[..., None]).astype(np.float32)


def _colour(rng: np.random.Generator, image: np.ndarray, region: _Region, donor: np.ndarray) -> np.ndarray:
    gains = rng.uniform(0.55, 1.45, 3).astype(np.float32)
    offset = rng.uniform(-40, 40, 3).astype(np.float32)
    shifted = image * gains + offset
    gray = image.mean(axis=-1, keepdims=True)
    if rng.random() < 0.5:  # or a brightness change that keeps the hue
        shifted = image + (gray * rng.choice([-0.45, 0.45]))
    return shifted


def _darken_or_lighten(
    rng: np.random.Generator, image: np.ndarray, region: _Region, donor: np.ndarray
) -> np.ndarray:
    """A line or pit: darker (mostly) or lighter than its surroundings."""
    if rng.random() < 0.75:
        return image * rng.uniform(0.3, 0.65)
    return image + (255.0 - image) * rng.uniform(0.35, 0.7)


def _smooth(rng: np.random.Generator, image: np.ndarray, region: _Region, donor: np.ndarray) -> np.ndarray:
    sigma = rng.uniform(2.0, 4.0) * _model_px(region.alpha.shape)
    blurred = np.stack([ndimage.gaussian_filter(image[..., c], sigma) for c in range(3)], axis=-1)
    return blurred * rng.uniform(0.9, 1.1)


_KindFn = Callable[[np.random.Generator, np.ndarray, _Region, np.ndarray], np.ndarray]
_KINDS: dict[str, _KindFn] = {
    "cutpaste": _cutpaste,
    "noise": _noise,
    "warp": _warp,
    "erase": _erase,
    "colour": _colour,
    "crack": _darken_or_lighten,
    "pinhole": _darken_or_lighten,
    "scratch": _darken_or_lighten,
    "smooth": _smooth,
}


# --------------------------------------------------------------------------- fine regions
# Each takes (rng, shape (H, W), centre, radius) and returns the opacity (H, W) in [0, 1].


def _model_px(shape: tuple[int, int]) -> float:
    """Image pixels per pixel of the model's input."""
    return max(1.0, min(shape) / MODEL_SIDE)


def _stroke(shape: tuple[int, int], points: np.ndarray, width: float) -> np.ndarray:
    from PIL import ImageDraw

    canvas = Image.new("L", (shape[1], shape[0]), 0)
    xy = [(float(x), float(y)) for y, x in points]
    ImageDraw.Draw(canvas).line(xy, fill=255, width=max(1, round(width)), joint="curve")
    return np.asarray(canvas, np.float32) / 255.0


def _crack_region(
    rng: np.random.Generator, shape: tuple[int, int], centre: np.ndarray, radius: float
) -> np.ndarray:
    length = rng.uniform(1.5, 3.0) * radius
    steps = 12
    angle = rng.uniform(0, 2 * math.pi)
    point = centre - 0.5 * length * np.array([math.sin(angle), math.cos(angle)], np.float32)
    points = [point]
    for _ in range(steps):
        angle += rng.normal(0.0, 0.35)
        point = point + (length / steps) * np.array([math.sin(angle), math.cos(angle)], np.float32)
        points.append(point)
    return _stroke(shape, np.array(points), rng.uniform(1.0, 3.0) * _model_px(shape))


def _scratch_region(
    rng: np.random.Generator, shape: tuple[int, int], centre: np.ndarray, radius: float
) -> np.ndarray:
    half = rng.uniform(1.0, 2.0) * radius
    angle = rng.uniform(0, math.pi)
    direction = np.array([math.sin(angle), math.cos(angle)], np.float32)
    points = np.array([centre - half * direction, centre + half * direction])
    return _stroke(shape, points, rng.uniform(1.0, 2.0) * _model_px(shape))


def _pinhole_region(
    rng: np.random.Generator, shape: tuple[int, int], centre: np.ndarray, radius: float
) -> np.ndarray:
    r = rng.uniform(1.0, 2.0) * _model_px(shape)
    yy, xx = grid(shape)
    dist = np.sqrt((yy - centre[0]) ** 2 + (xx - centre[1]) ** 2)
    return np.clip(r + 0.5 - dist, 0.0, 1.0)


def _smooth_region(
    rng: np.random.Generator, shape: tuple[int, int], centre: np.ndarray, radius: float
) -> np.ndarray:
    return _blob(rng, shape, centre, min(2.0 * radius, min(shape) / 2 - 1))


_RegionFn = Callable[[np.random.Generator, tuple[int, int], np.ndarray, float], np.ndarray]
_REGIONS: dict[str, _RegionFn] = {
    "crack": _crack_region,
    "scratch": _scratch_region,
    "pinhole": _pinhole_region,
    "smooth": _smooth_region,
}


# --------------------------------------------------------------------------- public API


def _as_array(image: Image.Image, what: str) -> np.ndarray:
    if not isinstance(image, Image.Image):
        raise DataError(f"{what} is not a PIL image (got {type(image).__name__})")
    array = np.asarray(image.convert("RGB"), np.float32)
    if min(array.shape[:2]) < MIN_SIDE:
        raise DataError(f"{what} is {array.shape[1]}x{array.shape[0]} pixels; at least {MIN_SIDE} needed")
    return array


def _check_kinds(kinds: Sequence[str]) -> tuple[str, ...]:
    kinds = tuple(kinds)
    if not kinds:
        raise DataError("no synthetic anomaly kinds given")
    unknown = [k for k in kinds if k not in _KINDS]
    if unknown:
        raise DataError(f"unknown synthetic anomaly kind {unknown[0]!r} (available: {', '.join(ALL_KINDS)})")
    return kinds


def _check_area(area: tuple[float, float]) -> tuple[float, float]:
    low, high = float(area[0]), float(area[1])
    if not 0.0 < low <= high < 0.5:
        raise DataError(f"area must be fractions 0 < low <= high < 0.5 of the image, got {area}")
    return low, high


def _edit(
    rng: np.random.Generator,
    image: np.ndarray,
    donor: np.ndarray,
    kind: str,
    area: tuple[float, float],
) -> tuple[np.ndarray, np.ndarray] | None:
    """Edits one region; returns (uint8 image, mask) or None when no placement changed enough."""
    height, width = image.shape[:2]
    energy = _texture_energy(image.mean(axis=-1), max(min(height, width) * 0.05, 3))
    for _ in range(_PLACEMENT_TRIES):
        radius = math.sqrt(rng.uniform(*area) * height * width / math.pi)
        radius = min(radius, min(height, width) / 2 - 1)
        centre = _centre(rng, energy, radius)
        alpha = _REGIONS.get(kind, _blob)(rng, (height, width), centre, radius)
        target = _KINDS[kind](rng, image, _Region(alpha, centre, radius), donor)
        edited = np.clip(np.rint(image + (target - image) * alpha[..., None]), 0, _UINT8_MAX)
        change = np.abs(edited - image)
        mask = change.max(axis=-1) >= _VISIBLE
        region = alpha > 0
        mean_change = float(change.mean(axis=-1)[region].mean()) if region.any() else 0.0
        if mask.sum() >= _MIN_CHANGED_FRACTION * region.sum() and mean_change >= _MIN_MEAN_CHANGE:
            return edited.astype(np.uint8), region
    return None


def synthesize(
    image: Image.Image,
    kind: str,
    seed: int | Sequence[int] = 0,
    *,
    donor: Image.Image | None = None,
    area: tuple[float, float] = DEFAULT_AREA,
) -> SyntheticSample | None:
    """Pastes one synthetic anomaly of ``kind`` into ``image``.

    Args:
        image: a good image (any PIL mode; edited as RGB).
        kind: one of :data:`SYNTHETIC_KINDS`.
        seed: seed (or seed sequence) of the edit.
        donor: where ``cutpaste`` takes its patch from (default: ``image`` itself).
        area: region area as fractions of the image area, (low, high).

    Returns:
        The sample (``source`` 0), or None when no region of the image changes visibly under
        this kind (a uniformly flat image under ``warp`` or ``erase``).

    Raises:
        DataError: unknown kind, bad area, or an image that is not a PIL image or too small.
    """
    (kind,) = _check_kinds([kind])
    array = _as_array(image, "image")
    donor_array = array if donor is None else _as_array(donor, "donor image")
    edit = _edit(np.random.default_rng(seed), array, donor_array, kind, _check_area(area))
    if edit is None:
        return None
    return SyntheticSample(Image.fromarray(edit[0], mode="RGB"), edit[1], kind, 0)


def make_synthetic_anomalies(
    images: Sequence[Image.Image],
    n: int,
    seed: int = 0,
    kinds: Sequence[str] = SYNTHETIC_KINDS,
    *,
    area: tuple[float, float] = DEFAULT_AREA,
) -> list[SyntheticSample]:
    """Pastes ``n`` synthetic anomalies into good images, cycling through ``kinds``.

    Sample ``i`` has kind ``kinds[i % len(kinds)]`` and is made from a randomly chosen
    image (``cutpaste`` takes its patch from another randomly chosen one); it depends only
    on ``seed``, ``i``, the images and the arguments, not on ``n``. An image on which a kind
    cannot change anything visibly (a flat one) is passed over for another.

    Args:
        images: good images (never test images when choosing settings).
        n: number of samples.
        seed: random seed.
        kinds: which kinds to use (see :data:`SYNTHETIC_KINDS`).
        area: region area as fractions of the image area, (low, high).

    Returns:
        ``n`` samples.

    Raises:
        DataError: no images, a negative ``n``, an unknown kind, a bad area, an unusable
            image, or images on which a kind can change nothing.
    """
    kinds = _check_kinds(kinds)
    area = _check_area(area)
    if n < 0:
        raise DataError(f"the number of synthetic anomalies must be non-negative, got {n}")
    if not images:
        raise DataError("no good images to paste synthetic anomalies into")
    arrays = [_as_array(image, f"good image {i}") for i, image in enumerate(images)]
    samples = []
    for i in range(n):
        kind = kinds[i % len(kinds)]
        rng = np.random.default_rng([seed, i])
        order = rng.permutation(len(arrays))
        for source in order.tolist():
            donor = arrays[int(rng.integers(len(arrays)))]
            edit = _edit(rng, arrays[source], donor, kind, area)
            if edit is not None:
                samples.append(SyntheticSample(Image.fromarray(edit[0], mode="RGB"), edit[1], kind, source))
                break
        else:
            raise DataError(f"synthetic anomaly {kind!r} changes nothing visible on any of the given images")
    return samples


def _resized_mask(mask: np.ndarray, size: int) -> np.ndarray:
    image = Image.fromarray(mask.astype(np.uint8) * _UINT8_MAX, mode="L")
    return np.asarray(image.resize((size, size), Image.Resampling.NEAREST)) > 0


def f1_threshold(detector: Detector, good: Sequence, anomalies: Sequence) -> float:
    """The F1-optimal image-score threshold between good images and (synthetic) anomalies.

    Args:
        detector: a trained detector.
        good: good images it did not train on (anything :meth:`Detector.predict` reads).
        anomalies: anomalous images, e.g. ``[s.image for s in make_synthetic_anomalies(...)]``.

    Raises:
        DataError: no good images or no anomalies.
    """
    from .metrics import f1_optimal_threshold

    if not good or not anomalies:
        raise DataError("a threshold needs good images and anomalies")
    scores = detector.predict([*good, *anomalies]).scores.astype(np.float64)
    labels = np.array([0] * len(good) + [1] * len(anomalies))
    threshold, _ = f1_optimal_threshold(labels, scores)
    return float(threshold)


def evaluate_synthetic(
    detector: Detector,
    good: Sequence[Image.Image],
    samples: Sequence[SyntheticSample],
    batch_size: int = 8,
) -> SyntheticEvaluation:
    """Scores good images and synthetic anomalies with a trained detector.

    Args:
        detector: a trained detector.
        good: good images the detector did not train on.
        samples: synthetic anomalies (from other held-out good images, ideally).
        batch_size: images per scoring batch.

    Returns:
        Image AUROC (good vs anomalous) and pixel AUROC at the detector's input size.

    Raises:
        DataError: no good images or no samples.
    """
    if not good or not samples:
        raise DataError("synthetic evaluation needs good images and synthetic anomalies")
    prediction = detector.predict([*good, *(s.image for s in samples)], batch_size=batch_size)
    size = prediction.maps.shape[-1]
    labels = np.array([0] * len(good) + [1] * len(samples))
    masks = np.stack(
        [np.zeros((size, size), bool)] * len(good) + [_resized_mask(s.mask, size) for s in samples]
    )
    return SyntheticEvaluation(
        image_auroc=image_auroc(labels, prediction.scores),
        pixel_auroc=pixel_auroc(masks, prediction.maps),
        n_good=len(good),
        n_anomalous=len(samples),
    )
