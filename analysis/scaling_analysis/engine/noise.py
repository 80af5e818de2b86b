"""Seed noise: the run-to-run spread of the loss at one design point.

Why: repeated seeds at one point measure the noise a law's error must be judged against (Choshen et al.
2024 find seed-to-seed variation alone around 3.5%); a difference between laws below it is a tie.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd


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
