"""A sweep's ``results.csv``: one :class:`TrialResult` per finished trial, read and written as CSV."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from ..errors import DataError
from .grid import Trial

__all__ = [
    "CHECKPOINT_DIR",
    "RESULTS_FILE",
    "RESULT_COLUMNS",
    "TrialResult",
    "parse_results",
    "read_results",
    "results_csv",
]

RESULTS_FILE = "results.csv"
CHECKPOINT_DIR = "checkpoints"

RESULT_COLUMNS: tuple[str, ...] = (
    "key",
    "category",
    "backbone",
    "variant",
    "steps",
    "image_size",
    "seed",
    "epochs",
    "lr",
    "batch_size",
    "weights",
    "image_auroc",
    "pixel_auroc",
    "aupro",
    "train_s",
    "ms_per_image",
    "device",
    "host",
    "checkpoint",
    "data_root",
    "finished_at",
)


@dataclass(frozen=True)
class TrialResult:
    """One row of ``results.csv``: a trial's settings, metrics and where its checkpoint is.

    Attributes:
        trial: the settings.
        image_auroc, pixel_auroc, aupro: test metrics in [0, 1] (None when unavailable).
        train_s: seconds of feature caching plus flow training.
        ms_per_image: scoring time per test image (backbone + flows), on the trial's device.
        device: the device the trial ran on.
        host: the machine the trial ran on.
        checkpoint: the checkpoint file, relative to the folder of ``results.csv``.
        data_root: the dataset root the trial read.
        finished_at: UTC time the row was written (ISO 8601).
    """

    trial: Trial
    image_auroc: float | None
    pixel_auroc: float | None
    aupro: float | None
    train_s: float
    ms_per_image: float | None
    device: str
    host: str
    checkpoint: str
    data_root: str
    finished_at: str = ""

    def to_row(self) -> dict[str, str]:
        values: dict[str, Any] = {"key": self.trial.key, **asdict(self.trial)}
        for f in fields(self):
            if f.name != "trial":
                values[f.name] = getattr(self, f.name)
        return {column: _csv_text(values[column]) for column in RESULT_COLUMNS}

    @classmethod
    def from_row(cls, row: dict[str, str]) -> TrialResult:
        try:
            trial = Trial(
                category=row["category"],
                backbone=row["backbone"],
                variant=row["variant"],
                steps=int(row["steps"]),
                image_size=int(row["image_size"]),
                seed=int(row["seed"]),
                epochs=None if row["epochs"] == "" else int(row["epochs"]),
                lr=float(row["lr"]),
                batch_size=int(row["batch_size"]),
                weights=row["weights"],
            )
            return cls(
                trial=trial,
                image_auroc=_optional_float(row["image_auroc"]),
                pixel_auroc=_optional_float(row["pixel_auroc"]),
                aupro=_optional_float(row["aupro"]),
                train_s=float(row["train_s"]),
                ms_per_image=_optional_float(row["ms_per_image"]),
                device=row["device"],
                host=row["host"],
                checkpoint=row["checkpoint"],
                data_root=row["data_root"],
                finished_at=row["finished_at"],
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"not a row of a cainnflow sweep: {exc}") from exc


def _csv_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _optional_float(text: str) -> float | None:
    return None if text == "" else float(text)


def read_results(path: str | Path) -> list[TrialResult]:
    """The rows of a ``results.csv`` written by a sweep (empty if the file is missing).

    Raises:
        DataError: the file is not a sweep's results table.
    """
    path = Path(path)
    if not path.exists():
        return []
    return parse_results(path.read_text(encoding="utf-8"), name=path.name)


def parse_results(text: str, *, name: str = RESULTS_FILE) -> list[TrialResult]:
    """Parses the text of a ``results.csv``.

    Raises:
        DataError: missing columns or unreadable rows (the message names the line).
    """
    reader = csv.DictReader(io.StringIO(text))
    missing = [c for c in RESULT_COLUMNS if c not in (reader.fieldnames or ())]
    if missing:
        raise DataError(f"{name} is not a cainnflow sweep's results table: missing {', '.join(missing)}")
    results = []
    for line, row in enumerate(reader, start=2):
        try:
            results.append(TrialResult.from_row(row))
        except DataError as exc:
            raise DataError(f"{name}, line {line}: {exc}") from exc
    return results


def results_csv(results: Iterable[TrialResult]) -> bytes:
    """The text of a ``results.csv`` holding ``results`` (UTF-8)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=RESULT_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for result in results:
        writer.writerow(result.to_row())
    return buffer.getvalue().encode("utf-8")
