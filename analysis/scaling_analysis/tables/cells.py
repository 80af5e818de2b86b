"""Repeated design cells: several rows at the same (N, D, ...) point.

Why: rows at one point are fitted as independent observations. That is right for seeds, and wrong for a swept
hyperparameter that was not collapsed (a learning-rate sweep fitted as if every learning rate were another
measurement of the same loss): the fit then describes the average over the sweep, and its intervals are too
narrow. The fix is usually the best run per cell (``--collapse-min-over <column>``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import pandas as pd

#: Columns that vary between runs at one point for reasons that are not a sweep.
NOT_A_SWEEP = frozenset(
    {
        "run_id", "source_row", "seed", "status", "study", "error", "code_version", "subset_hash",
        "tokenizer_hash", "wall_time_s", "tokens_per_s", "steps", "epochs", "tokens_at_best",
        "epochs_at_best", "converged", "stop_reason", "condition",
    }
)  # fmt: skip
_METRIC = re.compile(r"(loss|bpb|ppl|perplexity|accuracy|error)", re.I)


def _sweep_candidates(df: pd.DataFrame, cells: Sequence[str], repeated: pd.Series) -> list[str]:
    """Columns that vary inside repeated cells and take few values overall (a swept setting), fewest first."""
    inside = df[repeated.to_numpy()]
    out = []
    for col in df.columns:
        if col in cells or col in NOT_A_SWEEP or _METRIC.search(str(col)):
            continue
        if df[col].map(lambda v: isinstance(v, dict | list)).any():
            continue  # a mapping-valued axis (mixture weights): unhashable; `condition` labels stand for it
        n_values = df[col].nunique(dropna=False)
        if n_values > max(10, len(df) // 4):
            continue  # an id or a coordinate, not a sweep
        if (inside.groupby(list(cells), dropna=False)[col].nunique(dropna=False) > 1).any():
            out.append((n_values, str(col)))
    return [c for _, c in sorted(out)]


def repeated_cells(df: pd.DataFrame, cells: Sequence[str]) -> dict[str, Any]:
    """How many cells hold more than one row, whether seeds explain it, and the collapse that would fix it."""
    cells = [c for c in cells if c in df.columns]
    if not cells or df.empty:
        return {"cells": cells, "n_cells": 0, "n_repeated_cells": 0}
    size = df.groupby(cells, dropna=False)[cells[0]].transform("size")
    repeated = size > 1
    n_cells = int(df[cells].drop_duplicates().shape[0])
    out: dict[str, Any] = {
        "cells": cells,
        "n_cells": n_cells,
        "n_repeated_cells": int(df.loc[repeated, cells].drop_duplicates().shape[0]),
        "max_rows_per_cell": int(size.max()),
    }
    if not repeated.any():
        return out
    if "seed" in df.columns:
        seeds = df[repeated.to_numpy()].groupby(cells, dropna=False)["seed"].nunique()
        sizes = df[repeated.to_numpy()].groupby(cells, dropna=False).size()
        out["explained_by_seeds"] = bool((seeds == sizes).all())
    else:
        out["explained_by_seeds"] = False
    out["swept_columns"] = _sweep_candidates(df, cells, repeated)
    return out


def repeated_cells_warning(info: dict[str, Any], n_rows: int) -> str | None:
    """The report's warning for repeated cells that seeds do not explain (None when there is nothing to
    say)."""
    if not info.get("n_repeated_cells") or info.get("explained_by_seeds"):
        return None
    cells = ", ".join(info["cells"])
    text = (
        f"{info['n_repeated_cells']} of {info['n_cells']} ({cells}) cells hold several rows (up to "
        f"{info['max_rows_per_cell']}); they are fitted as independent runs, which is wrong for a swept "
        "setting "
        "(intervals too narrow, the fit describes the average over the sweep)"
    )
    swept = info.get("swept_columns") or []
    if swept:
        text += (
            f". Varying inside cells: {', '.join(swept)}; to keep the best run per cell, collapse with "
            f"--collapse-min-over {swept[0]} ({n_rows} -> {info['n_cells']} rows)"
        )
    else:
        text += ". If the repeats are replicates (seeds), add a seed column to say so"
    return text
