"""Exceptions raised by cainnflow.

Every error a user can cause (a bad file, a missing folder, unavailable weights) is a
:class:`CainnflowError` with a message that reads as one clear line; the CLI prints it and
exits non-zero, the app shows it in the page.
"""

__all__ = [
    "CainnflowError",
    "CheckpointError",
    "DataError",
    "TrainingCancelled",
    "TrainingError",
    "WeightsUnavailableError",
]


class CainnflowError(Exception):
    """Base class for errors caused by input, files or environment (not by bugs)."""


class DataError(CainnflowError):
    """A dataset folder, image or mask cannot be used."""


class WeightsUnavailableError(CainnflowError):
    """Pretrained backbone weights cannot be obtained on this machine."""


class CheckpointError(CainnflowError):
    """A checkpoint file is missing, truncated, foreign or incompatible."""


class TrainingError(CainnflowError):
    """Training cannot go on (for example the loss became NaN or infinite)."""


class TrainingCancelled(CainnflowError):
    """Training was cancelled by the caller; the last good state is kept."""
