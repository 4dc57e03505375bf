"""What auto-configuration tried and chose: the report stored in the training record.

:func:`cainnflow.autoconfig.auto_configure` makes an :class:`AutoReport`; the checkpoint keeps
it in :attr:`cainnflow.record.TrainingRecord.auto`, read back by :meth:`AutoReport.from_dict`
as a stranger may have written it (one :class:`ValueError` line naming the field). Torch-free.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from .config import MAX_STAGE_INDEX, MAX_STAGES, POOLINGS
from .validate import MAX_ABS_VALUE, count, duration, finite_number, known_fields, short_text, typed

__all__ = ["AutoCandidate", "AutoReport"]

MAX_CANDIDATES = 1000
MAX_KINDS = 32


def _fraction(value: Any, what: str) -> float:
    number = finite_number(value, what)
    if not 0.0 <= number <= 1.0:
        raise ValueError(f"{what} must lie in [0, 1], got {number:g}")
    return number


@dataclass(frozen=True)
class AutoCandidate:
    """One setting auto-configuration tried and how it did on the held-out images.

    Attributes:
        stages: backbone stages used.
        sigma: anomaly-map smoothing.
        pooling: how the image score is made (:data:`cainnflow.scoring.POOLINGS`).
        image_auroc: held-out good images vs synthetic anomalies.
        pixel_auroc: pixel AUROC on the same images (synthetic masks).
        objective: what was maximised, the mean of image and pixel AUROC.
        lead_low: lower 95 % bound of the objective's lead over the default setting (paired
            bootstrap over the held-out images); a setting replaces the defaults only when it
            is above zero. None for the default itself, and in records written before it.
        aupro: AUPRO on the same images (each synthetic anomaly one region), reported, not
            maximised; None in records written before it was measured.
    """

    stages: tuple[int, ...]
    sigma: float
    pooling: str
    image_auroc: float
    pixel_auroc: float
    objective: float
    lead_low: float | None = None
    aupro: float | None = None

    def __post_init__(self) -> None:
        what = "record.auto candidate"
        if not isinstance(self.stages, tuple) or not 1 <= len(self.stages) <= MAX_STAGES:
            raise ValueError(f"{what} stages must be 1 to {MAX_STAGES} stage numbers")
        for stage in self.stages:
            if typed(stage, int, f"{what} stage") < 0 or stage > MAX_STAGE_INDEX:
                raise ValueError(f"{what} stage must lie in [0, {MAX_STAGE_INDEX}], got {stage}")
        if not finite_number(self.sigma, f"{what} sigma", limit=MAX_ABS_VALUE) > 0:
            raise ValueError(f"{what} sigma must be positive")
        if short_text(self.pooling, f"{what} pooling") not in POOLINGS:
            raise ValueError(f"{what} pooling must be one of {', '.join(POOLINGS)}")
        for name in ("image_auroc", "pixel_auroc", "objective"):
            _fraction(getattr(self, name), f"{what} {name}")
        if self.aupro is not None:
            _fraction(self.aupro, f"{what} aupro")
        if self.lead_low is not None and not -1.0 <= finite_number(self.lead_low, f"{what} lead_low") <= 1.0:
            raise ValueError(f"{what} lead_low must lie in [-1, 1], got {self.lead_low:g}")

    def to_dict(self) -> dict[str, Any]:
        data = {**asdict(self), "stages": list(self.stages)}
        for name in ("lead_low", "aupro"):
            if data[name] is None:
                del data[name]  # as records written before these were measured
        return data

    @classmethod
    def from_dict(cls, raw: Any, what: str = "record.auto candidate") -> AutoCandidate:
        names = tuple(cls.__dataclass_fields__)
        data = known_fields(raw, names, what, required=names[:-2])  # lead_low, aupro: newer records only
        stages = typed(data["stages"], list, f"{what} stages")
        return cls(**{**data, "stages": tuple(stages)})


@dataclass(frozen=True)
class AutoReport:
    """What :func:`cainnflow.autoconfig.auto_configure` tried and chose.

    Attributes:
        chosen: the setting trained on all the good images.
        candidates: every setting tried.
        n_train, n_holdout: good images the stage flows trained on / held out.
        n_synthetic: synthetic anomalies pasted into the held-out images.
        kinds: the kinds of synthetic anomaly used.
        proposed_threshold: F1-optimal between the final model's validation images and the
            synthetic anomalies (None: none could be proposed).
        seconds: the whole auto-configuration, both trainings included.
    """

    chosen: AutoCandidate
    candidates: tuple[AutoCandidate, ...]
    n_train: int
    n_holdout: int
    n_synthetic: int
    kinds: tuple[str, ...]
    proposed_threshold: float | None
    seconds: float

    def __post_init__(self) -> None:
        what = "record.auto"
        typed(self.chosen, AutoCandidate, f"{what}.chosen")
        if not isinstance(self.candidates, tuple) or len(self.candidates) > MAX_CANDIDATES:
            raise ValueError(f"{what}.candidates must be at most {MAX_CANDIDATES} settings")
        for candidate in self.candidates:
            typed(candidate, AutoCandidate, f"{what}.candidates")
        for name in ("n_train", "n_holdout", "n_synthetic"):
            count(getattr(self, name), f"{what}.{name}")
        if not isinstance(self.kinds, tuple) or len(self.kinds) > MAX_KINDS:
            raise ValueError(f"{what}.kinds must be at most {MAX_KINDS} names")
        for kind in self.kinds:
            short_text(kind, f"{what}.kinds", 40)
        if self.proposed_threshold is not None:
            finite_number(self.proposed_threshold, f"{what}.proposed_threshold")
        duration(self.seconds, f"{what}.seconds")

    @property
    def kept_defaults(self) -> bool:
        """The default setting was kept: no other led it clearly (records with leads only)."""
        return self.chosen.lead_low is None and any(c.lead_low is not None for c in self.candidates)

    def to_dict(self) -> dict[str, Any]:
        return {
            "chosen": self.chosen.to_dict(),
            "candidates": [c.to_dict() for c in self.candidates],
            "n_train": self.n_train,
            "n_holdout": self.n_holdout,
            "n_synthetic": self.n_synthetic,
            "kinds": list(self.kinds),
            "proposed_threshold": self.proposed_threshold,
            "seconds": self.seconds,
        }

    @classmethod
    def from_dict(cls, raw: Any, what: str = "record.auto") -> AutoReport:
        names = tuple(cls.__dataclass_fields__)
        data = known_fields(raw, names, what, required=names)
        candidates = typed(data["candidates"], list, f"{what}.candidates")
        if len(candidates) > MAX_CANDIDATES:
            raise ValueError(f"{what}.candidates must be at most {MAX_CANDIDATES} settings")
        return cls(
            chosen=AutoCandidate.from_dict(data["chosen"]),
            candidates=tuple(AutoCandidate.from_dict(c) for c in candidates),
            n_train=data["n_train"],
            n_holdout=data["n_holdout"],
            n_synthetic=data["n_synthetic"],
            kinds=tuple(typed(data["kinds"], list, f"{what}.kinds")),
            proposed_threshold=data["proposed_threshold"],
            seconds=data["seconds"],
        )
