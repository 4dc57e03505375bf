"""Operator feedback: images marked "good (false alarm)" or "defective (missed)", and the
image threshold recalibrated from them. Numpy only (no torch): the app and the checkpoint
record both use it.

    marks = FeedbackSet().mark(FeedbackItem.create("part 7.png", data, "good", "upload", score=0.71))
    result = recalibrate(model_threshold, marks.scores("good"), marks.scores("defective"), validation=val)
    detector.threshold = result.after

A :class:`FeedbackSet` is what the checkpoint's record keeps (:meth:`FeedbackSet.to_dict`):
per image a sanitised name, the SHA-256 of its bytes, where it came from, when it was marked
and its score then, never the image itself. :meth:`FeedbackSet.from_dict` reads that record
as a stranger may have written it: one :class:`ValueError` line naming the field.

The rule of :func:`recalibrate` (``score >= threshold`` is anomalous):

- marked good and marked defective images (with the validation normals counted as good):
  the F1-optimal threshold between the two groups (:func:`cainnflow.metrics.f1_optimal_threshold`,
  the one the app's synthetic-anomaly threshold uses), placed halfway to the highest good
  score below it; without marked good images it never rises above the model's threshold;
- marked good images only: it rises just past the highest of them, never falls;
- marked defective images and no good scores at all: it falls to the lowest of them, never rises.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import PurePosixPath
from typing import Any

import numpy as np

from .metrics import f1_optimal_threshold
from .validate import MAX_ABS_VALUE, finite_number, typed

__all__ = [
    "DEFECTIVE",
    "FEEDBACK_VERSION",
    "GOOD",
    "LABELS",
    "MAX_ITEMS",
    "SOURCES",
    "FeedbackItem",
    "FeedbackSet",
    "Recalibration",
    "content_hash",
    "recalibrate",
    "sanitize_name",
    "verdict_flips",
]

GOOD, DEFECTIVE = "good", "defective"
LABELS: tuple[str, ...] = (GOOD, DEFECTIVE)
SOURCES: tuple[str, ...] = ("upload", "batch", "dataset", "camera", "folder")
"""Where a marked image came from: an Inspect upload, a batch file, a test image of the
current data, the camera, or a watched folder."""
FEEDBACK_VERSION = 1
MAX_ITEMS = 500
"""Marked images one record holds (a checkpoint's record is capped in size)."""
MAX_NAME_CHARS = 120
_DEFAULT_NAME = "image"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_UNSAFE = re.compile(r"[^A-Za-z0-9 ._()+,=@#-]+")
_TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
_ITEM_FIELDS = ("name", "sha256", "label", "source", "score", "marked_at")
_SET_FIELDS = ("version", "base_threshold", "items")


def _clean(text: str) -> str:
    parts = (p for p in PurePosixPath(text.replace("\\", "/")).parts if p.strip("/") not in ("", ".", ".."))
    return "/".join(c for c in (_UNSAFE.sub("_", p).strip() for p in parts) if c not in ("", ".", ".."))


def sanitize_name(name: str) -> str:
    """An origin name safe to record and show: the folders of a batch name kept, nothing else.

    ``"../a/./b?c.png"`` → ``"a/b_c.png"``: backslashes become ``/``, empty, ``.`` and
    ``..`` parts go, characters outside letters, digits and ``" ._()+,=@#-"`` become ``_``,
    at most :data:`MAX_NAME_CHARS` characters (the end kept: the file name), never empty.
    Idempotent: ``sanitize_name(sanitize_name(x)) == sanitize_name(x)``.
    """
    text = _clean(str(name))
    if len(text) > MAX_NAME_CHARS:
        text = _clean(text[-MAX_NAME_CHARS:])
    return text or _DEFAULT_NAME


def content_hash(data: bytes) -> str:
    """The SHA-256 of an image's bytes (hex), which identifies a marked image."""
    return hashlib.sha256(data).hexdigest()


def _now() -> str:
    return datetime.now(timezone.utc).strftime(_TIME_FORMAT)


def _choice(value: Any, allowed: tuple[str, ...], what: str) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(f"{what} must be one of {', '.join(allowed)}, got {str(value)[:40]!r}")
    return value


@dataclass(frozen=True)
class FeedbackItem:
    """One marked image.

    Attributes:
        name: its sanitised name (:func:`sanitize_name`): the upload's or batch file's name.
        sha256: SHA-256 of its bytes (:func:`content_hash`).
        label: :data:`GOOD` (a false alarm, or a good image) or :data:`DEFECTIVE` (a missed defect).
        source: one of :data:`SOURCES`.
        score: its image score under the model when it was marked.
        marked_at: when, UTC, ``YYYY-MM-DDTHH:MM:SSZ``.
    """

    name: str
    sha256: str
    label: str
    source: str
    score: float
    marked_at: str

    @classmethod
    def create(cls, name: str, data: bytes, label: str, source: str, *, score: float) -> FeedbackItem:
        """An item for image bytes ``data`` marked now (the name sanitised, the bytes hashed).

        Raises:
            ValueError: an unknown label or source, or a score that is not a finite number.
        """
        return cls.from_dict(
            {
                "name": sanitize_name(name),
                "sha256": content_hash(data),
                "label": label,
                "source": source,
                "score": float(score),
                "marked_at": _now(),
            }
        )

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in _ITEM_FIELDS}

    @classmethod
    def from_dict(cls, data: object, what: str = "item") -> FeedbackItem:
        """A validated item from its :meth:`to_dict` form.

        Raises:
            ValueError: not an object with exactly the fields, or a field of the wrong type or
                form; one line naming ``what`` and the field.
        """
        if not isinstance(data, dict) or set(data) != set(_ITEM_FIELDS):
            raise ValueError(f"{what} must be an object with the keys {', '.join(_ITEM_FIELDS)}")
        name = typed(data["name"], str, f"{what}.name")
        if len(name) > MAX_NAME_CHARS or sanitize_name(name) != name:
            raise ValueError(
                f"{what}.name must be a sanitised file name of at most {MAX_NAME_CHARS} characters"
            )
        sha = typed(data["sha256"], str, f"{what}.sha256")
        if not _SHA256.match(sha):
            raise ValueError(f"{what}.sha256 must be 64 lowercase hex digits")
        marked_at = typed(data["marked_at"], str, f"{what}.marked_at")
        try:
            datetime.strptime(marked_at, _TIME_FORMAT)
        except ValueError:
            raise ValueError(f"{what}.marked_at must be a UTC time YYYY-MM-DDTHH:MM:SSZ") from None
        return cls(
            name=name,
            sha256=sha,
            label=_choice(data["label"], LABELS, f"{what}.label"),
            source=_choice(data["source"], SOURCES, f"{what}.source"),
            score=finite_number(data["score"], f"{what}.score", limit=MAX_ABS_VALUE),
            marked_at=marked_at,
        )


@dataclass(frozen=True)
class FeedbackSet:
    """The images an operator marked for one model, and its threshold before any of them.

    Attributes:
        items: the marked images, one per content hash (marking an image again replaces it).
        base_threshold: the model's threshold before feedback; :func:`recalibrate` starts from
            it every time, so unmarking everything gives it back. None until the first mark.
    """

    items: tuple[FeedbackItem, ...] = ()
    base_threshold: float | None = None

    def __len__(self) -> int:
        return len(self.items)

    def get(self, sha256: str) -> FeedbackItem | None:
        """The item of an image by its content hash, or None."""
        return next((item for item in self.items if item.sha256 == sha256), None)

    def mark(self, item: FeedbackItem, *, base_threshold: float | None = None) -> FeedbackSet:
        """A set with ``item`` added (replacing an earlier mark of the same image).

        Args:
            base_threshold: the model's threshold now; kept as :attr:`base_threshold` when the
                set has none yet.

        Raises:
            ValueError: the set already holds :data:`MAX_ITEMS` other images.
        """
        others = tuple(i for i in self.items if i.sha256 != item.sha256)
        if len(others) >= MAX_ITEMS:
            raise ValueError(f"at most {MAX_ITEMS} images can be marked for one model")
        base = self.base_threshold if self.base_threshold is not None else base_threshold
        return FeedbackSet((*others, item), base)

    def unmark(self, sha256: str) -> FeedbackSet:
        """A set without the image of this content hash."""
        return replace(self, items=tuple(i for i in self.items if i.sha256 != sha256))

    def with_label(self, label: str) -> tuple[FeedbackItem, ...]:
        """The items marked ``label`` (:data:`GOOD` or :data:`DEFECTIVE`), in marking order."""
        return tuple(i for i in self.items if i.label == label)

    def scores(self, label: str) -> np.ndarray:
        """The recorded scores of the items marked ``label``, ``(N,)`` float64."""
        return np.array([i.score for i in self.with_label(label)], dtype=np.float64)

    def counts(self) -> dict[str, int]:
        """How many images carry each label."""
        return {label: len(self.with_label(label)) for label in LABELS}

    def to_dict(self) -> dict[str, Any]:
        """The record's JSON form (what a checkpoint keeps)."""
        return {
            "version": FEEDBACK_VERSION,
            "base_threshold": self.base_threshold,
            "items": [item.to_dict() for item in self.items],
        }

    @classmethod
    def from_dict(cls, data: object) -> FeedbackSet:
        """A validated set from :meth:`to_dict`'s form, as a stranger may have written it.

        Raises:
            ValueError: not an object with exactly the fields, an unknown version, too many
                items, an item malformed, or one image (content hash) marked twice; one line
                that starts with the field, for the caller to prefix with where.
        """
        if not isinstance(data, dict) or set(data) != set(_SET_FIELDS):
            raise ValueError(f"must be an object with the keys {', '.join(_SET_FIELDS)}")
        version = data["version"]
        if isinstance(version, bool) or version != FEEDBACK_VERSION:
            raise ValueError(f"version must be {FEEDBACK_VERSION}, got {str(version)[:20]!r}")
        base = data["base_threshold"]
        if base is not None:
            base = finite_number(base, "base_threshold", limit=MAX_ABS_VALUE)
        raw = typed(data["items"], list, "items")
        if len(raw) > MAX_ITEMS:
            raise ValueError(f"items holds {len(raw)} images, more than {MAX_ITEMS}")
        items = tuple(FeedbackItem.from_dict(entry, f"items[{i}]") for i, entry in enumerate(raw))
        if len({i.sha256 for i in items}) != len(items):
            raise ValueError("items marks the same image (content hash) twice")
        return cls(items, base)


@dataclass(frozen=True)
class Recalibration:
    """A threshold recalibrated from feedback, and what it rests on.

    Attributes:
        before: the threshold it started from (None: the model had none).
        after: the new threshold.
        rule: ``"f1"`` (between good and defective scores), ``"above_good"`` (just past the
            highest marked good), ``"below_defective"`` (down to the lowest marked defective)
            or ``"unchanged"``.
        n_good, n_defective, n_validation: the scores it used.
    """

    before: float | None
    after: float
    rule: str
    n_good: int
    n_defective: int
    n_validation: int

    @property
    def moved(self) -> bool:
        return self.before is None or self.after != self.before

    def describe(self) -> str:
        """One sentence: what moved the threshold, and on what."""
        used = f"{self.n_good} marked good, {self.n_defective} marked defective"
        if self.n_validation:
            used += f", {self.n_validation} validation normal(s)"
        how = {
            "f1": "F1-optimal between the good and the defective scores",
            "above_good": "just above the highest marked good image",
            "below_defective": "down to the lowest marked defective image",
            "unchanged": "already gives every marked image its label",
        }[self.rule]
        return f"{how} ({used})"


def _scores(values: Sequence[float] | np.ndarray, what: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64).ravel()
    if not np.isfinite(array).all():
        raise ValueError(f"{what} scores must be finite numbers")
    return array


def recalibrate(
    threshold: float | None,
    good: Sequence[float] | np.ndarray,
    defective: Sequence[float] | np.ndarray,
    *,
    validation: Sequence[float] | np.ndarray = (),
) -> Recalibration:
    """The image threshold recalibrated from marked images (``score >= threshold`` is anomalous).

    Args:
        threshold: the model's threshold before feedback (its :attr:`FeedbackSet.base_threshold`).
        good: ``(G,)`` current scores of the images marked good.
        defective: ``(D,)`` current scores of the images marked defective.
        validation: ``(V,)`` scores of the model's validation normals, when they can be had;
            they count as good in the F1 fit and keep marked defectives from dragging the
            threshold below the normals.

    Raises:
        ValueError: a score or the threshold is not a finite number, or there is neither a
            threshold nor any score to set one from.
    """
    if threshold is not None:
        threshold = finite_number(threshold, "threshold")
    good_a, bad_a, val_a = (
        _scores(good, "good"),
        _scores(defective, "defective"),
        _scores(validation, "validation"),
    )
    goods = np.concatenate([val_a, good_a])

    def result(after: float, rule: str) -> Recalibration:
        if threshold is not None and after == threshold:
            rule = "unchanged"
        return Recalibration(threshold, float(after), rule, good_a.size, bad_a.size, val_a.size)

    if bad_a.size and goods.size:
        labels = np.r_[np.zeros(goods.size, int), np.ones(bad_a.size, int)]
        fitted, _ = f1_optimal_threshold(labels, np.r_[goods, bad_a])
        below = goods[goods < fitted]
        if below.size:  # halfway to the good side: no marked score lies in between
            fitted = float(below.max() + (fitted - below.max()) / 2)
        if not good_a.size and threshold is not None:  # a defect alone never raises it
            fitted = min(fitted, threshold)
        return result(fitted, "f1")
    if good_a.size:
        lowest = float(np.nextafter(good_a.max(), np.inf))  # the highest good is just below it
        return result(lowest if threshold is None else max(threshold, lowest), "above_good")
    if bad_a.size:
        lowest = float(bad_a.min())
        return result(lowest if threshold is None else min(threshold, lowest), "below_defective")
    if threshold is None:
        raise ValueError("there is no threshold to keep and no score to set one from")
    return result(threshold, "unchanged")


def verdict_flips(
    scores: Sequence[float] | np.ndarray, before: float | None, after: float
) -> tuple[int, int]:
    """How many of ``scores`` change verdict from ``before`` to ``after``: ``(to_good, to_anomalous)``.

    With no ``before`` threshold every image counted as good.
    """
    array = _scores(scores, "the")
    was = np.zeros(array.shape, bool) if before is None else array >= before
    now = array >= after
    return int(np.sum(was & ~now)), int(np.sum(~was & now))
