"""Strict checks of values read from files a stranger may have written (checkpoints, exports).

JSON-ish rules shared by :mod:`cainnflow.checkpoint`, :mod:`cainnflow.runtime` and
:meth:`cainnflow.stats.ScoreStats.from_dict`: a ``true`` is never a number, numbers are
finite, and each check raises the caller's error type with one line naming the field.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["MAX_ABS_VALUE", "finite_number", "typed"]

MAX_ABS_VALUE = 1e12  # scores live in [0, 1) or are NLLs; anything beyond this is corrupt


def typed(value: Any, kind: type | tuple[type, ...], what: str, error: type[Exception] = ValueError) -> Any:
    """``value`` when it is a ``kind`` (a bool only where ``kind`` names bool); else ``error``."""
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds):
        raise error(f"{what} has the wrong type ({type(value).__name__})")
    return value


def finite_number(
    value: Any, what: str, error: type[Exception] = ValueError, *, limit: float | None = None
) -> float:
    """``value`` as a float when it is a finite number (not a bool, ``|value| <= limit``); else ``error``."""
    number = not isinstance(value, bool) and isinstance(value, int | float) and math.isfinite(value)
    if not number or (limit is not None and abs(value) > limit):
        sane = " of sane size" if limit is not None else ""
        raise error(f"{what} must be a finite number{sane}, got {str(value)[:40]!r}")
    return float(value)
