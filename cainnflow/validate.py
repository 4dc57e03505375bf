"""Strict checks of values read from files a stranger may have written (checkpoints, exports).

JSON-ish rules shared by :mod:`cainnflow.checkpoint`, :mod:`cainnflow.runtime` and
:meth:`cainnflow.stats.ScoreStats.from_dict`: a ``true`` is never a number, numbers are
finite, and each check raises the caller's error type with one line naming the field.
"""

from __future__ import annotations

import math
import re
from typing import Any

__all__ = [
    "MAX_ABS_VALUE",
    "count",
    "duration",
    "finite_number",
    "folder_name",
    "known_fields",
    "short_text",
    "typed",
]

MAX_ABS_VALUE = 1e12  # scores live in [0, 1) or are NLLs; anything beyond this is corrupt
MAX_COUNT = 10**8
MAX_SECONDS = 1e9
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def typed(value: Any, kind: type | tuple[type, ...], what: str, error: type[Exception] = ValueError) -> Any:
    """``value`` when it is a ``kind`` (a bool only where ``kind`` names bool); else ``error``."""
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds):
        raise error(f"{what} has the wrong type ({type(value).__name__})")
    return value


def finite_number(
    value: Any,
    what: str,
    error: type[Exception] = ValueError,
    *,
    limit: float | None = None,
    minimum: float | None = None,
) -> float:
    """``value`` as a float when it is a finite number (not a bool, ``|value| <= limit``,
    ``value >= minimum``); else ``error``."""
    number = not isinstance(value, bool) and isinstance(value, int | float) and math.isfinite(value)
    if not number or (limit is not None and abs(value) > limit):
        sane = " of sane size" if limit is not None else ""
        raise error(f"{what} must be a finite number{sane}, got {str(value)[:40]!r}")
    if minimum is not None and value < minimum:
        raise error(f"{what} must be at least {minimum:g}, got {value:g}")
    return float(value)


def known_fields(
    value: Any,
    allowed: tuple[str, ...],
    what: str,
    error: type[Exception] = ValueError,
    *,
    required: tuple[str, ...] = (),
) -> dict:
    """``value`` when it is an object whose keys are all in ``allowed`` and include ``required``."""
    if not isinstance(value, dict):
        raise error(f"{what} must be an object, got {type(value).__name__}")
    unknown = sorted(str(k) for k in value if k not in allowed)
    if unknown:
        raise error(f"{what} has an unknown field {unknown[0][:60]!r}")
    missing = [k for k in required if k not in value]
    if missing:
        raise error(f"{what} has no {missing[0]!r}")
    return value


def short_text(value: Any, what: str, limit: int = 200, error: type[Exception] = ValueError) -> str:
    """``value`` when it is a string of at most ``limit`` characters and no control characters."""
    typed(value, str, what, error)
    if len(value) > limit:
        raise error(f"{what} is too long ({len(value)} characters, at most {limit})")
    if _CONTROL.search(value):
        raise error(f"{what} holds control characters")
    return value


def folder_name(value: Any, what: str, *, empty: bool = False, error: type[Exception] = ValueError) -> str:
    """One plain folder name, never a path: no separators, not ``.`` or ``..`` (``""`` if ``empty``)."""
    value = short_text(value, what, error=error)
    if (not value and not empty) or value in (".", "..") or "/" in value or "\\" in value:
        raise error(f"{what} must be a folder name, not a path")
    return value


def count(value: Any, what: str, error: type[Exception] = ValueError, *, limit: int = MAX_COUNT) -> int:
    """``value`` when it is a whole number (not a bool) in ``[0, limit]``."""
    typed(value, int, what, error)
    if not 0 <= value <= limit:
        raise error(f"{what} must be a count in [0, {limit}], got {value}")
    return value


def duration(value: Any, what: str, error: type[Exception] = ValueError) -> float:
    """A duration: a finite number of seconds in ``[0, MAX_SECONDS]``."""
    return finite_number(value, what, error, limit=MAX_SECONDS, minimum=0.0)
