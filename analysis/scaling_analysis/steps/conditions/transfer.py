"""Domain transfer and mixtures against their parts, from runs swept over ``subset.weights``.

Why: a domain study asks how much training on one domain helps another (the train-domain × eval-domain loss
matrix) and whether that changes with data size; a mixture study asks whether a mixture beats its parts and
the linear interpolation of their losses. Both read the ``axis_weights`` mapping of each run and the
per-domain test losses (``test_loss_<domain>``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from .labels import format_value, is_mapping

WEIGHTS_AXIS = "axis_weights"
EVAL_PREFIX = "test_loss_"


def weights_of(value: Any) -> dict[str, float]:
    """A run's mixture weights {domain: share > 0} (None and zero entries dropped)."""
    if not is_mapping(value):
        return {}
    out = {}
    for k, v in value.items():
        if v is None:
            continue
        f = float(v)
        if np.isfinite(f) and f > 0:
            out[str(k)] = f
    return out


def eval_domains(df: pd.DataFrame) -> list[str]:
    """Evaluation domains: the ``test_loss_<domain>`` columns."""
    return sorted(str(c).removeprefix(EVAL_PREFIX) for c in df.columns if str(c).startswith(EVAL_PREFIX))


def single_domain_runs(df: pd.DataFrame) -> pd.DataFrame:
    """Runs whose subset has exactly one domain, with a ``train_domain`` column."""
    if WEIGHTS_AXIS not in df:
        return df.iloc[0:0].assign(train_domain=pd.Series(dtype=str))
    weights = df[WEIGHTS_AXIS].map(weights_of)
    single = weights.map(len) == 1
    out = df.loc[single].copy()
    out["train_domain"] = [next(iter(w)) for w in weights[single]]
    return out


def _matrix(g: pd.DataFrame, domains: list[str]) -> dict[str, dict[str, float]]:
    """{train domain: {eval domain: mean test loss}} at one size."""
    means = g.groupby("train_domain")[[EVAL_PREFIX + d for d in domains]].mean()
    return {str(t): {d: float(means.loc[t, EVAL_PREFIX + d]) for d in domains} for t in means.index}


def _transfer_rows(matrices: Mapping[float, Mapping[str, Mapping[str, float]]]) -> list[dict[str, Any]]:
    """Per (train, eval) pair: the gap to in-domain training at the smallest and largest shared size."""
    sizes = sorted(matrices)
    rows = []
    pairs = {(t, e) for m in matrices.values() for t in m for e in m[t] if t != e and e in m}
    for t, e in sorted(pairs):
        gaps = {
            s: matrices[s][t][e] - matrices[s][e][e] for s in sizes if t in matrices[s] and e in matrices[s]
        }
        if not gaps:
            continue
        lo, hi = min(gaps), max(gaps)
        change = (gaps[hi] - gaps[lo]) / abs(gaps[lo]) if lo != hi and gaps[lo] else None
        row: dict[str, Any] = {
            "train": t,
            "eval": e,
            "gaps": {format_value(s): gaps[s] for s in sorted(gaps)},
        }
        row.update(
            small_size=lo, large_size=hi, gap_small=gaps[lo], gap_large=gaps[hi], relative_change=change
        )
        rows.append(row)
    return rows


def domain_matrix(df: pd.DataFrame, *, x: str = "U") -> dict[str, Any]:
    """The train-domain × eval-domain test-loss matrix at each size, and how the transfer gap moves with size.

    The gap of (train t, eval e) is L(e | trained on t) − L(e | trained on e): the price of training on the
    wrong domain. ``{"skipped": reason}`` without two single-domain training domains evaluated per domain.
    """
    domains = eval_domains(df)
    single = single_domain_runs(df)
    if single["train_domain"].nunique() < 2 or not domains:
        return {"skipped": "fewer than two single-domain training conditions with per-domain test losses"}
    matrices = {float(str(s)): _matrix(g, domains) for s, g in single.groupby(x, sort=True)}
    return {
        "x": x,
        "sizes": sorted(matrices),
        "train_domains": sorted(single["train_domain"].unique()),
        "eval_domains": domains,
        "matrices": {format_value(s): m for s, m in matrices.items()},
        "transfer": _transfer_rows(matrices),
    }


def _part_losses(single: pd.DataFrame, size: float, x: str, cols: list[str]) -> dict[str, pd.Series]:
    g = single.loc[single[x] == size]
    return {str(d): part[cols].mean() for d, part in g.groupby("train_domain")}


def mixtures_vs_parts(df: pd.DataFrame, *, x: str = "U") -> dict[str, Any]:
    """Each mixture's loss against its single-domain parts at the same size (per eval domain and mean).

    ``interpolated`` is Σ_j w_j·L_j(parts), the loss if mixing were linear; ``best_part`` the lowest part.
    """
    if WEIGHTS_AXIS not in df:
        return {"skipped": "no weights axis"}
    weights = df[WEIGHTS_AXIS].map(weights_of)
    mixed = df.loc[weights.map(len) > 1]
    single = single_domain_runs(df)
    if mixed.empty or single.empty:
        return {"skipped": "needs mixture runs and single-domain runs at the same size"}
    cols = ["loss", *[EVAL_PREFIX + d for d in eval_domains(df)]]
    rows = []
    for (label, size), g in mixed.assign(_label=mixed[WEIGHTS_AXIS].map(format_value)).groupby(["_label", x]):
        w = weights_of(g[WEIGHTS_AXIS].iloc[0])
        size = float(str(size))
        parts = _part_losses(single, size, x, cols)
        if not set(w) <= set(parts):
            continue
        measured = g[cols].mean()
        for col in cols:
            interp = sum(w[d] * float(parts[d][col]) for d in w)
            best = min(w, key=lambda d: float(parts[d][col]))
            rows.append(_part_row(str(label), size, col, float(measured[col]), interp, best, parts))
    if not rows:
        return {"skipped": "no mixture has all its parts trained at its size"}
    return {"x": x, "rows": rows}


def _part_row(
    label: str, size: float, col: str, measured: float, interp: float, best: str, parts: Mapping[str, Any]
) -> dict[str, Any]:
    return {
        "mixture": label,
        "size": size,
        "eval": "mean" if col == "loss" else col.removeprefix(EVAL_PREFIX),
        "measured": measured,
        "interpolated": interp,
        "best_part": best,
        "best_part_loss": float(parts[best][col]),
        "gain_over_interpolation": interp - measured,
    }
