"""The training record: what a detector was trained on, how long it took, how its threshold was set.

A :class:`TrainingRecord` travels with the model in its checkpoint (under ``"record"``, checkpoint
format 3) and replaces the free ``info`` dict of format 2, whose keys were read by string all
over the app. Every field is typed and checked when the record is made (``__post_init__``, so
:func:`dataclasses.replace` checks too) and :meth:`TrainingRecord.from_dict` reads a record as a
stranger may have written it: wrong types, non-finite numbers, oversized strings, unknown
fields and paths where a folder name belongs are each one :class:`ValueError` line naming the
field. :meth:`TrainingRecord.from_info` upgrades a format-2 ``info`` dict on read::

    detector.record.data.describe()                 # "MVTec folder / bottle"
    detector.record.threshold_origin                # "validation_quantile", "synthetic_f1", ...
    replace(detector.record, sweep_key="CAC_s1")    # checked like a file's record

Torch-free (numpy only through :mod:`cainnflow.feedback`, imported when a record holds
feedback): the app's first page and the exported runtime may read records.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from typing import Any

from .auto_report import AutoCandidate, AutoReport
from .validate import (
    MAX_ABS_VALUE,
    count,
    duration,
    finite_number,
    folder_name,
    known_fields,
    short_text,
    typed,
)

__all__ = [
    "APP_DATA_SOURCES",
    "DATA_SOURCES",
    "RECORD_KEY",
    "THRESHOLD_ORIGINS",
    "AutoCandidate",
    "AutoReport",
    "DataReference",
    "Timings",
    "TrainingRecord",
]

RECORD_KEY = "record"
"""The checkpoint document's key for the record (format 3; format 2 had a free ``"info"``)."""

APP_DATA_SOURCES = ("demo", "mvtec", "custom", "upload")
"""Data the app opened and can open again (only through its allowed-roots check)."""
DATA_SOURCES = (*APP_DATA_SOURCES, "folder")
"""``"folder"``: data the library or the command line read; ``root`` is at most the folder's name."""

THRESHOLD_ORIGINS = ("validation_quantile", "synthetic_f1", "test_split", "user", "feedback")
"""How a threshold was set: a high percentile of the validation normals (training's default);
F1-optimal between validation normals and synthetic anomalies; fitted on the test split
(F1-optimal or a percentile of good test scores: optimistic); typed or moved by a person;
recalibrated from images an operator marked (:mod:`cainnflow.feedback`)."""

MAX_RECORD_BYTES = 1 << 20
"""Room for the largest feedback set (:data:`cainnflow.feedback.MAX_ITEMS` marks, ~160 kB) and auto report."""
MAX_PATH_CHARS = 4096
MAX_CONFIG_KEYS = 32
_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]{0,39}")


# --------------------------------------------------------------------------- field checks


def _optional(value: Any, check, what: str, *args: Any) -> Any:
    return None if value is None else check(value, what, *args)


def _scalar_map(value: Any, what: str) -> dict[str, Any]:
    """A flat object of settings: short identifier keys, values null / bool / finite number / short text."""
    if not isinstance(value, dict):
        raise ValueError(f"{what} must be an object, got {type(value).__name__}")
    if len(value) > MAX_CONFIG_KEYS:
        raise ValueError(f"{what} has {len(value)} fields, at most {MAX_CONFIG_KEYS}")
    checked: dict[str, Any] = {}
    for key, item in value.items():
        if not isinstance(key, str) or not _IDENTIFIER.fullmatch(key):
            raise ValueError(f"{what} has a field name that is not a short identifier: {str(key)[:40]!r}")
        where = f"{what}.{key}"
        if item is None or isinstance(item, bool):
            checked[key] = item
        elif isinstance(item, int | float):
            number = finite_number(item, where, limit=MAX_ABS_VALUE)  # an int stays an int
            checked[key] = item if isinstance(item, int) else number
        else:
            checked[key] = short_text(item, where, 40)
    return checked


# --------------------------------------------------------------------------- parts


@dataclass(frozen=True)
class DataReference:
    """Where the training images came from: enough for the app to open them again, never more.

    Attributes:
        source: one of :data:`DATA_SOURCES`.
        root: ``mvtec``: the dataset root; ``custom``: the good-images folder; ``upload``: the
            upload's id (a folder name); ``demo``: empty; ``folder``: at most the data root's
            folder name, never its path. The app opens ``mvtec`` and ``custom`` roots only inside
            its allowed roots (:func:`app.hosting.allowed_path`), whatever a file says.
        category: the category: one folder name, never a path.
        test_good, defect, masks: optional folders of a ``custom`` dataset.
    """

    source: str
    root: str
    category: str
    test_good: str = ""
    defect: str = ""
    masks: str = ""

    def __post_init__(self) -> None:
        what = "record.data"
        if short_text(self.source, f"{what}.source") not in DATA_SOURCES:
            raise ValueError(
                f"{what}.source must be one of {', '.join(DATA_SOURCES)}, got {self.source[:40]!r}"
            )
        folder_name(self.category, f"{what}.category")
        for name in ("root", "test_good", "defect", "masks"):
            short_text(getattr(self, name), f"{what}.{name}", MAX_PATH_CHARS)
        if self.source == "demo" and self.root:
            raise ValueError(f"{what}.root must be empty for the demo data")
        if self.source in ("upload", "folder"):
            folder_name(self.root, f"{what}.root", empty=self.source == "folder")
        if self.source != "custom" and (self.test_good or self.defect or self.masks):
            raise ValueError(f"{what}: test_good, defect and masks belong to custom data only")

    @classmethod
    def of_category(cls, category: str, *, root: str = "") -> DataReference | None:
        """Data the library read: the category's name and at most its root's folder name.

        None when ``category`` is not a plain folder name; a ``root`` that is not one is left out.
        """
        for folder in (root, ""):
            try:
                return cls("folder", folder, category)
            except ValueError:
                continue
        return None

    @property
    def reopenable(self) -> bool:
        """Whether the app recorded it (and may open it again, through its checks)."""
        return self.source in APP_DATA_SOURCES

    def describe(self) -> str:
        """``"MVTec folder / bottle"``: for people, never the root's path."""
        where = {"demo": "demo", "mvtec": "MVTec folder", "custom": "custom folders", "upload": "upload"}
        if self.source == "folder":
            return f"{self.root} / {self.category}" if self.root else self.category
        return f"{where[self.source]} / {self.category}"

    def to_dict(self) -> dict[str, str]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: Any, what: str = "record.data") -> DataReference:
        required = ("source", "root", "category")
        data = known_fields(raw, tuple(cls.__dataclass_fields__), what, required=required)
        return cls(**data)


@dataclass(frozen=True)
class Timings:
    """How long the (final) training took: from :class:`cainnflow.training.TrainingHistory`.

    Attributes:
        feature_seconds: caching the backbone's features (and the flip evidence).
        train_seconds: fitting the flows.
        steps: optimizer steps taken.
        stopped_early: early stopping ended it before its budget.
    """

    feature_seconds: float
    train_seconds: float
    steps: int
    stopped_early: bool

    def __post_init__(self) -> None:
        duration(self.feature_seconds, "record.timings.feature_seconds")
        duration(self.train_seconds, "record.timings.train_seconds")
        count(self.steps, "record.timings.steps")
        typed(self.stopped_early, bool, "record.timings.stopped_early")

    @property
    def total_seconds(self) -> float:
        return self.feature_seconds + self.train_seconds

    @classmethod
    def from_history(cls, history: Any) -> Timings:
        """From a :class:`cainnflow.training.TrainingHistory` (or its dict, as format 2 stored it)."""
        get = (
            history.get
            if isinstance(history, dict)
            else lambda name, default: getattr(history, name, default)
        )
        feature, train = get("feature_seconds", 0.0), get("train_seconds", 0.0)
        return cls(
            feature_seconds=float(duration(feature, "history.feature_seconds")),
            train_seconds=float(duration(train, "history.train_seconds")),
            steps=get("steps", 0),
            stopped_early=get("stopped_early", False),
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: Any, what: str = "record.timings") -> Timings:
        names = tuple(cls.__dataclass_fields__)
        data = known_fields(raw, names, what, required=names)
        return cls(**data)


def _check_feedback(value: Any) -> dict[str, Any]:
    """A :meth:`cainnflow.feedback.FeedbackSet.to_dict` document, checked by its own reader."""
    from .feedback import FeedbackSet  # numpy: only when a record holds feedback

    if not isinstance(value, dict):
        raise ValueError(f"record.feedback must be an object, got {type(value).__name__}")
    try:
        return FeedbackSet.from_dict(value).to_dict()
    except ValueError as exc:
        raise ValueError(
            f"record.feedback {str(exc).splitlines()[0] if str(exc) else 'is malformed'}"
        ) from exc


# --------------------------------------------------------------------------- the record


@dataclass(frozen=True)
class TrainingRecord:
    """What a detector was trained on and how: stored with it, shown in the app's model summary.

    Every field is None where it is not known (an untrained detector, an older checkpoint).

    Attributes:
        data: where the training images came from.
        n_train, n_val: good images trained on / held out for validation and calibration.
        train_config: the optimisation settings (:meth:`cainnflow.training.TrainConfig.to_dict`).
        timings: how long the training took.
        auto: what auto-configuration tried and chose.
        threshold_origin: how the current threshold was set (:data:`THRESHOLD_ORIGINS`).
        sweep_key: the sweep trial that trained it (:attr:`cainnflow.sweep.Trial.key`).
        feedback: images an operator marked, :meth:`cainnflow.feedback.FeedbackSet.to_dict`.
    """

    data: DataReference | None = None
    n_train: int | None = None
    n_val: int | None = None
    train_config: dict[str, Any] | None = None
    timings: Timings | None = None
    auto: AutoReport | None = None
    threshold_origin: str | None = None
    sweep_key: str | None = None
    feedback: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        for name, kind in (("data", DataReference), ("timings", Timings), ("auto", AutoReport)):
            if getattr(self, name) is not None:
                typed(getattr(self, name), kind, f"record.{name}")
        _optional(self.n_train, count, "record.n_train")
        _optional(self.n_val, count, "record.n_val")
        if self.train_config is not None:
            object.__setattr__(self, "train_config", _scalar_map(self.train_config, "record.train_config"))
        origin = _optional(self.threshold_origin, short_text, "record.threshold_origin")
        if origin is not None and origin not in THRESHOLD_ORIGINS:
            raise ValueError(
                f"record.threshold_origin must be one of {', '.join(THRESHOLD_ORIGINS)}, got {origin[:40]!r}"
            )
        _optional(self.sweep_key, short_text, "record.sweep_key")
        if self.feedback is not None:
            object.__setattr__(self, "feedback", _check_feedback(self.feedback))

    @property
    def category(self) -> str:
        """The category trained on ('' when unknown)."""
        return self.data.category if self.data is not None else ""

    def to_dict(self) -> dict[str, Any]:
        """The JSON form stored in checkpoints (:meth:`from_dict` reads it back)."""
        return {
            "data": self.data.to_dict() if self.data else None,
            "n_train": self.n_train,
            "n_val": self.n_val,
            "train_config": dict(self.train_config) if self.train_config is not None else None,
            "timings": self.timings.to_dict() if self.timings else None,
            "auto": self.auto.to_dict() if self.auto else None,
            "threshold_origin": self.threshold_origin,
            "sweep_key": self.sweep_key,
            "feedback": self.feedback,
        }

    @classmethod
    def from_dict(cls, raw: Any) -> TrainingRecord:
        """A record as a checkpoint holds it, checked field by field.

        Raises:
            ValueError: one line naming the field: not an object, an unknown field, a wrong
                type, a non-finite number, an oversized string, a path for a folder name, or
                more than :data:`MAX_RECORD_BYTES` in all.
        """
        data = known_fields(raw, tuple(cls.__dataclass_fields__), "record")
        _size(data, "record")
        return cls(
            data=_optional(data.get("data"), DataReference.from_dict, "record.data"),
            n_train=data.get("n_train"),
            n_val=data.get("n_val"),
            train_config=data.get("train_config"),
            timings=_optional(data.get("timings"), Timings.from_dict, "record.timings"),
            auto=_optional(data.get("auto"), AutoReport.from_dict, "record.auto"),
            threshold_origin=data.get("threshold_origin"),
            sweep_key=data.get("sweep_key"),
            feedback=data.get("feedback"),
        )

    @classmethod
    def from_info(cls, info: Any, history: Any = None) -> TrainingRecord:
        """The record of a format-2 checkpoint, from its free ``info`` dict (and ``history`` dict).

        ``info`` held ``dataset`` (the app's data reference), ``category``, ``n_train``,
        ``n_val``, ``train_config``, ``auto``, ``sweep_key``, ``data_root_name`` (the command
        line's data root folder), ``image_size`` (the model configuration's, dropped) and
        ``feedback``; their values are checked as strictly as a record's, other keys (a free
        dict could hold anything) are dropped. The timings come from the history; format 2 did
        not say how the threshold was set.

        Raises:
            ValueError: a known key holds a malformed value (one line naming it).
        """
        if not isinstance(info, dict):
            raise ValueError(f"info must be an object, got {type(info).__name__}")
        _size(info, "info")
        try:
            return cls._from_info(info, history)
        except ValueError as exc:  # name the field as the file does
            text = str(exc)
            for ours, theirs in _INFO_NAMES:
                if text.startswith(ours):
                    text = theirs + text[len(ours) :]
                    break
            raise ValueError(text) from exc

    @classmethod
    def _from_info(cls, info: dict[str, Any], history: Any) -> TrainingRecord:
        if info.get("dataset") is not None:
            data = DataReference.from_dict(info["dataset"])
        elif info.get("category"):
            root = folder_name(info.get("data_root_name") or "", "info.data_root_name", empty=True)
            data = DataReference("folder", root, folder_name(info["category"], "info.category"))
        else:
            data = None
        timings = None
        if isinstance(history, dict) and ("train_seconds" in history or "steps" in history):
            timings = Timings.from_history(history)
        return cls(
            data=data,
            n_train=info.get("n_train"),
            n_val=info.get("n_val"),
            train_config=info.get("train_config"),
            timings=timings,
            auto=_optional(info.get("auto"), AutoReport.from_dict, "record.auto"),
            sweep_key=info.get("sweep_key"),
            feedback=info.get("feedback"),
        )


_INFO_NAMES = (("record.data", "info.dataset"), ("record.timings", "history"), ("record.", "info."))
"""A format-2 file's names for the record's fields, for messages about it."""


def _size(document: dict[str, Any], what: str) -> None:
    try:
        size = len(json.dumps(document))
    except (TypeError, ValueError) as exc:  # not what a JSON reader gives
        raise ValueError(f"{what} holds a value that is not plain JSON") from exc
    if size > MAX_RECORD_BYTES:
        raise ValueError(f"{what} is larger than {MAX_RECORD_BYTES} bytes")
