"""The paper-format table of a sweep: one row per category, one column per setting combination."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

from .results import TrialResult

__all__ = ["TABLE_FILE", "paper_table"]

TABLE_FILE = "table.md"
PERCENT = 100.0
MISSING = "—"

_CONFIG_FIELDS = ("backbone", "variant", "steps", "image_size", "epochs", "lr", "batch_size", "weights")


def _mean(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None and math.isfinite(v)]
    return sum(present) / len(present) if present else None


def _percent(value: float | None) -> str:
    return MISSING if value is None else f"{value * PERCENT:.2f}"


def _setting_label(name: str, value: Any) -> str:
    if name == "epochs":
        return "step budget" if value is None else f"{value} ep"
    if name == "steps":
        return f"steps {value}"
    if name == "image_size":
        return f"{value}px"
    if name in ("backbone", "variant"):
        return str(value)
    return f"{name} {value:g}" if isinstance(value, float) else f"{name} {value}"


def _config(result: TrialResult) -> tuple[Any, ...]:
    return tuple(getattr(result.trial, f) for f in _CONFIG_FIELDS)


def paper_table(results: Sequence[TrialResult]) -> str:
    """A Markdown table in the paper's format: one row per category, a mean row.

    One column per setting combination (named by the settings that differ; the shared ones
    are listed under the table); each cell is ``image / pixel AUROC`` in %, averaged over seeds.
    """
    if not results:
        return "(no finished trials)\n"
    configs: list[tuple[Any, ...]] = []
    for r in results:
        if _config(r) not in configs:
            configs.append(_config(r))
    configs.sort(key=lambda c: tuple((v is None, v if v is not None else 0) for v in c))
    varying = [i for i in range(len(_CONFIG_FIELDS)) if len({c[i] for c in configs}) > 1]
    fixed = [i for i in range(len(_CONFIG_FIELDS)) if i not in varying]

    def header(config: tuple[Any, ...]) -> str:
        return (
            " ".join(_setting_label(_CONFIG_FIELDS[i], config[i]) for i in varying) or "image / pixel AUROC"
        )

    categories = sorted({r.trial.category for r in results})
    cells: dict[tuple[str, tuple[Any, ...]], tuple[float | None, float | None]] = {}
    for category in categories:
        for config in configs:
            group = [r for r in results if r.trial.category == category and _config(r) == config]
            if group:
                cells[category, config] = (
                    _mean(r.image_auroc for r in group),
                    _mean(r.pixel_auroc for r in group),
                )
    lines = [
        "| category | " + " | ".join(header(c) for c in configs) + " |",
        "|---|" + "---|" * len(configs),
    ]
    for category in categories:
        row = []
        for config in configs:
            img, px = cells.get((category, config), (None, None))
            row.append(f"{_percent(img)} / {_percent(px)}" if (category, config) in cells else MISSING)
        lines.append(f"| {category} | " + " | ".join(row) + " |")
    means = []
    for config in configs:
        present = [cells[c, config] for c in categories if (c, config) in cells]
        means.append(f"{_percent(_mean(p[0] for p in present))} / {_percent(_mean(p[1] for p in present))}")
    lines.append("| **mean** | " + " | ".join(means) + " |")
    n_seeds = len({r.trial.seed for r in results})
    note = "image / pixel AUROC in %" + (f", mean over {n_seeds} seeds" if n_seeds > 1 else "")
    note += "; " + ", ".join(_setting_label(_CONFIG_FIELDS[i], configs[0][i]) for i in fixed)
    return "\n".join(lines) + f"\n\n{note}\n"
