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
from .noise import seed_noise_floor

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
    bias: float = math.nan  # mean signed relative error (predicted − observed)/observed: > 0 over-predicts

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
                "bias": self.bias,
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
    |predicted − observed| / observed per held-out row; ``bias`` is the mean of the signed relative errors
    (a law that bends the wrong way misses all held-out rows on one side, which MAPE alone does not say).
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
        bias=float(np.mean((pred - obs) / obs)),
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
        "holdout_bias": ho.bias,
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


# ============================================================================ a tournament decided in advance

#: One-variable laws the tournament fits by default (each law's variable is mapped to the ``by`` column, so
#: the N- and D-twins of these forms would only repeat them).
TOURNAMENT_CANDIDATES = (
    "saturating_power_D",
    "kaplan_D",
    "broken_power_D",
    "shifted_power_U",
    "envelope_U",
    "envelope_U_fixed",
)
#: Fewest fitting sizes at any origin of the rolling-origin check (and at least free parameters + 1).
MIN_ORIGIN_SIZES = 3
#: Rule scores within this relative margin (or within TOURNAMENT_TIE_ABS) of the best are a tie.
TOURNAMENT_TIE_REL = 0.05
TOURNAMENT_TIE_ABS = 1e-3
#: Label on every held-out number the tournament returns.
NOT_USED = "not used for the choice"

TOURNAMENT_RULE = (
    "Rule (fixed before any held-out point is seen; it reads only the fitting points). Sort the distinct "
    "sizes s_1 < ... < s_m of the fitting points. A law with k free parameters can be scored at origin t "
    f"(fit every row with size <= s_t, predict the rows at s_(t+1) .. s_(t+h), h = horizon) when "
    f"t >= max({MIN_ORIGIN_SIZES}, k + 1) and t < m. The laws with at least one such origin are scored on "
    "the origins they all share (t from the largest of their minima to m - 1), so every score rests on the "
    "same predictions; score = mean over those origins of the mean |log(predicted / observed)| over the "
    "predicted rows (a law with no such origin is not scored and cannot win while any law is scored). "
    "The lowest score wins; scores within "
    f"{TOURNAMENT_TIE_REL:.0%} (relative) or max({TOURNAMENT_TIE_ABS:g}, seed-noise floor) (absolute) of "
    "the best are a tie (the floor: pooled relative std of the loss over runs at one size among the fitting "
    "points, 0 without repeats; a difference below the run-to-run noise is not evidence), "
    "broken by: a full fit free of degeneracy flags first, then fewer free parameters (the simplest law "
    "that predicts as well, as in the one-standard-error rule of cross-validation), then the lowest AICc of "
    "the full fit (Laplace likelihood of log residuals, p = k + 1 with the scale). When no law can be "
    "scored (too few sizes), the law with the lowest AICc on the fitting points is chosen (non-degenerate "
    "first). Laws that cannot be fitted (e.g. the fixed-L0 envelope without a reference loss) are "
    "not eligible. Held-out errors are computed after the choice from the full fits and are not used for it."
)


@dataclass
class TournamentResult:
    """Every eligible law's fit and rule score, the law the rule chose, and held-out errors (not used for the
    choice)."""

    by: str
    chosen: str
    reason: str
    rule: str
    table: pd.DataFrame
    origins: pd.DataFrame
    fits: dict[str, FitResult]
    held_out: pd.DataFrame
    tie_abs: float = TOURNAMENT_TIE_ABS  # the absolute tie margin used (the seed-noise floor where larger)

    def to_dict(self) -> dict:
        """JSON-safe summary; the held-out errors sit under a key that says they were not used."""
        return json_safe(
            {
                "by": self.by,
                "chosen": self.chosen,
                "reason": self.reason,
                "rule": self.rule,
                "tie_abs": self.tie_abs,
                "table": self.table,
                "origins": self.origins,
                "fits": {k: v.to_dict() for k, v in self.fits.items()},
                f"held_out ({NOT_USED})": self.held_out,
            }
        )


def _tournament_kwargs(
    law: Law, by: str, reference_loss: float | None, fit_kwargs: Mapping[str, Any]
) -> dict[str, Any]:
    """fit_law kwargs for ``law``: its one variable mapped to ``by``, L0 fixed for the fixed-L0 envelope."""
    kw = _per_law_kwargs(law, {k: v for k, v in fit_kwargs.items() if k != "variables"})
    kw["variables"] = {law.variables[0]: by}
    fixed = dict(kw.get("fixed") or {})
    if law.name == "envelope_U_fixed" and "L0" not in fixed and reference_loss is not None:
        fixed["L0"] = float(reference_loss)
    if fixed:
        kw["fixed"] = fixed
    return kw


def _ineligible(law: Law, kw: Mapping[str, Any]) -> str:
    """Why ``law`` cannot take part (empty when it can)."""
    if len(law.variables) != 1 or law.categorical:
        return f"not a one-variable law (variables {list(law.variables)})"
    if law.name == "envelope_U_fixed" and "L0" not in (kw.get("fixed") or {}):
        return "no reference loss L0 given (reference_loss=..., e.g. ln V from the run records)"
    return ""


def _log_prediction(fit: FitResult, rows: pd.DataFrame) -> np.ndarray:
    """log L̂ for ``rows`` from the fit's theta: a scale that ran off to e^800 (the saturating limit of the
    envelope, L0 -> inf) overflows in natural units but still predicts finitely in log space."""
    law = fit.bound_law
    if set(fit.theta) != set(law.theta_names):
        with np.errstate(all="ignore"):
            return np.log(fit.predict(rows))
    theta = np.array([fit.theta[n] for n in law.theta_names])[None, :]
    raw = {v: rows[fit.variables.get(v, v)].to_numpy() for v in law.variables}
    return law.log_predict(theta, law.encode(raw))[0][0]


def _log_errors(fit: FitResult, rows: pd.DataFrame) -> np.ndarray:
    """|log(predicted / observed)| per row (inf where the prediction is not a positive number)."""
    obs = rows[fit.loss_column].to_numpy(dtype=float)
    with np.errstate(all="ignore"):
        err = np.abs(_log_prediction(fit, rows) - np.log(obs))
    return np.where(np.isfinite(err), err, math.inf)


def _origin_rows(
    law: Law, df: pd.DataFrame, by: str, sizes: np.ndarray, origins: range, horizon: int, kw: dict
) -> list[dict[str, Any]]:
    """Fit on the smallest t sizes and predict the next ``horizon`` size(s), for every origin t."""
    rows = []
    for t in origins:
        train = df[df[by] <= sizes[t - 1]]
        test = df[(df[by] > sizes[t - 1]) & (df[by] <= sizes[min(t + horizon, len(sizes)) - 1])]
        row: dict[str, Any] = {"law": law.name, "origin": t, "train_max": float(sizes[t - 1])}
        row["predicted_sizes"] = [float(s) for s in np.unique(test[by])]
        try:
            fit = fit_law(law, train, **{**kw, "force": True})
        except (ValueError, RuntimeError) as exc:
            rows.append({**row, "male": math.inf, "flags": "", "error": f"{type(exc).__name__}: {exc}"})
            continue
        err = _log_errors(fit, test)
        flags = ", ".join(sorted(set(fit.diagnostics.get("flags", [])) & DEGENERATE_FLAGS - {"forced"}))
        rows.append({**row, "male": float(np.mean(err)), "flags": flags, "error": ""})
    return rows


def _aicc(fit: FitResult) -> float:
    """AICc under a Laplace likelihood of the log residuals, p = free parameters + 1 (the scale)."""
    n, p = fit.n_points, len(fit.free_params) + 1
    aic, _ = _laplace_ic(fit, p)
    if not np.isfinite(aic) or n - p - 1 <= 0:
        return math.inf
    return aic + 2.0 * p * (p + 1) / (n - p - 1)


def _full_fits(
    candidates: Sequence[str | Law], df: pd.DataFrame, by: str, reference_loss: float | None, fit_kwargs: dict
) -> tuple[dict[str, FitResult], dict[str, dict], list[dict[str, Any]]]:
    """Every candidate fitted on all fitting points: fits, their kwargs, and a table row per candidate."""
    fits: dict[str, FitResult] = {}
    kws: dict[str, dict] = {}
    rows: list[dict[str, Any]] = []
    for cand in candidates:
        law = get_law(cand)
        kw = _tournament_kwargs(law, by, reference_loss, fit_kwargs)
        row: dict[str, Any] = {"law": law.name, "formula": law.formula, "error": _ineligible(law, kw)}
        if not row["error"]:
            try:
                fit = fit_law(law, df, **kw)
            except (ValueError, RuntimeError) as exc:  # one unusable law must not sink the tournament
                row["error"] = f"{type(exc).__name__}: {exc}"
            else:
                fits[law.name], kws[law.name] = fit, kw
                flags = set(fit.diagnostics.get("flags", [])) & DEGENERATE_FLAGS
                k = len(fit.free_params)
                row.update(n_params=k, min_origin=max(MIN_ORIGIN_SIZES, k + 1), aicc=_aicc(fit))
                row.update(degenerate=", ".join(sorted(flags)), n_points=fit.n_points)
        row["eligible"] = not row["error"]
        rows.append(row)
    return fits, kws, rows


def _score_origins(
    fits: Mapping[str, FitResult], kws: Mapping[str, dict], df: pd.DataFrame, by: str, horizon: int
) -> tuple[pd.DataFrame, range]:
    """Rolling-origin errors of every scorable law on the origins they share (empty when none can be
    scored)."""
    sizes = np.sort(pd.unique(df[by].to_numpy(dtype=float)))
    m = len(sizes)
    minima = {name: max(MIN_ORIGIN_SIZES, len(f.free_params) + 1) for name, f in fits.items()}
    scorable = {name: t0 for name, t0 in minima.items() if t0 < m}
    if not scorable:
        return pd.DataFrame(columns=["law", "origin", "train_max", "predicted_sizes", "male"]), range(0)
    shared = range(max(scorable.values()), m)
    rows: list[dict[str, Any]] = []
    for name in scorable:
        law = fits[name].bound_law
        rows += _origin_rows(law, df, by, sizes, range(minima[name], m), horizon, kws[name])
    out = pd.DataFrame(rows)
    out["shared"] = out["origin"].isin(list(shared))
    return out, shared


def _rule_scores(origins: pd.DataFrame) -> tuple[dict[str, float], dict[str, float]]:
    """Per law: mean |log error| over the shared origins (the rule score) and over all its own origins."""
    shared: dict[str, float] = {}
    own: dict[str, float] = {}
    if origins.empty:
        return shared, own
    for name, grp in origins.groupby("law"):
        own[str(name)] = float(grp["male"].mean())
        if grp["shared"].any():
            shared[str(name)] = float(grp.loc[grp["shared"], "male"].mean())
    return shared, own


def _tie_order(cands: pd.DataFrame, keys: Sequence[str] = ("_deg", "n_params", "_aicc")) -> pd.DataFrame:
    """Tied laws in order of preference: non-degenerate full fit, fewest free parameters, lowest AICc."""
    out = cands.assign(_deg=cands["degenerate"] != "", _aicc=cands["aicc"].fillna(math.inf))
    return out.sort_values(list(keys), kind="stable")


def _choose_by_rule(table: pd.DataFrame, shared: range, tie_abs: float) -> tuple[str, str]:
    """Apply TOURNAMENT_RULE to the table (eligible laws, their rule scores and AICc)."""
    ok = table[table["eligible"]]
    scored = ok[np.isfinite(ok["rule_score"].astype(float))]
    if scored.empty:
        pick = _tie_order(ok, ("_deg", "_aicc", "n_params")).iloc[0]
        why = (
            f"{pick['law']}: no law could be scored by rolling origin (too few sizes), so the lowest AICc "
            f"on the fitting points decides: AICc {pick['aicc']:.2f}"
        )
        return str(pick["law"]), why
    best = float(scored["rule_score"].min())
    tied = scored[scored["rule_score"] <= max(best * (1 + TOURNAMENT_TIE_REL), best + tie_abs)]
    pick = _tie_order(tied).iloc[0]
    why = (
        f"{pick['law']}: rolling-origin mean |log error| {pick['rule_score']:.2%} (fitted on the smallest t "
        f"sizes, predicting the next, t = {', '.join(map(str, shared))})"
    )
    if len(tied) > 1:
        why += (
            f"; tied (within {TOURNAMENT_TIE_REL:.0%} or {tie_abs:.2%}) with "
            f"{', '.join(sorted(set(tied['law']) - {pick['law']}))}, broken by degeneracy, fewer parameters, "
            f"then AICc {pick['aicc']:.2f}"
        )
    others = scored[scored["law"] != pick["law"]].sort_values("rule_score")
    if not others.empty:
        why += "; others: " + ", ".join(f"{r['law']} {r['rule_score']:.2%}" for _, r in others.iterrows())
    return str(pick["law"]), why


def _held_out_errors(fits: Mapping[str, FitResult], held_out: pd.DataFrame | None) -> pd.DataFrame:
    """Each law's full fit on the held-out rows: MAPE, bias (mean signed relative error), max ARE, mean
    |log error|. Computed after the choice and labelled as not used for it."""
    cols = ["law", "n_held_out", "mape", "bias", "max_are", "male", "note"]
    if held_out is None or held_out.empty:
        return pd.DataFrame(columns=cols)
    rows = []
    for name, fit in fits.items():
        obs = held_out[fit.loss_column].to_numpy(dtype=float)
        with np.errstate(all="ignore"):
            rel = np.exp(_log_prediction(fit, held_out) - np.log(obs)) - 1.0
        row = {"law": name, "n_held_out": len(obs), "mape": float(np.mean(np.abs(rel)))}
        row.update(bias=float(np.mean(rel)), max_are=float(np.max(np.abs(rel))))
        rows.append({**row, "male": float(np.mean(_log_errors(fit, held_out))), "note": NOT_USED})
    return pd.DataFrame(rows, columns=cols)


def predictive_tournament(
    df: pd.DataFrame,
    candidates: Sequence[str | Law] | None = None,
    *,
    by: str = "U",
    held_out: pd.DataFrame | None = None,
    horizon: int = 1,
    reference_loss: float | None = None,
    noise_floor: float | None = None,
    **fit_kwargs: Any,
) -> TournamentResult:
    """Choose a one-variable law by a rule that sees only the fitting points ``df`` (see TOURNAMENT_RULE).

    Why: choosing the law by its held-out error (``compare_laws``) spends the held-out point on the choice,
    so that error no longer measures how well the chosen law predicts. Here the held-out rows must be removed
    before the call; they come in separately as ``held_out`` and are only predicted after the choice (the
    ``held_out`` table, every row marked ``not used for the choice``). Rule, in short: rolling-origin
    validation within the fitting sizes (fit on the smallest t sizes, predict the next ``horizon`` size(s);
    t >= max(3, free parameters + 1)), scored by mean absolute log error over the origins all scored laws
    share; ties (5% relative, or absolute max(0.001, ``noise_floor``); default floor: the pooled relative
    seed spread of ``df``, see :func:`seed_noise_floor`) go to a non-degenerate full fit, then to fewer free
    parameters, then to the lowest AICc; with too few sizes for any origin, AICc alone decides. Each law's
    variable is mapped to column ``by``; ``reference_loss`` fixes L0 of ``envelope_U_fixed`` (not eligible
    without it). ``fit_kwargs`` go to :func:`fit_law` (``loss``, ``starts``, ``fixed``, ``huber_delta``...).
    """
    if by not in df.columns:
        raise ValueError(f"by={by!r}: not a column (columns: {list(df.columns)})")
    if horizon < 1:
        raise ValueError(f"horizon={horizon}: must be >= 1")
    fits, kws, rows = _full_fits(
        list(candidates or TOURNAMENT_CANDIDATES), df, by, reference_loss, fit_kwargs
    )
    if not fits:
        raise ValueError(
            "predictive_tournament: no law could be fitted: " + "; ".join(r["error"] for r in rows)
        )
    origins, shared = _score_origins(fits, kws, df, by, horizon)
    table = pd.DataFrame(rows)
    shared_scores, own_scores = _rule_scores(origins)
    table["rule_score"] = [shared_scores.get(n, math.nan) for n in table["law"]]
    table["own_origins_score"] = [own_scores.get(n, math.nan) for n in table["law"]]
    if noise_floor is None:
        noise_floor = seed_noise_floor(df, [by], fit_kwargs.get("loss", "loss"))["floor"]
    tie_abs = max(TOURNAMENT_TIE_ABS, float(noise_floor) if np.isfinite(noise_floor) else 0.0)
    chosen, reason = _choose_by_rule(table, shared, tie_abs)
    table["chosen"] = table["law"] == chosen
    return TournamentResult(
        by=by,
        chosen=chosen,
        reason=reason,
        rule=TOURNAMENT_RULE,
        table=table,
        origins=origins,
        fits=fits,
        held_out=_held_out_errors(fits, held_out).assign(chosen=lambda t: t["law"] == chosen),
        tie_abs=tie_abs,
    )
