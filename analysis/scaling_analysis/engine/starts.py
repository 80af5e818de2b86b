"""Where the multi-start optimisation begins: the law's default grid, random starts in its box, or user
starts.

Why it matters: the optimum of a scaling-law fit depends on the starts (Hoffmann et al. 2022 use a 4,500-point
grid), so the start set is part of the result and is described in the diagnostics (kind, box per parameter).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from .laws import Law

Starts = str | np.ndarray | int | pd.DataFrame | Mapping[str, Sequence[float]]


def start_points(
    law: Law,
    starts: Starts,
    X: Mapping[str, np.ndarray],
    y: np.ndarray,
    theta_fixed: dict[str, float],
    free: np.ndarray,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Starting points in free-theta space and a description of where they came from (kind, grid box)."""
    info: dict[str, Any] = {}
    if isinstance(starts, str):
        if starts not in ("grid", "hoffmann"):
            raise ValueError(f"starts={starts!r}: must be 'grid', an int, an array or a DataFrame of starts")
        z = law.default_starts(X, y, theta_fixed)[:, free]
        info["kind"] = "grid" if law.name != "chinchilla" else "grid (Hoffmann et al. 2022, 4,500 points)"
    elif isinstance(starts, int | np.integer) and not isinstance(starts, bool):
        z = _random_starts(law, int(starts), X, y, theta_fixed, free)
        info["kind"] = f"{int(starts)} uniform random starts (seed 0) in the default grid's box"
    else:
        z = _user_starts(law, starts, free, info)
        info["kind"] = "user-provided"
    z = np.unique(z, axis=0) if len(z) > 1 else z
    names = law.theta_names
    info["grid_min"] = {names[i]: float(v) for i, v in zip(free, z.min(axis=0), strict=True)}
    info["grid_max"] = {names[i]: float(v) for i, v in zip(free, z.max(axis=0), strict=True)}
    return z, info


def _random_starts(
    law: Law,
    n: int,
    X: Mapping[str, np.ndarray],
    y: np.ndarray,
    theta_fixed: dict[str, float],
    free: np.ndarray,
) -> np.ndarray:
    if n < 1:
        raise ValueError(f"starts={n}: must be >= 1")
    grid = law.default_starts(X, y, theta_fixed)[:, free]
    lo, hi = grid.min(axis=0), grid.max(axis=0)
    rng = np.random.default_rng(0)
    return lo + (hi - lo) * rng.random((n, len(free)))


def _user_starts(law: Law, starts: Any, free: np.ndarray, info: dict[str, Any]) -> np.ndarray:
    """Natural-scale user starts (array, DataFrame, {param: values} product grid) -> free theta."""
    free_params = [law.params[i] for i in free]
    if isinstance(starts, pd.DataFrame):
        missing = [p for p in free_params if p not in starts.columns]
        if missing:
            raise ValueError(f"starts DataFrame lacks columns {missing}")
        nat = starts[free_params].to_numpy(dtype=float)
    elif isinstance(starts, Mapping):
        missing = [p for p in free_params if p not in starts]
        if missing:
            raise ValueError(f"starts mapping lacks {missing} (give a sequence of values per free parameter)")
        nat = np.array(list(itertools.product(*[np.atleast_1d(starts[p]) for p in free_params])), dtype=float)
    else:
        nat = np.atleast_2d(np.asarray(starts, dtype=float))
        if nat.shape[1] == law.n_params and len(free) != law.n_params:
            nat = nat[:, free]
        if nat.shape[1] != len(free):
            raise ValueError(
                f"starts has {nat.shape[1]} columns; expected the free parameters {free_params} (natural "
                "scale)"
            )
    is_log = law.is_log[free]
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(is_log, np.log(np.where(is_log & (nat <= 0), 1e-3, nat)), nat)
    if np.any(is_log & (nat <= 0)):
        info["note"] = "non-positive starts of log-scale parameters were moved to 1e-3"
    return z
