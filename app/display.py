"""Display helpers shared by the pages: heatmap overlays, cached scoring, model summaries.

The colour scale of every heatmap is fixed by the model (its validation-normal statistics),
never by the image shown, so the same colour means the same likelihood on every page:
``vmin = stats.pixel_p50`` and ``vmax = max(threshold, stats.pixel_max)``.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import streamlit as st
from PIL import Image

from cainnflow.data import read_image, read_mask
from cainnflow.errors import CainnflowError
from cainnflow.visualization import colorize, overlay_heatmap

from . import hosting, keys, session_store, state

if TYPE_CHECKING:  # or the demo model's export on ONNX Runtime (both are cainnflow.scorer.Scorer)
    from cainnflow.detector import Detector

__all__ = [
    "UPLOAD_IMAGE_TYPES",
    "ImageInput",
    "ScoredImage",
    "color_bar",
    "color_range",
    "display_image",
    "file_digest",
    "format_seconds",
    "mismatch_warning",
    "model_summary_rows",
    "normalized_score",
    "render_overlay",
    "score_images",
    "score_is_map_max",
    "upload_picker",
    "uploaded_images",
    "verdict",
]

#: Image types the upload widgets accept (PIL reads them all).
UPLOAD_IMAGE_TYPES: tuple[str, ...] = ("png", "jpg", "jpeg", "bmp", "tif", "tiff", "webp")

SCORE_CACHE = keys.SCORE_CACHE
COLOR_BAR_SIZE = (256, 12)
SCORE_CACHE_SIZE = 96  # maps kept per session (one 256x256 float32 map is 256 KiB)
GOOD, ANOMALOUS = "good", "anomalous"
MIN_DISPLAY_SIZE = 256  # smaller maps (models trained at 64 px) are upsampled for display


# --------------------------------------------------------------------------- colour scale / overlay


def score_is_map_max(detector: object) -> bool:
    """Whether the image score is the shown map's maximum (its threshold a map value): ``max`` on
    an equal-weight map, not textures' coarse scores nor a map weighting the coarsest scale less."""
    config = getattr(detector, "config", None)
    weight = getattr(config, "coarsest_map_weight", None)
    return getattr(config, "pooling", "max") in ("max", "auto") and weight in (None, 1)


def color_range(detector: Detector) -> tuple[float, float]:
    """The model's fixed heatmap range ``(vmin, vmax)`` from its validation-normal statistics:
    from the median normal pixel to the largest normal pixel, or to the image threshold where
    that is a map value too (:func:`score_is_map_max`)."""
    stats = detector.stats
    if stats is None:
        raise CainnflowError("the model is not trained (no score statistics)")
    vmin = float(stats.pixel_p50)
    vmax = float(stats.pixel_max)
    if detector.threshold is not None and score_is_map_max(detector):
        vmax = max(vmax, float(detector.threshold))
    return vmin, max(vmax, vmin + 1e-6)


def render_overlay(
    image: Image.Image,
    amap: np.ndarray,
    detector: Detector,
    *,
    alpha: float = 0.5,
    threshold: float | None = None,
    gt_mask: np.ndarray | None = None,
) -> Image.Image:
    """The anomaly map (S, S) over the image on the model's fixed colour scale.

    Args:
        image: the input image (resized to the map).
        amap: anomaly map (S, S).
        detector: the model whose statistics fix the colours.
        alpha: heatmap opacity in [0, 1].
        threshold: outline (white) of the region ``amap >= threshold``; None: no outline.
        gt_mask: ground-truth mask (S, S), outlined in green; None: none.
    """
    vmin, vmax = color_range(detector)
    amap, gt_mask = _upsample_for_display(amap, gt_mask)
    return overlay_heatmap(
        image, amap, vmin=vmin, vmax=vmax, alpha=alpha, threshold=threshold, gt_mask=gt_mask
    )


COLOR_BAR_TICKS_WIDTH = 420  # shown at a column's width: ~10 px text in a 1000 px window, ~16 px at 1280
COLOR_BAR_FONT_PX = 24
COLOR_BAR_STRIP_PX = 18
COLOR_BAR_MARK_PX = 10


def color_bar(
    detector: Detector, upper: float | None = None, *, marker: float | None = None, ticks: bool = False
) -> Image.Image:
    """The heatmap's colour scale as a horizontal strip from ``vmin`` (left) to ``upper``
    (default ``vmax``; values above ``vmax`` keep its colour), e.g. the range of a slider above it.

    Args:
        detector: the model (its fixed colour range, :func:`color_range`).
        upper: the value at the right end.
        marker: a value to mark with a small triangle above the strip (a threshold).
        ticks: label ``vmin``, ``vmax`` (where dark red begins) and ``upper`` below the strip, so
            the picture states its own range.
    """
    vmin, vmax = color_range(detector)
    top = upper if upper is not None else vmax
    if not ticks and marker is None:
        width, height = COLOR_BAR_SIZE
        ramp = np.tile(np.linspace(vmin, top, width, dtype=np.float32), (height, 1))
        return Image.fromarray(colorize(ramp, vmin, vmax))
    from PIL import ImageDraw, ImageFont

    width, pad = COLOR_BAR_TICKS_WIDTH, COLOR_BAR_FONT_PX // 2
    strip_top = COLOR_BAR_MARK_PX + 2
    height = strip_top + COLOR_BAR_STRIP_PX + (COLOR_BAR_FONT_PX + 12 if ticks else 2)
    ramp = np.tile(np.linspace(vmin, top, width - 2 * pad, dtype=np.float32), (COLOR_BAR_STRIP_PX, 1))
    image = Image.new("RGB", (width, height), "white")
    image.paste(Image.fromarray(colorize(ramp, vmin, vmax)), (pad, strip_top))
    draw = ImageDraw.Draw(image)
    span = max(top - vmin, 1e-12)

    def x_of(value: float) -> float:
        return pad + (width - 2 * pad - 1) * min(max((value - vmin) / span, 0.0), 1.0)

    if marker is not None:
        x = x_of(marker)
        draw.polygon([(x - 7, 0), (x + 7, 0), (x, COLOR_BAR_MARK_PX)], fill="black")
        draw.line([(x, strip_top), (x, strip_top + COLOR_BAR_STRIP_PX - 1)], fill="white", width=2)
    if ticks:
        font = ImageFont.load_default(size=COLOR_BAR_FONT_PX)
        y = strip_top + COLOR_BAR_STRIP_PX + 4
        labels = [(vmin, "left"), (top, "right")]
        if top - vmax > 0.15 * span and vmax - vmin > 0.15 * span:  # room between the ends
            labels.append((vmax, "middle"))
        for value, align in labels:
            text = f"{value:.4g}"
            x = x_of(value)
            draw.line([(x, strip_top + COLOR_BAR_STRIP_PX), (x, y)], fill="#555555", width=2)
            anchor = {"left": "la", "right": "ra", "middle": "ma"}[align]
            draw.text((x, y), text, fill="#31333f", font=font, anchor=anchor)
    return image


def display_image(image: Image.Image, detector: Detector) -> Image.Image:
    """The input as the model sees it (square, its input size), at least MIN_DISPLAY_SIZE wide."""
    size = max(detector.config.image_size, MIN_DISPLAY_SIZE)
    return image.convert("RGB").resize((size, size), Image.Resampling.BILINEAR)


def _upsample_for_display(
    amap: np.ndarray, gt_mask: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray | None]:
    h, w = amap.shape
    if min(h, w) >= MIN_DISPLAY_SIZE:
        return amap, gt_mask
    size = (MIN_DISPLAY_SIZE, MIN_DISPLAY_SIZE)
    big = np.asarray(Image.fromarray(amap.astype(np.float32)).resize(size, Image.Resampling.BILINEAR))
    if gt_mask is not None:
        mask_img = Image.fromarray(np.asarray(gt_mask, bool).astype(np.uint8) * 255)
        gt_mask = np.asarray(mask_img.resize(size, Image.Resampling.NEAREST)) > 0
    return big, gt_mask


def verdict(score: float, threshold: float | None) -> str:
    """``"anomalous"`` when the score reaches the threshold, else ``"good"``."""
    return ANOMALOUS if threshold is not None and score >= threshold else GOOD


def normalized_score(detector: Detector, score: float) -> float | None:
    """The score in standard deviations above the mean normal score (None without statistics)."""
    return None if detector.stats is None else float(detector.stats.normalize_scores(np.array([score]))[0])


# --------------------------------------------------------------------------- scoring with a cache


def file_digest(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


@dataclass(frozen=True)
class ImageInput:
    """One image to score: its bytes and, for dataset images, what is known about it."""

    name: str
    data: bytes
    defect_type: str | None = None  # None for uploads
    label: int | None = None
    mask_path: Path | None = None

    @classmethod
    def from_path(cls, path: Path, **known: Any) -> ImageInput:
        return cls(path.name, path.read_bytes(), **known)


@dataclass(frozen=True)
class ScoredImage:
    """An image with its anomaly map (S, S) and score."""

    input: ImageInput
    image: Image.Image
    amap: np.ndarray
    score: float
    digest: str
    key: str = ""  # unique among the images shown together (widget keys, the detail choice)
    same_as: str | None = None  # the name of an earlier image with the same bytes

    def gt_mask(self, size: int) -> np.ndarray | None:
        if self.input.mask_path is None:
            return None
        try:
            return read_mask(self.input.mask_path, size)
        except CainnflowError:
            return None


@dataclass(frozen=True)
class _Scored:
    image: Image.Image
    amap: np.ndarray
    score: float


def _unique_upload_name(store: dict[str, bytes], name: str, data: bytes) -> str | None:
    """The name an upload is kept under (``x.png``, then ``x (2).png``); None if already kept."""
    stem, suffix = Path(name).stem, Path(name).suffix
    candidate, n = name, 2
    while candidate in store:
        if store[candidate] == data:
            return None
        candidate, n = f"{stem} ({n}){suffix}", n + 1
    return candidate


def uploaded_images(key: str, label: str = "Upload images") -> list[ImageInput]:
    """A multi-file image uploader whose files stay in the session (every page sees them).

    Each upload is checked and downscaled on decode (:func:`app.hosting.decode_upload`);
    a refused file gets one warning line. Uploads are kept in the session's folder, so a
    reload brings them back. The images kept so far are listed below the widget with a
    button to forget them.
    """
    store = state.upload_store()
    generation = st.session_state.setdefault(f"{key}_generation", 0)
    files = st.file_uploader(
        label, type=list(UPLOAD_IMAGE_TYPES), accept_multiple_files=True, key=f"{key}_{generation}"
    )
    seen: dict[str, str] = st.session_state.setdefault(f"{key}_seen", {})  # upload id -> name kept
    for file in files or []:
        if file.file_id in seen:
            continue
        try:
            data = hosting.decode_upload(file.getvalue(), file.name)
            name = _unique_upload_name(store, file.name, data)
            if name is not None:
                session_store.keep_upload(name, data)
        except CainnflowError as exc:
            st.warning(f"Skipped an image: {exc}", icon=":material/broken_image:")
            name = None
        except Exception as exc:
            st.warning(
                f"Skipped an image: cannot read {file.name[:80]} ({type(exc).__name__})",
                icon=":material/broken_image:",
            )
            name = None
        seen[file.file_id] = name or ""
        if name is not None and name != file.name:
            st.caption(f"Another upload is already called {file.name}: this one is kept as **{name}**.")
    if store:
        c1, c2 = st.columns([4, 1], vertical_alignment="center")
        c1.caption(
            f"{len(store)} uploaded image(s) kept for this session: "
            + ", ".join(list(store)[:6])
            + (" …" if len(store) > 6 else "")
        )
        c2.button("Forget", key=f"{key}_forget", on_click=_forget_uploads, args=(key,), type="tertiary")
    return [ImageInput(name, data) for name, data in store.items()]


def _forget_uploads(key: str) -> None:
    session_store.forget_uploads()
    st.session_state[f"{key}_generation"] = st.session_state.get(f"{key}_generation", 0) + 1
    st.session_state.pop(f"{key}_seen", None)


def upload_picker(key: str) -> ImageInput | None:
    """One image from this session's uploads (or a new upload); None until there is one."""
    images = uploaded_images(key, "Upload an image")
    if not images:
        st.info("Upload an image (or choose a dataset on **Train / load**).")
        return None
    names = [item.name for item in images]
    chosen = st.selectbox("Uploaded image", names, index=len(names) - 1, key=f"{key}_choice")
    return images[names.index(chosen)]


def _cache() -> OrderedDict[tuple[int, str], _Scored]:
    cache = st.session_state.get(SCORE_CACHE)
    if cache is None:
        cache = st.session_state[SCORE_CACHE] = OrderedDict()
    return cache


def score_images(
    entry: state.ModelEntry, inputs: Sequence[ImageInput]
) -> tuple[list[ScoredImage], list[str]]:
    """Scores images with the current model, reusing this session's earlier results.

    Results are cached per session by (model version, image bytes hash), so moving a slider
    or re-selecting an image never scores it again. An image given twice (the same bytes
    under two names, e.g. an upload of a picked test image) is scored once and listed under
    both names, each with its own :attr:`ScoredImage.key`.

    Returns:
        The scored images (in input order) and one message per image that could not be read.
    """
    cache = _cache()
    errors: list[str] = []
    todo: dict[str, Image.Image] = {}
    digests = [file_digest(item.data) for item in inputs]
    readable: list[tuple[ImageInput, str]] = []
    unreadable: set[str] = set()
    for item, digest in zip(inputs, digests, strict=True):
        if digest in unreadable:
            continue
        key = (entry.version, digest)
        if key not in cache and digest not in todo:
            try:
                todo[digest] = read_image(item.data, name=item.name, max_side=hosting.KEEP_SIDE)
            except CainnflowError as exc:
                errors.append(str(exc))
                unreadable.add(digest)
                continue
        readable.append((item, digest))
    if todo:
        prediction = entry.detector.predict(list(todo.values()))
        for (digest, image), amap, score in zip(
            todo.items(), prediction.maps, prediction.scores, strict=True
        ):
            cache[(entry.version, digest)] = _Scored(image, amap.astype(np.float32), float(score))
    results = []
    first_name: dict[str, str] = {}
    for position, (item, digest) in enumerate(readable):
        key = (entry.version, digest)
        cache.move_to_end(key)
        hit = cache[key]
        same_as = first_name.setdefault(digest, item.name)
        results.append(
            ScoredImage(
                item, hit.image, hit.amap, hit.score, digest, key=f"{position}_{digest}",
                same_as=None if same_as == item.name else same_as,
            )
        )  # fmt: skip
    while len(cache) > SCORE_CACHE_SIZE:
        cache.popitem(last=False)
    return results, errors


# --------------------------------------------------------------------------- training display

SCORE_SOURCES = {
    "max": "the maximum of its anomaly map",
    "coarse": "the maximum of its coarse scales' map",
    "coarse_top": "the mean of the most unlikely eighth of its coarsest scale's positions",
    "topk": "the mean of its anomaly map's top 1 %",
}
_EXPOSURE = {"standardize": ", each image brought to the training images' exposure"}


def score_help(detector: object) -> str:
    """What a model's image score is, for the tooltip of an "Image score" metric
    (see ``CAINNFlowConfig.pooling``); the label stays short enough for a narrow column."""
    config = getattr(detector, "config", None)
    pooling = getattr(config, "pooling", "max")
    text = f"This model scores an image by {SCORE_SOURCES.get(pooling, SCORE_SOURCES['max'])}."
    weight = getattr(config, "coarsest_map_weight", None)
    if pooling in ("max", "topk", "auto") and weight is not None and weight != 1:
        text = text.replace("its anomaly map", "its scales' equal-weight map") + (
            f" The heatmap weights the coarsest scale by {weight:g}: it outlines defects more tightly."
        )
    return text


def _weight_words(config: object) -> str:
    weight = getattr(config, "coarsest_map_weight", None)
    return "" if weight is None or weight == 1 else f" (coarsest scale weighted {weight:g})"


def format_seconds(seconds: float | None) -> str:
    """``75.0`` → ``"1 min 15 s"``; None → ``"–"``."""
    if seconds is None or not np.isfinite(seconds):
        return "–"
    seconds = max(0, round(seconds))
    minutes, secs = divmod(seconds, 60)
    return f"{minutes} min {secs:02d} s" if minutes else f"{secs} s"


THRESHOLD_ORIGINS = {
    "validation_quantile": "a high percentile of the validation images",
    "synthetic_f1": "F1-optimal on synthetic anomalies",
    "test_split": "fitted on the test split",
    "user": "set by hand",
    "feedback": "recalibrated from feedback",
}
"""How a threshold was set, in words (keys: :data:`cainnflow.record.THRESHOLD_ORIGINS`)."""


def model_summary_rows(detector: Detector) -> list[tuple[str, str]]:
    """(field, value) rows describing a detector: configuration, training and calibration."""
    cfg = detector.config
    rows = [
        ("backbone", f"{cfg.backbone} (weights: {detector.backbone.weights_source})"),
        ("feature stages", ", ".join(str(i) for i in cfg.out_indices or ())),
        ("variant / steps", f"{cfg.variant}, {cfg.steps} coupling step(s) per scale"),
        ("image size", f"{cfg.image_size} px" + _EXPOSURE.get(getattr(cfg, "photometric", "none"), "")),
        ("coupling / clamp", f"{cfg.coupling}, clamp {cfg.clamp:g}"),
        (
            "anomaly map",
            f"scales combined by {cfg.combine}{_weight_words(cfg)}, smoothing σ {cfg.sigma:g} px, "
            f"{cfg.pooling} pooling",
        ),
        ("device", str(detector.device)),
    ]
    record = detector.record
    if record.data is not None:
        rows.append(("trained on", record.data.describe()))
    if record.n_train is not None:
        rows.append(("train / val images", f"{record.n_train} / {record.n_val or 0}"))
    if record.sweep_key:
        rows.append(("sweep trial", record.sweep_key))
    history = detector.history
    if history is not None and history.epochs:
        # history.epochs holds one record per validation round, each naming the epoch it closed.
        best = f"epoch {history.best_epoch} of {history.epochs[-1].epoch}"
        if history.steps:
            best += f" ({history.steps} steps)"
        if history.best_val_loss is not None:
            best += f", validation loss {history.best_val_loss:.4f}"
        if history.cancelled:
            best += " (cancelled)"
        elif history.stopped_early:
            best += " (stopped early)"
        rows.append(("best epoch", best))
    if record.timings is not None:
        rows.append(("training time", format_seconds(record.timings.total_seconds)))
    if record.auto is not None:
        chosen = record.auto.chosen
        rows.append(
            (
                "chosen by auto-configuration",
                f"stages {', '.join(map(str, chosen.stages))}, σ {chosen.sigma:g}, {chosen.pooling} score "
                f"({len(record.auto.candidates)} settings tried)",
            )
        )
    if detector.threshold is not None:
        origin = THRESHOLD_ORIGINS.get(record.threshold_origin or "")
        rows.append(
            ("threshold (image score)", f"{detector.threshold:.4g}" + (f" ({origin})" if origin else ""))
        )
    if detector.stats is not None:
        s = detector.stats
        rows.append(("normal scores", f"mean {s.image_mean:.4g} ± {s.image_std:.3g}, max {s.image_max:.4g}"))
        vmin, vmax = color_range(detector)
        rows.append(("heatmap colour range", f"{vmin:.4g} … {vmax:.4g}"))
    return rows


def mismatch_warning() -> None:
    """Warns when the current model was trained on other data than the current data."""
    message = state.data_mismatch()
    if message:
        st.warning(message, icon=":material/warning:")
