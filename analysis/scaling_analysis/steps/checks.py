"""Does the fitted table look like a scaling curve? A plain verdict with the numbers behind it.

Why: a law can be fitted to anything; the report must say, before any number, whether loss actually falls with
the scaling variable, whether the fitted exponents are positive, and whether the data can identify them at all
(fewer distinct design points than free parameters makes the verdict "Inconclusive").
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from ..engine import FitResult, predict
from ..engine.jsonutil import json_safe

CONFIDENCE = 0.95


@dataclass
class _Evidence:
    """The numbers a verdict rests on."""

    x: str
    rho: float
    p: float
    n_sizes: int
    n_runs: int
    exps: dict[str, float]
    exp_iv: dict[str, list[float]]
    primary: str | None
    decreasing: bool | None

    @property
    def looks(self) -> bool:
        exp_ok = self.primary is None or self.exps[self.primary] > 0
        return bool(np.isfinite(self.rho) and self.rho < 0 and exp_ok and self.decreasing is not False)


def _spearman(xs: np.ndarray, ys: np.ndarray) -> tuple[float, float]:
    if len(set(xs.tolist())) <= 1:
        return math.nan, math.nan
    res = stats.spearmanr(xs, ys)
    return float(res.statistic), float(res.pvalue)


def _curve_decreasing(fit: FitResult, law: Any, x: str, xs: np.ndarray) -> bool | None:
    """Whether the fitted one-variable curve decreases over the data range (None for other laws)."""
    x_var = next((v for v, c in fit.variables.items() if c == x), None)
    if x_var is None or len(law.variables) != 1:
        return None
    grid = np.logspace(np.log10(xs.min()), np.log10(xs.max()), 50)
    pred = predict(fit, None, {x_var: grid})
    return bool(np.all(np.diff(pred) < 0))


def _facts(ev: _Evidence) -> str:
    parts = [
        f"Spearman ρ of loss vs {ev.x} = {ev.rho:+.3f} (p = {ev.p:.2g}, {ev.n_sizes} sizes, {ev.n_runs} runs)"
    ]
    if ev.primary is not None:
        ci = ev.exp_iv.get(ev.primary)
        ci_txt = f", {CONFIDENCE:.0%} CI [{ci[0]:.4g}, {ci[1]:.4g}]" if ci else ""
        parts.append(f"fitted exponent {ev.primary} = {ev.exps[ev.primary]:.4g}{ci_txt}")
    if ev.decreasing is not None:
        shape = "decreases" if ev.decreasing else "does NOT decrease"
        parts.append(f"the fitted curve {shape} over the data range")
    return "; ".join(parts) + "."


def _verdict(ev: _Evidence, law: Any, n_free: int, identified: bool) -> str:
    x = ev.x
    if ev.looks and not identified:
        return (
            f"Inconclusive: loss falls as {x} grows, but {ev.n_sizes} distinct sizes cannot identify the "
            f"{n_free} free parameters of {law.name}, so the fitted exponent is arbitrary; add sizes before "
            "calling this a scaling curve. "
        )
    if not ev.looks:
        return (
            f"No: this does not look like a scaling curve (loss does not fall steadily with {x}). "
            "Check the runs (convergence, token cap, data) before reading anything into the fitted law, "
            "and do not extrapolate it. "
        )
    verdict = f"Yes: loss falls as {x} grows, as a scaling curve should. "
    if ev.primary is not None and ev.primary in ev.exp_iv and ev.exp_iv[ev.primary][0] <= 0:
        verdict += f"But the CI of {ev.primary} includes 0, so the trend is not established. "
    if ev.n_sizes < 4:
        verdict += f"With only {ev.n_sizes} distinct sizes this is a weak check. "
    return verdict


def scaling_check(
    df: pd.DataFrame,
    fit: FitResult,
    x: str,
    intervals: Mapping[str, Sequence[float]] | None = None,
    *,
    loss: str = "loss",
    identified: bool = True,
) -> dict[str, Any]:
    """Does loss fall with data? Spearman ρ of loss vs ``x`` < 0, the fitted curve decreasing, exponents > 0.

    Returns the numbers and one plain sentence; when the answer is no, the sentence says so and warns against
    extrapolating. ``identified=False`` (fewer design points than free parameters) makes the verdict
    "Inconclusive": the fitted exponent is then arbitrary.
    """
    law = fit.bound_law
    if len([v for v in law.variables if v not in law.categorical]) > 1:
        return multi_variable_check(df, fit, intervals, loss=loss, identified=identified)
    xs, ys = df[x].to_numpy(dtype=float), df[loss].to_numpy(dtype=float)
    rho, p = _spearman(xs, ys)
    exps = {p_: float(fit.params[p_]) for p_ in law.exponents if p_ in fit.params}
    exp_iv = {k: list(intervals[k]) for k in exps if intervals and k in intervals}
    ev = _Evidence(
        x, rho, p, len(set(xs.tolist())), len(xs), exps, exp_iv, next(iter(exps), None),
        _curve_decreasing(fit, law, x, xs),
    )  # fmt: skip
    if len(set(ys.tolist())) <= 1:
        sentence = f"Cannot tell: all {len(ys)} runs have the same loss, so there is no curve."
    elif not np.isfinite(rho):
        sentence = f"Cannot tell: all runs share one value of {x}, so there is no curve."
    else:
        n_free = len([p_ for p_ in law.params if p_ not in fit.fixed])
        sentence = _verdict(ev, law, n_free, identified) + _facts(ev)
    curvature = loglog_curvature(xs, ys)
    if ev.looks and curvature["shape"] != "straight":
        sentence += " " + curvature["sentence"]
    return json_safe(
        {
            "x": x,
            "spearman_rho": rho,
            "spearman_p": p,
            "exponents": exps,
            "exponent_intervals": exp_iv,
            "decreasing": ev.decreasing,
            "looks_like_scaling": ev.looks,
            "identified": identified,
            "sentence": sentence,
            "loglog_slopes": {"lower_half": curvature["lower_slope"], "upper_half": curvature["upper_slope"]},
            "shape": curvature["shape"],
        }
    )


def _decreasing_share(fit: FitResult, df: pd.DataFrame, var: str, step: float = 1.05) -> float:
    """Share of the runs at which the fitted law's prediction falls when ``var`` grows by ``step``."""
    law = fit.bound_law
    inputs = {v: df[fit.variables.get(v, v)].to_numpy() for v in law.variables}
    bigger = {**inputs, var: inputs[var].astype(float) * step}
    with np.errstate(all="ignore"):
        base, moved = law.predict(fit.params, inputs), law.predict(fit.params, bigger)
    return float(np.mean(moved < base)) if len(base) else math.nan


def _multi_facts(
    per_var: dict[str, dict[str, Any]], exps: dict[str, float], iv: dict[str, list[float]]
) -> str:
    rhos = ", ".join(f"vs {c} = {d['rho']:+.3f} (p = {d['p']:.2g})" for c, d in per_var.items())
    parts = [f"Spearman ρ of loss {rhos}"]
    if exps:
        exp_txt = ", ".join(
            f"{k} = {v:.4g}" + (f" ({CONFIDENCE:.0%} CI [{iv[k][0]:.4g}, {iv[k][1]:.4g}])" if k in iv else "")
            for k, v in exps.items()
        )
        parts.append(f"fitted exponents {exp_txt}")
    shares = " and ".join(f"in {c} at {d['decreasing_share']:.0%}" for c, d in per_var.items())
    parts.append(f"the fitted law decreases {shares} of the runs")
    return "; ".join(parts) + "."


def _multi_verdict(
    per_var: dict[str, dict[str, Any]], exps: dict[str, float], identified: bool, n_free: int
) -> str:
    names = " and ".join(per_var)
    falls = all(d["decreasing_share"] >= 0.95 for d in per_var.values()) and all(v > 0 for v in exps.values())
    falls = falls and any(np.isfinite(d["rho"]) and d["rho"] < 0 for d in per_var.values())
    if falls and not identified:
        return (
            f"Inconclusive: the fitted law falls with {names}, but the distinct design points cannot "
            "identify "
            f"its {n_free} free parameters, so the exponents are arbitrary. "
        )
    if falls:
        return f"Yes: loss falls as {names} grow, as a scaling law in {names} should. "
    failing = [c for c, d in per_var.items() if not d["decreasing_share"] >= 0.95]
    failing += [k for k, v in exps.items() if not v > 0]
    return (
        f"No: this does not look like a scaling law in {names} (not falling: "
        f"{', '.join(failing) or 'loss'}). "
        "Check the runs before reading anything into the fitted law, and do not extrapolate it. "
    )


def multi_variable_check(
    df: pd.DataFrame,
    fit: FitResult,
    intervals: Mapping[str, Sequence[float]] | None = None,
    *,
    loss: str = "loss",
    identified: bool = True,
) -> dict[str, Any]:
    """The verdict for a law of several variables: every variable, not only the first, must lower the loss."""
    law = fit.bound_law
    ys = df[loss].to_numpy(dtype=float)
    per_var: dict[str, dict[str, Any]] = {}
    for v in law.variables:
        if v in law.categorical:
            continue
        col = fit.variables.get(v, v)
        rho, p = _spearman(df[col].to_numpy(dtype=float), ys)
        per_var[col] = {"variable": v, "rho": rho, "p": p, "decreasing_share": _decreasing_share(fit, df, v)}
    exps = {k: float(fit.params[k]) for k in law.exponents if k in fit.params}
    exp_iv = {k: list(intervals[k]) for k in exps if intervals and k in intervals}
    n_free = len([k for k in law.params if k not in fit.fixed])
    if len(set(ys.tolist())) <= 1:
        sentence = f"Cannot tell: all {len(ys)} runs have the same loss, so there is no trend."
    else:
        sentence = _multi_verdict(per_var, exps, identified, n_free) + _multi_facts(per_var, exps, exp_iv)
    looks = sentence.startswith("Yes")
    first = next(iter(per_var.values()), {"rho": math.nan, "p": math.nan})
    return json_safe(
        {
            "x": next(iter(per_var), ""),
            "spearman_rho": first["rho"],
            "spearman_p": first["p"],
            "variables": per_var,
            "exponents": exps,
            "exponent_intervals": exp_iv,
            "decreasing": all(d["decreasing_share"] >= 0.95 for d in per_var.values()),
            "looks_like_scaling": looks,
            "identified": identified,
            "sentence": sentence,
            "loglog_slopes": {"lower_half": None, "upper_half": None},
            "shape": "unknown",
        }
    )


def loglog_curvature(xs: np.ndarray, ys: np.ndarray, tolerance: float = 0.25) -> dict[str, Any]:
    """Does the log-log curve steepen or flatten? Slopes of log loss vs log x over the lower and upper half
    of sizes.

    A curve that flattens bends towards an irreducible loss, as a saturating law expects. One that steepens
    means the smallest sizes sit in the small-data region (Hestness et al. 2017) where loss falls slower than
    in the power-law region, so a law fitted across both under-predicts the gains at larger sizes.
    """
    sizes = np.unique(xs)
    out: dict[str, Any] = {
        "lower_slope": math.nan,
        "upper_slope": math.nan,
        "shape": "unknown",
        "sentence": "",
    }
    if len(sizes) < 4:
        return out
    mean_log_loss = np.array([np.mean(np.log(ys[xs == v])) for v in sizes])
    half = len(sizes) // 2
    lower = float(np.polyfit(np.log(sizes[: half + 1]), mean_log_loss[: half + 1], 1)[0])
    upper = float(np.polyfit(np.log(sizes[half:]), mean_log_loss[half:], 1)[0])
    out.update(lower_slope=lower, upper_slope=upper)
    if lower < 0 and upper < lower * (1 + tolerance):
        out["shape"] = "steepens"
        out["sentence"] = (
            f"The log-log slope steepens from {lower:.3f} over the smaller half of the sizes to {upper:.3f} "
            "over "
            "the larger half: the smallest subsets sit in the small-data region (Hestness et al. 2017), so a "
            "single power law fitted across the range under-predicts the gains at larger sizes (see the "
            "held-out "
            "error); add larger sizes, or fit only the upper part, before extrapolating."
        )
    elif lower < 0 and upper > lower * (1 - tolerance):
        out["shape"] = "flattens"
        out["sentence"] = (
            f"The log-log slope flattens from {lower:.3f} to {upper:.3f}: the curve bends towards an "
            "irreducible "
            "loss, as a saturating law expects."
        )
    else:
        out["shape"] = "straight"
    return out
