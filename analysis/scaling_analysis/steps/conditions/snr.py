"""Signal and noise per comparison: is the difference between two conditions larger than the seed noise?

For each pair of conditions at each size, signal = |difference of their mean losses| and noise = the
seed-to-seed standard error of that difference, sqrt(s_a²/n_a + s_b²/n_b) (s: the within-cell std over
seeds, n: the runs in the cell); SNR = signal / noise, in the spirit of "Signal and Noise" (Heineman et al.
2025) and DataDecide (Magnusson et al. 2025). An SNR below about 2 is a difference the seeds alone could
make: another set of seeds may order the pair the other way. Without two runs in both cells of a pair the
noise is unknown, and no number is given.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np
import pandas as pd

from .labels import mean_loss_table

#: the SNR from which a comparison counts as resolved above the seed noise
SNR_THRESHOLD = 2.0
NO_REPEATS = "no seed repeats: SNR not measured"


def pair_snr(a: pd.Series, b: pd.Series) -> dict[str, Any]:
    """Signal, noise and SNR of two cells (``mean``, ``std``, ``n`` each); ``snr`` None for zero noise."""
    signal = abs(float(a["mean"]) - float(b["mean"]))
    noise = math.sqrt(float(a["std"]) ** 2 / int(a["n"]) + float(b["std"]) ** 2 / int(b["n"]))
    return {"signal": signal, "noise": noise, "snr": signal / noise if noise > 0 else None}


def _pair_rows(cells: pd.DataFrame, x: str) -> list[dict[str, Any]]:
    """One row per pair of conditions at each size where both cells hold two runs or more."""
    rows = []
    for _size, g in cells.loc[cells["n"] >= 2].groupby(x, sort=True):
        by_cond = {str(r["condition"]): r for _, r in g.iterrows()}
        for a, b in itertools.combinations(sorted(by_cond), 2):
            ca, cb = by_cond[a], by_cond[b]
            better = a if ca["mean"] < cb["mean"] else b if cb["mean"] < ca["mean"] else None
            row = {x: float(g[x].iloc[0]), "a": a, "b": b, "better": better, **pair_snr(ca, cb)}
            rows.append({**row, "n_a": int(ca["n"]), "n_b": int(cb["n"])})
    return rows


def _same_order(rows: list[dict[str, Any]], cells: pd.DataFrame, x: str, target: float) -> None:
    """Mark each pair below the target size: does its mean-loss order match the target size's?"""
    top = cells.loc[cells[x] == target].set_index("condition")["mean"]
    for r in rows:
        a, b = r["a"], r["b"]
        if r[x] == target or a not in top or b not in top:
            r["same_order_as_target"] = None
            continue
        big = np.sign(top[a] - top[b])
        little = 0.0 if r["better"] is None else (-1.0 if r["better"] == a else 1.0)
        r["same_order_as_target"] = bool(big == little) if big != 0 else None


def _summary(rows: list[dict[str, Any]], x: str, threshold: float) -> list[dict[str, Any]]:
    """Per size: pairs, median SNR, the share at or above ``threshold`` and the weakest pair."""
    out = []
    for size in sorted({r[x] for r in rows}):
        here = [r for r in rows if r[x] == size]
        measured = [r for r in here if r["snr"] is not None]
        snrs = np.array([r["snr"] for r in measured], dtype=float)
        weakest = min(measured, key=lambda r: r["snr"]) if measured else None
        out.append(
            {
                x: size,
                "n_pairs": len(here),
                "n_measured": len(measured),
                "median_snr": float(np.median(snrs)) if snrs.size else None,
                "share_resolved": float(np.mean(snrs >= threshold)) if snrs.size else None,
                "min_snr": float(snrs.min()) if snrs.size else None,
                "weakest_pair": [weakest["a"], weakest["b"]] if weakest else None,
            }
        )
    return out


def condition_snr(
    df: pd.DataFrame, *, x: str = "U", loss: str = "loss", threshold: float = SNR_THRESHOLD
) -> dict[str, Any]:
    """Signal-to-noise of every pair of conditions at every size (``df`` has ``condition``, ``x``, ``loss``).

    Returns ``{"skipped": reason}`` with fewer than two conditions or without a pair of cells that both hold
    two runs or more (``NO_REPEATS``): the noise is then unknown, and so is the SNR.
    """
    if df["condition"].nunique() < 2:
        return {"skipped": "one condition: nothing to compare"}
    cells = mean_loss_table(df, x, loss)
    rows = _pair_rows(cells, x)
    if not rows:
        return {"skipped": NO_REPEATS}
    target = float(cells.loc[cells.groupby(x)["condition"].transform("nunique") >= 2, x].max())
    _same_order(rows, cells, x, target)
    return {
        "x": x,
        "threshold": threshold,
        "target_size": target,
        "n_conditions": int(df["condition"].nunique()),
        "sizes": _summary(rows, x, threshold),
        "pairs": rows,
    }
