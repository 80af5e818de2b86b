"""How much do the key numbers depend on the exclusions? Refit with each exclusion rule switched off.

Why: dropping the 5 highest losses moves Epoch's β from 0.45 to 0.37; a report that lists the dropped rows but
not what dropping them did hides the most consequential choice of the analysis. Each variant is one refit
(no bootstrap) of the same law on the table with one rule undone (or, for non-converged runs, applied).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from .fit import FitResult, fit_law
from .jsonutil import json_safe

ParamFns = Mapping[str, Callable[..., float]]


def key_quantities(fit: FitResult, derived: ParamFns, max_derived: int = 3) -> list[str]:
    """The exponents the law fits, then the first few derived quantities (predictions, a, b)."""
    law = fit.bound_law
    exps = [p for p in law.exponents if p not in fit.fixed]
    return exps + list(derived)[:max_derived]


def _values(fit: FitResult, names: list[str], derived: ParamFns) -> dict[str, float]:
    out = {}
    for name in names:
        if name in fit.params:
            out[name] = float(fit.params[name])
            continue
        try:
            with np.errstate(all="ignore"):
                out[name] = float(derived[name](fit.params))
        except (ValueError, ZeroDivisionError, FloatingPointError, KeyError):
            out[name] = math.nan
    return out


def sensitivity_table(
    fit: FitResult,
    variants: Mapping[str, pd.DataFrame],
    derived: ParamFns,
    fit_kwargs: Mapping[str, Any],
) -> dict[str, Any]:
    """{quantities, rows: [{variant, n_rows, <quantity>: value | None, error?}]}: as fitted first."""
    names = key_quantities(fit, derived)
    rows = [{"variant": "as fitted", "n_rows": fit.n_points, **_values(fit, names, derived)}]
    for label, frame in variants.items():
        row: dict[str, Any] = {"variant": label, "n_rows": len(frame)}
        try:
            refit = fit_law(fit.bound_law if fit.bound_law.levels else fit.law, frame, **fit_kwargs)
        except (ValueError, RuntimeError) as exc:
            row["error"] = str(exc).splitlines()[0]
        else:
            row.update(_values(refit, names, derived))
            if refit.warnings:
                row["n_warnings"] = len(refit.warnings)
        rows.append(row)
    return json_safe({"quantities": names, "rows": rows})


def non_converged_variant(df: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The table without its non-converged runs, when it has any (they are fitted by default)."""
    if "converged" not in df.columns:
        return {}
    converged = df["converged"].astype("boolean").fillna(True).to_numpy(dtype=bool)
    if converged.all() or not converged.any():
        return {}
    out = df.loc[converged].reset_index(drop=True)
    out.attrs = dict(df.attrs)
    return {f"without the {int((~converged).sum())} non-converged run(s)": out}
