"""Repeated design cells: several rows at the same (N, D, ...) point.

Why: rows at one point are fitted as independent observations. That is right for seeds, and wrong for a swept
hyperparameter that was not collapsed (a learning-rate sweep fitted as if every learning rate were another
measurement of the same loss): the fit then describes the average over the sweep, and its intervals are too
narrow. The fix is usually the best run per cell (``--collapse-min-over <column>``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
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


def seed_noise(df: pd.DataFrame, cells: Sequence[str], loss: str = "loss") -> pd.DataFrame:
    """Per cell (design point, e.g. one U): runs n, mean and std (ddof 1) of ``loss`` and the relative spread
    std/mean.

    Why: repeated seeds at one point measure the run-to-run noise; a law's error below it says nothing, and
    a difference between laws below it is a tie. Cells with one run have std NaN.
    """
    cells = list(cells)
    missing = [c for c in (*cells, loss) if c not in df.columns]
    if missing:
        raise ValueError(f"seed_noise: columns {missing} not in the table (columns: {list(df.columns)})")
    values = pd.to_numeric(df[loss], errors="coerce")
    grouped = df.assign(_loss=values).groupby(cells, dropna=False, sort=True)["_loss"]
    out = grouped.agg(n="count", mean="mean", std="std").reset_index()
    out["rel_spread"] = out["std"] / out["mean"]
    return out


def seed_noise_floor(df: pd.DataFrame, cells: Sequence[str], loss: str = "loss") -> dict[str, Any]:
    """The run-to-run noise of ``loss`` over cells with repeats: pooled relative std
    sqrt(Σ (n_i − 1)·(std_i/mean_i)² / Σ (n_i − 1)), with the median and largest per-cell spread.

    ``floor`` is NaN when no cell holds two runs (nothing measures the noise then).
    """
    per_cell = seed_noise(df, cells, loss)
    rep = per_cell[(per_cell["n"] >= 2) & per_cell["rel_spread"].notna()]
    out: dict[str, Any] = {"cells": list(cells), "n_cells": len(per_cell), "n_cells_with_repeats": len(rep)}
    if rep.empty:
        return {**out, "floor": math.nan, "median_rel_spread": math.nan, "max_rel_spread": math.nan}
    dof = rep["n"].to_numpy(dtype=float) - 1.0
    pooled = math.sqrt(float(np.sum(dof * rep["rel_spread"].to_numpy(dtype=float) ** 2) / np.sum(dof)))
    out.update(floor=pooled, median_rel_spread=float(rep["rel_spread"].median()))
    out.update(max_rel_spread=float(rep["rel_spread"].max()), n_runs=int(rep["n"].sum()))
    return out
