"""One robust multi-start fit of a law to a table: ``fit_law`` -> ``FitResult``.

Why it is built this way (Besiroglu et al. 2024, *Chinchilla scaling: a replication attempt*; Li et al. 2025,
*(Mis)Fitting: a survey of scaling laws*): the objective is the *summed* Huber loss of log residuals
(``loss.py``); every start of a grid is optimised to its own end point by a batched BFGS, the best
distinct end points are polished (``optimize.py``), and every result carries diagnostics and plain-language
warnings (``diagnostics.py``), so that a boundary or weakly identified optimum is never reported as a
confident number.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from . import diagnostics as dg
from .inputs import encode_checked, loss_array, raw_columns, resolve_variables
from .jsonutil import json_safe
from .laws import Law, get_law
from .loss import FitProblem, quality_metrics
from .optimize import distinct_endpoints, numerical_hessian, polish, run_batched
from .preflight import fit_problems, forced_warning, refusal
from .starts import Starts, start_points


@dataclass
class FitResult:
    """A fitted law: natural parameters at full precision plus everything needed to judge the fit.

    Beyond the contract fields: ``theta`` (the optimised parametrisation, log of positive scales),
    ``std_errors_approx`` (local sandwich SEs, a screen for weak identification, not a substitute for the
    bootstrap), ``metrics`` (in-sample R² on loss as in datablations, R² on log loss, RMSE, MAPE, max ARE),
    ``diagnostics`` (``flags`` — stable codes behind ``warnings`` —, start grid, distinct optima with the
    share of starts ending at each, Hessian eigenvalues, timings) and ``law_obj`` (the Law used, bound to
    levels).
    """

    law: str
    params: dict[str, float]
    objective: float
    n_points: int
    huber_delta: float
    n_starts: int
    frac_starts_at_optimum: float
    grad_norm: float
    converged: bool
    warnings: list[str]
    fixed: dict[str, float]
    variables: dict[str, str]
    preprocessing: dict
    formula: str = ""
    loss_column: str = "loss"
    theta: dict[str, float] = field(default_factory=dict)
    std_errors_approx: dict[str, float] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    diagnostics: dict[str, Any] = field(default_factory=dict)
    law_obj: Law | None = field(default=None, repr=False, compare=False)

    @property
    def bound_law(self) -> Law:
        """The Law object used for the fit (bound to condition levels where the law has them)."""
        return self.law_obj if self.law_obj is not None else get_law(self.law)

    @property
    def free_params(self) -> list[str]:
        """Parameters that were fitted (not fixed)."""
        return [p for p in self.bound_law.params if p not in self.fixed]

    def predict(self, X: pd.DataFrame | Mapping[str, Any]) -> np.ndarray:
        """Predicted loss for the rows of ``X`` (DataFrame columns as in ``variables``, or law variable
        names)."""
        law = self.bound_law
        raw: dict[str, Any] = {}
        for v in law.variables:
            col = self.variables.get(v, v)
            if col in X:
                raw[v] = X[col]
            elif v in X:
                raw[v] = X[v]
            else:
                raise ValueError(f"predict needs column {col!r} (law variable {v!r})")
        return law.predict(self.params, raw)

    def to_dict(self) -> dict:
        """JSON-safe summary (parameters unrounded)."""
        names: tuple[str, ...] = (
            "law",
            "formula",
            "params",
            "theta",
            "std_errors_approx",
            "objective",
            "n_points",
        )
        names += ("huber_delta", "n_starts", "frac_starts_at_optimum", "grad_norm", "converged", "warnings")
        names += ("fixed", "variables", "loss_column", "preprocessing", "metrics", "diagnostics")
        out = {name: getattr(self, name) for name in names}
        if self.law_obj is not None and self.law_obj.levels:
            out["levels"] = list(self.law_obj.levels)
        return json_safe(out)


def law_of(fit_or_law: Any) -> Law:
    """The Law of a fit (bound to its condition levels), of anything with a ``law`` (a Law or a name), or
    the Law itself (also given by name)."""
    law = getattr(fit_or_law, "bound_law", None) or getattr(fit_or_law, "law", fit_or_law)
    return get_law(law)


def predict(fit_or_law: Any, params: Mapping[str, float] | None, X: Mapping[str, Any]) -> np.ndarray:
    """Predicted loss at law variables ``X`` ({variable: values}) with ``params`` (default: the fit's).

    The one prediction the verdict, the plots and the derived quantities share, so a figure never draws a
    curve the fit.json numbers were not computed from.
    """
    law = law_of(fit_or_law)
    if params is None:
        params = fit_or_law.params
    frame = pd.DataFrame({v: np.asarray(X[v], dtype=float) for v in law.variables})
    return np.asarray(law.predict(dict(params), frame), dtype=float)


@dataclass
class _Frozen:
    """Fixed parameters: natural values, their theta (full vector and by theta name), and the free indices."""

    natural: dict[str, float]
    theta_full: np.ndarray
    theta_named: dict[str, float]
    free: np.ndarray


def _freeze(law: Law, fixed: Mapping[str, float] | None) -> _Frozen:
    natural = {str(k): float(v) for k, v in (fixed or {}).items()}
    unknown = sorted(set(natural) - set(law.params))
    if unknown:
        raise ValueError(
            f"fixed={natural}: unknown parameters {unknown}; law {law.name!r} has {list(law.params)}"
        )
    theta_full = np.zeros(law.n_params)
    named: dict[str, float] = {}
    for i, p in enumerate(law.params):
        if p not in natural:
            continue
        v = natural[p]
        if p in law.log_params and v <= 0:
            raise ValueError(f"fixed {p}={v}: must be > 0")
        theta_full[i] = math.log(v) if p in law.log_params else v
        named[law.theta_names[i]] = theta_full[i]
    free = np.array([i for i, p in enumerate(law.params) if p not in natural], dtype=np.intp)
    if free.size == 0:
        raise ValueError("all parameters are fixed: nothing to fit (use objective() to evaluate)")
    return _Frozen(natural, theta_full, named, free)


@dataclass
class _Search:
    """The multi-start search: every start's end point, the polished best ones, and timings."""

    zs: np.ndarray
    fs: np.ndarray
    batched: dict[str, np.ndarray]
    polished: list[
        tuple[float, np.ndarray, Any, int]
    ]  # (objective, z, scipy result, start index), best first
    candidates: list[int]
    timing: dict[str, float]

    @property
    def best(self) -> tuple[float, np.ndarray, Any, int]:
        return self.polished[0]


def _search(problem: FitProblem, z0: np.ndarray, n_jobs: int) -> _Search:
    """Run every start to its end point, then polish the best three distinct end points."""
    t0 = time.perf_counter()
    out = run_batched(problem, z0, n_jobs=n_jobs)
    t_batched = time.perf_counter() - t0
    zs, fs = out["x"], out["f"]
    if not np.any(np.isfinite(fs)):
        raise RuntimeError(f"law {problem.law.name!r}: the objective is not finite at any start")
    t0 = time.perf_counter()
    cand = distinct_endpoints(zs, fs, max_n=6)
    polished = []
    for i in cand[:3]:
        zp, fp, res = polish(problem, zs[i])
        polished.append((fp, zp, res, i))
    polished.sort(key=lambda t: t[0])
    timing = {"batched": t_batched, "polish": time.perf_counter() - t0}
    return _Search(zs, fs, out, polished, cand, timing)


def _optima(problem: FitProblem, search: _Search, n: int) -> list[dict[str, Any]]:
    """Distinct end points (local optima, plateaus): objective, share of starts ending there, parameters."""
    delta = problem.delta
    entries = [(fp, zp, True) for fp, zp, _res, _i in search.polished]
    entries += [(float(search.fs[i]), search.zs[i], False) for i in search.candidates[3:]]
    optima: list[dict[str, Any]] = []
    seen: list[tuple[float, np.ndarray]] = []
    for fp, zp, was_polished in sorted(entries, key=lambda e: e[0]):
        if any(
            abs(fp - f0) <= dg.optimum_tol(f0, n, delta)
            and np.max(np.abs(zp - z0)) <= 1e-3 * (1 + np.max(np.abs(z0)))
            for f0, z0 in seen
        ):
            continue
        seen.append((fp, zp))
        share = float(np.mean(np.abs(search.fs - fp) <= dg.optimum_tol(fp, n, delta)))
        params = problem.law.from_theta(problem.full(zp)[0])
        optima.append({"objective": fp, "frac_starts": share, "polished": was_polished, "params": params})
    return optima


def _diagnostics(
    problem: FitProblem,
    search: _Search,
    flags: list[str],
    start_info: dict[str, Any],
    extra: dict[str, Any],
) -> dict[str, Any]:
    """The ``diagnostics`` dict of a FitResult (optimiser health, optima, curvature, timings)."""
    fs, out = search.fs, search.batched
    finite = fs[np.isfinite(fs)]
    res_best = search.best[2]
    quantiles = ("0", "0.1", "0.25", "0.5", "0.75", "1")
    diagnostics = {
        "flags": flags,
        "starts": start_info,
        "n_starts_nonfinite": int(np.sum(~np.isfinite(fs))),
        "n_starts_unfinished": int(np.sum(out["unfinished"])),
        "iterations_median": float(np.median(out["niter"])),
        "iterations_max": int(np.max(out["niter"])),
        "batched_evaluations": int(out["n_evals"]),
        "end_objective_quantiles": {q: float(np.quantile(finite, float(q))) for q in quantiles},
        "optima": _optima(problem, search, len(problem.log_y)),
        **extra,
        "polish": {
            "success": bool(getattr(res_best, "success", False)),
            "message": str(getattr(res_best, "message", "")),
            "nit": int(getattr(res_best, "nit", 0)),
        },
        "timing_s": dict(search.timing),
    }
    if problem.law.levels:
        diagnostics["reference_level"] = problem.law.levels[0]
    return diagnostics


def _check_optimum(
    problem: FitProblem,
    search: _Search,
    params: dict[str, float],
    start_info: dict,
    y: np.ndarray,
    min_frac: float,
) -> tuple[list[dg.Warning], dict[str, Any], dict[str, Any]]:
    """Warnings at the optimum, the diagnostics entries they rest on, and summary numbers."""
    f_best, z_best, res_best, i_best = search.best
    n, delta = len(y), problem.delta
    _, g_best = problem.fg(z_best[None, :])
    grad_norm = float(np.linalg.norm(g_best[0]))
    tol = dg.optimum_tol(f_best, n, delta)
    at_opt = search.fs <= f_best + tol
    at_opt[i_best] = True  # the start the optimum was polished from reached it, even if it stalled short
    frac = float(np.mean(at_opt))
    eig, condition = dg.hessian_summary(numerical_hessian(problem, z_best), problem.k)
    errors = dg.local_standard_errors(problem, z_best, params)
    near = np.isfinite(search.fs) & (search.fs <= f_best * (1.0 + dg.FLAT_RTOL) + tol)
    spread = dg.near_optimal_spread(problem.law, problem.free, search.zs, near)
    theta = problem.full(z_best)[0]
    evidence = dg.FitEvidence(
        problem.law, params, theta, problem.free, y, problem.X, frac, len(search.fs), int(at_opt.sum()),
        start_info, errors.theta, spread, int(near.sum()), eig, {"min_frac_at_optimum": min_frac},
    )  # fmt: skip
    flagged = dg.fit_warnings(evidence)
    converged = bool(np.isfinite(f_best) and grad_norm <= dg.grad_tol(n, delta) and frac > 0)
    if not converged:
        message = getattr(res_best, "message", "")
        flagged.append(
            (
                "not_converged",
                f"not converged: gradient norm {grad_norm:.2e} at the best point (tolerance "
                f"{dg.grad_tol(n, delta):.1e}); optimiser said: {message}",
            )
        )
    extra = {
        "near_optimal_spread": spread,
        "hessian_eigenvalues": [float(v) for v in eig],
        "hessian_condition": condition,
        "std_errors_theta": errors.theta,
        "std_errors_delta": errors.delta,
    }
    summary = {"grad_norm": grad_norm, "frac": frac, "converged": converged, "se": errors.natural}
    return flagged, extra, summary


def _result(
    problem: FitProblem,
    search: _Search,
    y: np.ndarray,
    checked: tuple[list[dg.Warning], dict[str, Any], dict[str, Any]],
    pre: Any,
    meta: dict[str, Any],
) -> FitResult:
    """The FitResult of a finished search (``checked``: warnings, diagnostics, summary numbers)."""
    flagged, diagnostics, summary = checked
    bound = problem.law
    theta_full = problem.full(search.best[1])[0]
    params = bound.from_theta(theta_full)
    params.update(meta["fixed"])  # exact user values, not exp(log(v))
    return FitResult(
        law=bound.name,
        params=params,
        objective=float(search.best[0]),
        n_points=len(y),
        huber_delta=float(problem.delta),
        n_starts=meta["n_starts"],
        frac_starts_at_optimum=summary["frac"],
        grad_norm=summary["grad_norm"],
        converged=summary["converged"],
        warnings=[m for _, m in flagged],
        fixed=meta["fixed"],
        variables=dict(meta["mapping"]),
        preprocessing=dict(pre) if isinstance(pre, Mapping) else {"steps": pre},
        formula=bound.formula,
        loss_column=meta["loss"],
        theta={bound.theta_names[i]: float(theta_full[i]) for i in range(bound.n_params)},
        std_errors_approx=summary["se"],
        metrics=quality_metrics(y, np.exp(problem.log_prediction(theta_full))),
        diagnostics=diagnostics,
        law_obj=bound,
    )


def fit_law(
    law: str | Law,
    df: pd.DataFrame,
    *,
    loss: str = "loss",
    variables: Mapping[str, str] | None = None,
    huber_delta: float = 1e-3,
    starts: Starts = "grid",
    fixed: Mapping[str, float] | None = None,
    preprocessing: Mapping | None = None,
    n_jobs: int = 1,
    force: bool = False,
    min_frac_at_optimum: float = dg.MIN_FRAC_AT_OPTIMUM,
) -> FitResult:
    """Fit ``law`` to the rows of ``df`` by multi-start minimisation of the summed Huber loss on log loss.

    ``variables`` maps law variables to columns (e.g. ``{"N": "N_non_embedding"}``); ``fixed`` freezes natural
    parameters (the datablations two-stage fit); ``starts`` is ``"grid"`` (the law's default grid: Hoffmann's
    4,500 points for Chinchilla), an int (random starts in the grid's box), or natural-scale starts for the
    free
    parameters (array, DataFrame or ``{param: values}`` product grid). ``preprocessing`` (default:
    ``df.attrs["preprocessing"]``) is stored verbatim so every exclusion rule travels with the fit.

    Raises ``UnfittableError`` (one line: why, and what would fix it) when the rows cannot identify the law
    (fewer distinct points than free parameters, a constant loss or scaling variable); ``force=True`` fits
    anyway and marks the result (flag ``forced``). Fewer than ``min_frac_at_optimum`` of the starts reaching
    the optimum is flagged ``rugged``.
    """
    t_start = time.perf_counter()
    if huber_delta <= 0:
        raise ValueError(f"huber_delta={huber_delta}: must be > 0")
    base_law = get_law(law)
    mapping = resolve_variables(base_law, df, variables)
    raw = raw_columns(df, mapping)
    bound = base_law.bind(raw)
    X = encode_checked(bound, raw, mapping, df)
    y = loss_array(df, loss)
    frozen = _freeze(bound, fixed)
    problems = fit_problems(bound, X, y, mapping, len(frozen.free), loss)
    if problems and not force:
        raise refusal(bound, problems)
    problem = FitProblem(bound, X, np.log(y), float(huber_delta), frozen.free, frozen.theta_full)
    z0, start_info = start_points(bound, starts, X, y, frozen.theta_named, frozen.free)
    search = _search(problem, z0, n_jobs)
    theta_full = problem.full(search.best[1])[0]
    params = bound.from_theta(theta_full)
    params.update(frozen.natural)  # exact user values, not exp(log(v))
    flagged, extra, summary = _check_optimum(problem, search, params, start_info, y, min_frac_at_optimum)
    if problems:
        flagged.insert(0, forced_warning(problems))
        extra["forced"] = problems
    diagnostics = _diagnostics(problem, search, sorted({f for f, _ in flagged}), start_info, extra)
    diagnostics["timing_s"]["total"] = time.perf_counter() - t_start
    pre = preprocessing if preprocessing is not None else df.attrs.get("preprocessing", {})
    meta = {"mapping": mapping, "loss": loss, "fixed": frozen.natural, "n_starts": len(z0)}
    return _result(problem, search, y, (flagged, diagnostics, summary), pre, meta)
