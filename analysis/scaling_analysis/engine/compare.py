"""Held-out extrapolation and comparison of candidate laws by held-out error.

Why: in-sample fit quality says little about a scaling law's purpose, which is extrapolation. A plain
saturating power law fitted to early-stopped runs from 8k to 128k tokens missed the 256k point by 4%:
small-scale curves bend. So every fit is judged by leaving out the largest scale (all rows at the largest
value(s) of a column, e.g. every seed), fitting the rest and predicting the held-out rows (as Besiroglu et al.
2024 check Chinchilla's fit). Candidate forms are ranked by that held-out error, penalised for extra
parameters (ties broken by BIC), and degenerate fits (collapsed asymptote, diverging parameters, no
convergence) are only chosen when nothing else is usable.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from .fit import FitResult, fit_law
from .jsonutil import json_safe
from .laws import Law, get_law

#: Diagnostic flags that make a fit unsuitable for extrapolation when a non-degenerate alternative exists.
DEGENERATE_FLAGS = frozenset(
    {"asymptote_collapse", "diverged", "exponent_boundary", "not_converged", "forced"}
)
#: Candidates whose penalised held-out score is within this relative margin of the best count as tied;
#: among tied candidates the lowest in-sample BIC is chosen.
TIE_MARGIN = 0.05


@dataclass
class HoldoutResult:
    """A fit on all but the largest value(s) of ``by`` and its errors on the held-out rows."""

    by: str
    threshold: float
    n_train: int
    n_test: int
    fit: FitResult
    abs_rel_errors: list[float]
    mape: float
    max_are: float
    predictions: pd.DataFrame
    held_out_values: list[float] = field(default_factory=list)
    extrapolation_ratio: float = math.nan  # smallest held-out value / largest training value

    def to_dict(self) -> dict:
        """JSON-safe summary with the held-out rows' observed and predicted losses."""
        cols = [c for c in (self.by, "observed", "predicted", "are") if c in self.predictions]
        return json_safe(
            {
                "by": self.by,
                "threshold": self.threshold,
                "held_out_values": self.held_out_values,
                "extrapolation_ratio": self.extrapolation_ratio,
                "n_train": self.n_train,
                "n_test": self.n_test,
                "mape": self.mape,
                "max_are": self.max_are,
                "abs_rel_errors": self.abs_rel_errors,
                "points": self.predictions[cols],
                "fit": self.fit.to_dict(),
            }
        )


def prediction_column(preds: pd.DataFrame) -> str:
    """Name of the predicted-loss column of a held-out predictions table."""
    for c in ("predicted", "prediction", "pred", "loss_pred", "y_pred"):
        if c in preds:
            return c
    raise KeyError(f"holdout predictions have no prediction column (columns: {list(preds.columns)})")


def _split_col(preds: pd.DataFrame) -> str | None:
    for c in ("split", "set", "role"):
        if c in preds:
            return c
    return None


def holdout_test_rows(holdout: Any) -> pd.DataFrame | None:
    """The held-out (test) rows of a HoldoutResult's predictions, whatever the split column is called."""
    preds = getattr(holdout, "predictions", None)
    if preds is None or len(preds) == 0:
        return None
    split = _split_col(preds)
    if split is not None:
        return preds.loc[preds[split].astype(str).isin(["test", "holdout", "held_out", "heldout"])]
    if "held_out" in preds:
        return preds.loc[preds["held_out"].astype(bool)]
    return preds


def _by_column(df: pd.DataFrame, by: str, variables: Mapping[str, str] | None) -> str:
    if by in df.columns:
        return by
    if variables and by in variables and variables[by] in df.columns:
        return variables[by]
    raise ValueError(f"by={by!r}: not a column (columns: {list(df.columns)})")


def holdout_extrapolation(
    law: str | Law, df: pd.DataFrame, *, by: str = "D", n_holdout_values: int = 1, **fit_kwargs: Any
) -> HoldoutResult:
    """Leave out every row at the ``n_holdout_values`` largest values of column ``by``, fit the rest, predict
    them.

    ``fit_kwargs`` go to :func:`fit_law` (``loss``, ``variables``, ``starts``, ``fixed``, ...). ARE is
    |predicted − observed| / observed per held-out row.
    """
    col = _by_column(df, by, fit_kwargs.get("variables"))
    values = np.sort(pd.unique(df[col].to_numpy()))
    if n_holdout_values < 1 or n_holdout_values >= len(values):
        raise ValueError(
            f"n_holdout_values={n_holdout_values}: must be >= 1 and leave at least one {col} value to fit "
            f"({len(values)} distinct values)"
        )
    threshold = float(values[-n_holdout_values])
    test_mask = df[col].to_numpy() >= threshold
    train, test = df.loc[~test_mask], df.loc[test_mask]
    pre = dict(fit_kwargs.pop("preprocessing", None) or df.attrs.get("preprocessing", {}) or {})
    pre["holdout"] = {
        "rule": f"rows with {col} >= {threshold:.6g} held out ({n_holdout_values} largest value(s))",
        "n_train": len(train),
        "n_test": len(test),
    }
    fit = fit_law(law, train, preprocessing=pre, **fit_kwargs)
    loss_col = fit.loss_column
    pred = fit.predict(test)
    obs = test[loss_col].to_numpy(dtype=float)
    are = np.abs(pred - obs) / obs
    predictions = test.copy()
    predictions["observed"] = obs
    predictions["predicted"] = pred
    predictions["are"] = are
    predictions["split"] = "test"
    train_max = float(values[-n_holdout_values - 1])
    return HoldoutResult(
        by=col,
        threshold=threshold,
        n_train=len(train),
        n_test=len(test),
        fit=fit,
        abs_rel_errors=[float(a) for a in are],
        mape=float(np.mean(are)),
        max_are=float(np.max(are)),
        predictions=predictions,
        held_out_values=[float(v) for v in values[-n_holdout_values:]],
        extrapolation_ratio=threshold / train_max if train_max > 0 else math.nan,
    )


@dataclass
class ComparisonResult:
    """Candidate laws side by side, and which one to trust for extrapolation (and why)."""

    table: pd.DataFrame
    chosen: str
    reason: str
    fits: dict[str, FitResult]
    holdouts: dict[str, HoldoutResult]

    def to_dict(self) -> dict:
        """JSON-safe table, choice and reason (fits summarised by their own to_dict)."""
        return json_safe(
            {
                "table": self.table,
                "chosen": self.chosen,
                "reason": self.reason,
                "fits": {k: v.to_dict() for k, v in self.fits.items()},
                "holdouts": {k: v.to_dict() for k, v in self.holdouts.items()},
            }
        )


def _laplace_ic(fit: FitResult, k: int) -> tuple[float, float]:
    """AIC and BIC under a Laplace likelihood of the log residuals (the δ→0 limit of the Huber objective)."""
    n = fit.n_points
    b = fit.metrics.get("mean_abs_log_residual")
    if b is None or not np.isfinite(b) or b <= 0:
        return math.nan, math.nan
    nll = n * (math.log(2.0 * b) + 1.0)
    return 2.0 * k + 2.0 * nll, k * math.log(n) + 2.0 * nll


def _per_law_kwargs(law: Law, fit_kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """Keep only the variable mappings / fixed values that make sense for ``law``."""
    kw = dict(fit_kwargs)
    if kw.get("variables"):
        kw["variables"] = {k: v for k, v in kw["variables"].items() if k in law.variables}
    if kw.get("fixed"):
        kw["fixed"] = {k: v for k, v in kw["fixed"].items() if k in law.params}
    return kw


def _error_row(law: Law, error: str) -> dict[str, Any]:
    return {
        "law": law.name,
        "formula": law.formula,
        "n_params": law.n_params,
        "penalised_score": math.inf,
        "degenerate": "",
        "error": error,
    }


def _candidate_row(fit: FitResult, ho: HoldoutResult) -> dict[str, Any]:
    """One comparison-table row: in-sample quality, information criteria, held-out error, penalised score."""
    k = fit.bound_law.n_params - len(fit.fixed)
    aic, bic = _laplace_ic(fit, k)
    ho_flags = set(ho.fit.diagnostics.get("flags", []))
    flags = set(fit.diagnostics.get("flags", [])) | (ho_flags - {"forced"})
    penal = ho.mape / (1.0 - k / ho.n_train) if ho.n_train > k else math.inf
    return {
        "law": fit.law,
        "formula": fit.formula,
        "n_params": k,
        "n_points": fit.n_points,
        "objective": fit.objective,
        "rmse_log": fit.metrics.get("rmse_log", math.nan),
        "r2": fit.metrics.get("r2", math.nan),
        "aic": aic,
        "bic": bic,
        "holdout_n_train": ho.n_train,
        "holdout_n_test": ho.n_test,
        "holdout_mape": ho.mape,
        "holdout_max_are": ho.max_are,
        "penalised_score": penal,
        "converged": bool(fit.converged and ho.fit.converged),
        "degenerate": ", ".join(sorted(flags & DEGENERATE_FLAGS)),
        "n_warnings": len(fit.warnings) + len(ho.fit.warnings),
        "holdout_fit_forced": "forced" in ho_flags,
    }


def compare_laws(
    df: pd.DataFrame,
    candidates: Sequence[str | Law],
    *,
    by: str = "D",
    n_holdout_values: int = 1,
    **fit_kwargs: Any,
) -> ComparisonResult:
    """Fit every candidate on all rows and on all but the largest ``by`` value(s); choose by held-out error.

    The fit on all rows refuses data that cannot identify a candidate (that candidate is reported as not
    fitted); the held-out fit is judged by its predictions only, so it is fitted even when its training rows
    cannot identify the parameters (``holdout_fit_forced`` in the table). Score = held-out MAPE / (1 −
    k/n_train) for k free parameters (a generalised-cross-validation style inflation that grows quickly when
    parameters approach the number of points). Fits flagged degenerate are set aside if any other candidate
    is usable; candidates within 5% of the best score are a tie (held-out error rests on few rows), broken by
    the lowest in-sample BIC, which also penalises parameters.
    """
    if not candidates:
        raise ValueError("compare_laws needs at least one candidate law")
    fits: dict[str, FitResult] = {}
    holdouts: dict[str, HoldoutResult] = {}
    rows = []
    errors: dict[str, str] = {}
    for cand in candidates:
        law = get_law(cand)
        kw = _per_law_kwargs(law, fit_kwargs)
        try:
            fit = fit_law(law, df, **kw)
            # the held-out fit is judged by its predictions, so an under-determined one is fitted (and marked)
            ho_kw = {**kw, "force": True}
            ho = holdout_extrapolation(law, df, by=by, n_holdout_values=n_holdout_values, **ho_kw)
        except (ValueError, RuntimeError) as exc:  # one unusable candidate must not sink the comparison
            errors[law.name] = f"{type(exc).__name__}: {exc}"
            rows.append(_error_row(law, errors[law.name]))
            continue
        fits[fit.law], holdouts[fit.law] = fit, ho
        rows.append(_candidate_row(fit, ho))
    if not holdouts:
        raise ValueError(
            "compare_laws: no candidate could be fitted: " + "; ".join(f"{k}: {v}" for k, v in errors.items())
        )
    table = pd.DataFrame(rows)
    table["error"] = table["error"].fillna("") if "error" in table else ""
    chosen, reason = _choose(
        table[table["error"] == ""], by=next(iter(holdouts.values())).by, holdouts=holdouts
    )
    if errors:
        reason += " Not fitted: " + "; ".join(f"{k} ({v})" for k, v in errors.items()) + "."
    table["chosen"] = table["law"] == chosen
    table = table.sort_values("penalised_score", kind="stable").reset_index(drop=True)
    return ComparisonResult(table=table, chosen=chosen, reason=reason, fits=fits, holdouts=holdouts)


def _choose(table: pd.DataFrame, *, by: str, holdouts: Mapping[str, HoldoutResult]) -> tuple[str, str]:
    usable = table[(table["degenerate"] == "") & np.isfinite(table["penalised_score"])]
    note = ""
    if usable.empty:
        usable = table[np.isfinite(table["penalised_score"])]
        note = " No candidate is free of degeneracy flags, so the choice is provisional."
        if usable.empty:
            usable = table
    set_aside = sorted(set(table["law"]) - set(usable["law"]))
    best_score = float(usable["penalised_score"].min())
    tied = usable[usable["penalised_score"] <= best_score * (1.0 + TIE_MARGIN) + 1e-15]
    # ties on held-out error are broken by in-sample BIC (fit quality with a log(n)-per-parameter penalty)
    tied = tied.assign(_bic=tied["bic"].fillna(np.inf))
    pick = tied.sort_values(["_bic", "n_params", "penalised_score"], kind="stable").iloc[0]
    ho = holdouts[pick["law"]]
    parts = [
        f"{pick['law']}: held-out MAPE {pick['holdout_mape']:.2%} (max ARE {pick['holdout_max_are']:.2%}) on "
        "the "
        f"{ho.n_test} rows with {by} >= {ho.threshold:.4g} ({ho.extrapolation_ratio:.3g}x beyond the largest "
        "training "
        f"value), penalised score {pick['penalised_score']:.3%} with {int(pick['n_params'])} free parameters"
    ]
    others = table[table["law"] != pick["law"]]
    if not others.empty:
        parts.append(
            "others: "
            + "; ".join(
                f"{r['law']} {r['holdout_mape']:.2%} (score {r['penalised_score']:.3%}, "
                f"k={int(r['n_params'])}"
                + (f", degenerate: {r['degenerate']}" if r["degenerate"] else "")
                + ")"
                for _, r in others.iterrows()
            )
        )
    if len(tied) > 1:
        parts.append(
            f"{len(tied)} candidates are within {TIE_MARGIN:.0%} of the best held-out score, a tie at this "
            "number "
            "of held-out rows, so the lowest in-sample BIC (Laplace likelihood of log residuals, k·ln n "
            "penalty) "
            f"decides: {pick['law']} BIC {pick['bic']:.1f}"
        )
    if set_aside:
        parts.append("set aside as degenerate or unscorable: " + ", ".join(set_aside))
    return str(pick["law"]), ". ".join(parts) + "." + note
