"""Per-condition scaling fits and the joint effective-data fit (one multiplier k per condition).

Why: a data axis is summarised best by one number per condition, "one token of condition X is worth k
reference tokens", from L = E + B·(k_c·U)^(−β) with E, B and β shared (``laws.effective_data_law``); the
bootstrap (resampling runs within each condition) gives k its interval. Separate fits per condition need three
sizes each and are shown beside it where the data allow.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ...engine import BootstrapResult, FitResult, UnfittableError, bootstrap, fit_law
from ...engine.laws import effective_data_law
from ..checks import CONFIDENCE
from .labels import Conditions

PER_CONDITION_LAW = "saturating_power_D"
PER_CONDITION_MIN_SIZES = 3


@dataclass
class EffectiveDataFit:
    """The joint fit, its bootstrap (None when skipped) and the table it was fitted on."""

    fit: FitResult
    bootstrap: BootstrapResult | None
    table: pd.DataFrame
    reference: str
    skipped_bootstrap: str | None = None
    per_condition: dict[str, FitResult] = field(default_factory=dict)
    per_condition_skipped: dict[str, str] = field(default_factory=dict)


def k_param(level: str) -> str:
    """The law's parameter name of a level's multiplier."""
    return f"k_{level}"


def fit_per_condition(table: pd.DataFrame, x: str = "U") -> tuple[dict[str, FitResult], dict[str, str]]:
    """A saturating power law per condition with enough sizes; why not for the others."""
    fits, skipped = {}, {}
    for level, g in table.groupby("condition", sort=True):
        n_sizes = int(g[x].nunique())
        if n_sizes < PER_CONDITION_MIN_SIZES:
            skipped[str(level)] = f"{n_sizes} size(s): a separate fit needs {PER_CONDITION_MIN_SIZES}"
            continue
        try:
            fits[str(level)] = fit_law(PER_CONDITION_LAW, g, variables={"D": x})
        except (UnfittableError, ValueError, RuntimeError) as exc:
            skipped[str(level)] = f"failed: {exc}"
    return fits, skipped


def _design_points(table: pd.DataFrame, x: str) -> int:
    return int(table[[x, "condition"]].drop_duplicates().shape[0])


def fit_effective_data(
    table: pd.DataFrame,
    conditions: Conditions,
    *,
    x: str = "U",
    n_resamples: int = 1000,
    seed: int = 0,
    n_jobs: int = 1,
) -> EffectiveDataFit:
    """Fit E + B·(k_c·x)^(−β) jointly over conditions (``table`` has a ``condition`` column), then bootstrap.

    Raises ``UnfittableError`` when there are fewer (condition, size) points than parameters.
    """
    law = effective_data_law(conditions.levels, reference=conditions.reference)
    n_design = _design_points(table, x)
    if n_design < law.n_params:
        raise UnfittableError(
            f"{n_design} distinct (condition, {x}) points for {law.n_params} parameters (E, B, β and one k "
            f"per non-reference condition): add sizes"
        )
    fit = fit_law(law, table, variables={"D": x, "condition": "condition"})
    result = EffectiveDataFit(fit, None, table, conditions.reference)
    if n_resamples <= 0:
        result.skipped_bootstrap = f"n_resamples={n_resamples}"
    else:
        result.bootstrap = bootstrap(
            fit, table, n_resamples=n_resamples, seed=seed, confidence=CONFIDENCE, n_jobs=n_jobs
        )
    result.per_condition, result.per_condition_skipped = fit_per_condition(table, x)
    return result


def _interval(boot: BootstrapResult | None, name: str) -> list[float] | None:
    if boot is None or name not in boot.intervals:
        return None
    lo, hi = boot.intervals[name]
    return [float(lo), float(hi)] if np.isfinite(lo) and np.isfinite(hi) else None


def multiplier_rows(result: EffectiveDataFit) -> list[dict[str, Any]]:
    """One row per condition: k (1 for the reference), its interval and the sentence that reads it."""
    law, params, boot = result.fit.bound_law, result.fit.params, result.bootstrap
    sizes = result.table.groupby("condition")["U" if "U" in result.table else "D"].nunique()
    rows = []
    for level in law.levels:
        is_ref = level == result.reference
        k = 1.0 if is_ref else float(params[k_param(level)])
        iv = [1.0, 1.0] if is_ref else _interval(boot, k_param(level))
        rows.append(
            {
                "condition": level,
                "k": k,
                "interval": iv,
                "reference": is_ref,
                "n_sizes": int(sizes.get(level, 0)),
                "n_runs": int((result.table["condition"] == level).sum()),
                "sentence": "the reference"
                if is_ref
                else f"one token of {level} is worth {k:.3g} reference tokens",
            }
        )
    return rows


def effective_data_fields(result: EffectiveDataFit) -> dict[str, Any]:
    """fit.json ``effective_data``: the shared parameters with intervals and k per condition."""
    fit, boot = result.fit, result.bootstrap
    shared = {p: {"value": float(fit.params[p]), "interval": _interval(boot, p)} for p in ("E", "B", "beta")}
    per = {}
    for level, f in result.per_condition.items():
        per[level] = {"params": {k: float(v) for k, v in f.params.items()}, "warnings": list(f.warnings)}
    return {
        "law": "effective_data",
        "formula": fit.formula,
        "reference": result.reference,
        "shared": shared,
        "multipliers": multiplier_rows(result),
        "n_points": fit.n_points,
        "objective": float(fit.objective),
        "metrics": dict(fit.metrics),
        "warnings": list(fit.warnings),
        "bootstrap": boot.to_dict() if boot is not None else {"skipped": result.skipped_bootstrap},
        "per_condition_fits": per,
        "per_condition_skipped": dict(result.per_condition_skipped),
    }
