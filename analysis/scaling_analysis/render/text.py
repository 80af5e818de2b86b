"""Number and table formatting for report.md: full precision for parameters, a few digits for summaries.

Rounded scaling-law parameters change predictions (Besiroglu et al. 2024), so ``full`` is the shortest repr
that round-trips; ``short`` and ``readable`` are for reading, with full precision kept in fit.json.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np


def full(v: Any) -> str:
    """A number at full precision (shortest repr that round-trips), or the value as text."""
    if v is None:
        return "—"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        f = float(v)
        return repr(f) if math.isfinite(f) else str(f)
    return str(v)


def short(v: Any, digits: int = 4) -> str:
    """A number with ``digits`` significant digits (for summaries, never for fitted parameters)."""
    if v is None:
        return "—"
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v))
    if isinstance(v, (int, np.integer)):
        return f"{int(v):,}"
    if isinstance(v, (float, np.floating)):
        f = float(v)
        if not math.isfinite(f):
            return str(f)
        return f"{f:.{digits}g}"
    return str(v)


def pct(v: Any) -> str:
    if v is None or not isinstance(v, (int, float, np.floating)) or not math.isfinite(float(v)):
        return "—"
    return f"{100 * float(v):.3g}%"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def cell(x: Any) -> str:
        return str(x).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def readable(v: Any, digits: int = 5) -> str:
    """A parameter for reading: ``digits`` significant digits (full precision stays in fit.json)."""
    return short(v, digits) if isinstance(v, float | np.floating) else full(v)
