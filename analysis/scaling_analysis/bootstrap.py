"""Bootstrap over runs: percentile intervals on parameters and derived quantities, plus the derived quantities.

Why: parameters of scaling laws are weakly identified (Epoch's SE of B is 60% of B), so uncertainty must come from
refitting resampled data, not from the curvature at one optimum (scaling-fits.md §5.4). Each resample draws the runs
(rows) with replacement. A resample is represented by integer weights on the original rows, which lets *all*
resamples × starts be optimised together by the batched BFGS of ``fit.py`` (one vectorised objective with a weight
row per batch row), chunked across worker processes.

Each resample is refitted from the point estimate (warm start), the other distinct optima the original multi-start
fit found, and a few starts drawn from the law's default grid, and keeps the best end point.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from .fit import (
    FitResult,
    _encode_checked,
    _grad_tol,
    _json_safe,
    _loss_array,
    _Problem,
    _raw_columns,
    batched_bfgs,
    resolve_n_jobs,
)
from .laws import Law, get_law


@dataclass
class BootstrapResult:
    """Resampled refits: one row per resample in ``samples`` (natural parameters and derived quantities)."""

    n_resamples: int
    seed: int
    confidence: float
    samples: pd.DataFrame
    intervals: dict[str, tuple[float, float]]
    std_errors: dict[str, float]
    n_failed: int
    law: str = ""
    point: dict[str, float] = field(default_factory=dict)
    n_starts_per_resample: int = 0
    stratified_by: str | None = None
    n_not_converged: int = 0
    timing_s: float = 0.0

    def to_dict(self) -> dict:
        """JSON-safe summary (intervals, SEs, counts); the samples themselves are left out."""
        return _json_safe(
            {
                "law": self.law,
                "n_resamples": self.n_resamples,
                "seed": self.seed,
                "confidence": self.confidence,
                "n_failed": self.n_failed,
                "n_not_converged": self.n_not_converged,
                "n_starts_per_resample": self.n_starts_per_resample,
                "stratified_by": self.stratified_by,
                "point": self.point,
                "intervals": {k: list(v) for k, v in self.intervals.items()},
                "std_errors": self.std_errors,
                "timing_s": self.timing_s,
            }
        )


def _resample_weights(
    n: int, n_resamples: int, rng: np.random.Generator, strata: np.ndarray | None
) -> np.ndarray:
    """Integer weights [R, n]: how often each row appears in each resample (rows drawn with replacement)."""
    W = np.zeros((n_resamples, n))
    if strata is None:
        idx = rng.integers(0, n, size=(n_resamples, n))
        for r in range(n_resamples):
            W[r] = np.bincount(idx[r], minlength=n)
        return W
    for level in np.unique(strata):
        members = np.nonzero(strata == level)[0]
        idx = rng.integers(0, members.size, size=(n_resamples, members.size))
        for r in range(n_resamples):
            W[r, members] += np.bincount(idx[r], minlength=members.size)
    return W


def _refit_chunk(
    problem: _Problem, W: np.ndarray, starts: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Best end point per resample of a chunk: (z[R, k], f[R], grad_norm[R])."""
    R, m = W.shape[0], starts.shape[0]
    z0 = np.tile(starts, (R, 1))
    rows_w = np.repeat(W, m, axis=0)
    prob = _Problem(
        problem.law, problem.X, problem.log_y, problem.delta, problem.free, problem.theta_fixed, rows_w
    )

    def fg(z: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return prob.fg(z, rows)

    out = batched_bfgs(fg, z0)
    f = out["f"].reshape(R, m)
    best = np.argmin(np.where(np.isfinite(f), f, np.inf), axis=1)
    sel = np.arange(R) * m + best
    return out["x"][sel], out["f"][sel], np.linalg.norm(out["g"][sel], axis=1)


def bootstrap(
    fit: FitResult,
    df: pd.DataFrame,
    *,
    n_resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
    derived: Mapping[str, Callable[[dict[str, float]], float]] | None = None,
    n_jobs: int = -1,
    progress: bool = False,
    n_grid_starts: int = 4,
    chunk_size: int = 50,
) -> BootstrapResult:
    """Resample runs (rows of ``df``, the data ``fit`` was fitted on) with replacement and refit each resample.

    Laws with a categorical variable resample within each level (every condition keeps its runs). Intervals are
    percentile intervals at ``confidence``; ``derived`` maps names to functions of the natural parameters
    (see :func:`derived_quantities`) evaluated on every resample. ``n_jobs=-1`` uses every available core.
    """
    t_start = time.perf_counter()
    if n_resamples < 1:
        raise ValueError(f"n_resamples={n_resamples}: must be >= 1")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence={confidence}: must be in (0, 1)")
    law: Law = fit.bound_law
    raw = _raw_columns(law, df, fit.variables)
    X = _encode_checked(law, raw)
    y = _loss_array(df, fit.loss_column)
    n = len(y)
    free = np.array([i for i, p in enumerate(law.params) if p not in fit.fixed], dtype=np.intp)
    theta_hat = law.to_theta(fit.params)
    problem = _Problem(law, X, np.log(y), fit.huber_delta, free, theta_hat.copy())

    # starts: the point estimate, the other optima the multi-start fit found, a few default-grid starts
    rng = np.random.default_rng(seed)
    starts = [theta_hat[free]]
    for opt in fit.diagnostics.get("optima", [])[1:4]:
        try:
            th = law.to_theta({**fit.params, **opt["params"]})[free]
        except (KeyError, ValueError):
            continue
        if np.all(np.isfinite(th)):
            starts.append(th)
    if n_grid_starts > 0 and law.start_grid_fn is not None:
        fixed_theta = {law.theta_names[i]: theta_hat[i] for i, p in enumerate(law.params) if p in fit.fixed}
        grid = law.default_starts(X, y, fixed_theta)[:, free]
        pick = rng.choice(len(grid), size=min(n_grid_starts, len(grid)), replace=False)
        starts.extend(grid[pick])
    S0 = np.unique(np.array(starts), axis=0)

    strata_var = next((v for v in law.variables if v in law.categorical), None)
    strata = X[strata_var] if strata_var else None
    W = _resample_weights(n, n_resamples, rng, strata)

    chunks = [np.arange(i, min(i + chunk_size, n_resamples)) for i in range(0, n_resamples, chunk_size)]
    Z = np.empty((n_resamples, free.size))
    F = np.empty(n_resamples)
    G = np.empty(n_resamples)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n_resamples, desc=f"bootstrap {law.name}", unit="resample")
    n_jobs = min(resolve_n_jobs(n_jobs), len(chunks))
    if n_jobs <= 1:
        for c in chunks:
            Z[c], F[c], G[c] = _refit_chunk(problem, W[c], S0)
            if bar is not None:
                bar.update(len(c))
    else:
        with ProcessPoolExecutor(max_workers=n_jobs) as pool:
            futs = {pool.submit(_refit_chunk, problem, W[c], S0): c for c in chunks}
            for fu in as_completed(futs):
                c = futs[fu]
                Z[c], F[c], G[c] = fu.result()
                if bar is not None:
                    bar.update(len(c))
    if bar is not None:
        bar.close()

    failed = ~np.isfinite(F) | ~np.all(np.isfinite(Z), axis=1)
    not_conv = ~failed & (_grad_tol(n, fit.huber_delta) * 10 < G)
    rows = []
    derived = dict(derived or {})
    for r in range(n_resamples):
        th = theta_hat.copy()
        th[free] = Z[r]
        params = law.from_theta(th)
        params.update(fit.fixed)
        row: dict[str, Any] = dict(params)
        for name, fn in derived.items():
            row[name] = _safe_call(fn, params) if not failed[r] else math.nan
        row["objective"] = float(F[r])
        row["grad_norm"] = float(G[r])
        row["failed"] = bool(failed[r])
        rows.append(row)
    samples = pd.DataFrame(rows)
    point = dict(fit.params)
    for name, fn in derived.items():
        point[name] = _safe_call(fn, fit.params)

    ok = samples.loc[~samples["failed"]]
    quantities = [p for p in law.params if p not in fit.fixed] + list(derived)
    lo_q, hi_q = 50 * (1 - confidence), 100 - 50 * (1 - confidence)
    intervals: dict[str, tuple[float, float]] = {}
    std_errors: dict[str, float] = {}
    for q in quantities:
        v = ok[q].to_numpy(dtype=float)
        v = v[np.isfinite(v)]
        if v.size < 2:
            intervals[q] = (math.nan, math.nan)
            std_errors[q] = math.nan
            continue
        intervals[q] = (float(np.percentile(v, lo_q)), float(np.percentile(v, hi_q)))
        with np.errstate(over="ignore"):  # a weakly identified coefficient (e.g. B ~ 1e36) has an infinite SE
            std_errors[q] = float(np.std(v, ddof=1))
    return BootstrapResult(
        n_resamples=n_resamples,
        seed=seed,
        confidence=confidence,
        samples=samples,
        intervals=intervals,
        std_errors=std_errors,
        n_failed=int(failed.sum()),
        law=law.name,
        point=point,
        n_starts_per_resample=int(S0.shape[0]),
        stratified_by=fit.variables.get(strata_var) if strata_var else None,
        n_not_converged=int(not_conv.sum()),
        timing_s=time.perf_counter() - t_start,
    )


def _safe_call(fn: Callable[[dict[str, float]], float], params: dict[str, float]) -> float:
    try:
        with np.errstate(all="ignore"):
            return float(fn(params))
    except (ValueError, ZeroDivisionError, OverflowError, FloatingPointError):
        return math.nan


# ====================================================================================== derived quantities


def _fmt(v: float) -> str:
    return f"{float(v):.4g}"


def _as_list(v: Any) -> list[float]:
    return [float(x) for x in np.atleast_1d(v)]


def _doc(fn: Callable, text: str) -> Callable:
    fn.__doc__ = text
    return fn


def _chinchilla_frontier(p: Mapping[str, float], C: float) -> tuple[float, float]:
    """(N_opt, D_opt) at compute C ≈ 6ND on the efficient frontier of E + A/N^α + B/D^β (Hoffmann Eq. 4)."""
    al, be, A, B = p["alpha"], p["beta"], p["A"], p["B"]
    a, b = be / (al + be), al / (al + be)
    G = (al * A / (be * B)) ** (1.0 / (al + be))
    return G * (C / 6.0) ** a, (C / 6.0) ** b / G


def derived_quantities(law: str | Law, **targets: Any) -> dict[str, Callable[[dict[str, float]], float]]:
    """Named functions of the natural parameters, for point estimates and bootstrap CIs.

    Chinchilla-type laws (chinchilla, data_constrained): ``a`` = β/(α+β) and ``b`` = α/(α+β) (N_opt ∝ C^a,
    D_opt ∝ C^b); with ``C=`` (FLOP, C ≈ 6ND) also ``N_opt@C=…``, ``D_opt@C=…``, ``tokens_per_param@C=…`` and
    ``loss_opt@C=…``. Any law: with a value for each of its variables (``N=``, ``D=``, ``U=``, ``condition=``;
    scalars or equal-length lists) ``loss@…`` is the predicted loss there. One-variable laws: with ``L=`` (or
    ``loss=``) a target loss, ``D@loss=…`` (or ``N@loss=…``) is the data (size) needed to reach it (NaN if never).
    """
    law = get_law(law)
    targets = dict(targets)
    if "loss" in targets and "L" not in targets:
        targets["L"] = targets.pop("loss")
    allowed = {"C", "L", *law.variables}
    unknown = sorted(set(targets) - allowed)
    if unknown:
        raise ValueError(
            f"derived_quantities({law.name!r}): unknown targets {unknown}; allowed {sorted(allowed)}"
        )
    out: dict[str, Callable[[dict[str, float]], float]] = {}
    chin = {"A", "B", "alpha", "beta"} <= set(law.params)
    if chin:
        out["a"] = _doc(
            lambda p: p["beta"] / (p["alpha"] + p["beta"]),
            "compute-optimal exponent a = β/(α+β) (N_opt ∝ C^a)",
        )
        out["b"] = _doc(
            lambda p: p["alpha"] / (p["alpha"] + p["beta"]),
            "compute-optimal exponent b = α/(α+β) (D_opt ∝ C^b)",
        )
        for C in _as_list(targets.get("C", [])):
            tag = f"@C={_fmt(C)}"
            out["N_opt" + tag] = _doc(
                lambda p, C=C: _chinchilla_frontier(p, C)[0],
                f"compute-optimal parameters at C = {_fmt(C)} FLOP",
            )
            out["D_opt" + tag] = _doc(
                lambda p, C=C: _chinchilla_frontier(p, C)[1], f"compute-optimal tokens at C = {_fmt(C)} FLOP"
            )
            out["tokens_per_param" + tag] = _doc(
                lambda p, C=C: _chinchilla_frontier(p, C)[1] / _chinchilla_frontier(p, C)[0],
                f"compute-optimal tokens per parameter D_opt/N_opt at C = {_fmt(C)} FLOP",
            )
            out["loss_opt" + tag] = _doc(
                lambda p, C=C: (
                    p.get("E", 0.0)
                    + p["A"] / _chinchilla_frontier(p, C)[0] ** p["alpha"]
                    + p["B"] / _chinchilla_frontier(p, C)[1] ** p["beta"]
                ),
                f"loss on the compute-optimal frontier at C = {_fmt(C)} FLOP (no repetition)",
            )
    elif "C" in targets:
        raise ValueError(
            f"derived_quantities({law.name!r}): C targets need a Chinchilla-type law (A, B, alpha, beta)"
        )

    # predicted loss at target points (all of the law's variables given)
    if all(v in targets for v in law.variables):
        cols = {v: np.atleast_1d(targets[v]) for v in law.variables}
        m = max(len(c) for c in cols.values())
        if any(len(c) not in (1, m) for c in cols.values()):
            raise ValueError(
                "derived_quantities: variable targets must be scalars or lists of one common length"
            )
        cols = {v: np.resize(c, m) for v, c in cols.items()}
        for i in range(m):
            point = {v: cols[v][i : i + 1] for v in law.variables}
            label = ",".join(
                f"{v}={_fmt(point[v][0]) if v not in law.categorical else point[v][0]}" for v in law.variables
            )

            def _loss_at(p: dict[str, float], point: dict = point) -> float:
                return float(law.predict(p, point)[0])

            out[f"loss@{label}"] = _doc(_loss_at, f"predicted loss at {label}")

    # size needed to reach a target loss (one-variable laws)
    if "L" in targets:
        if len(law.variables) != 1:
            raise ValueError(f"derived_quantities({law.name!r}): L targets need a one-variable law")
        var = law.variables[0]
        for L in _as_list(targets["L"]):

            def _needed(p: dict[str, float], L: float = L) -> float:
                return _size_for_loss(law, p, L)

            out[f"{var}@loss={_fmt(L)}"] = _doc(
                _needed, f"{var} needed to reach loss {_fmt(L)} (NaN if never)"
            )
    return out


def _size_for_loss(law: Law, p: Mapping[str, float], L: float) -> float:
    """Solve L(x) = L for a one-variable law: closed forms where they exist, else bisection in log x."""
    name = law.name
    if name in ("saturating_power_D", "saturating_power_N"):
        E = p["E"]
        coef, ex = (p["B"], p["beta"]) if name.endswith("D") else (p["A"], p["alpha"])
        if L <= E or ex <= 0:
            return math.nan
        return (coef / (L - E)) ** (1.0 / ex)
    if name in ("kaplan_D", "kaplan_N"):
        xc, ex = (p["D_c"], p["alpha_D"]) if name.endswith("D") else (p["N_c"], p["alpha_N"])
        if ex <= 0:
            return math.nan
        return xc * L ** (-1.0 / ex)
    var = law.variables[0]
    lo, hi = 0.0, 80.0  # log x from 1 to e^80 ≈ 5.5e34
    xs = np.linspace(lo, hi, 801)
    vals = law.predict(dict(p), {var: np.exp(xs)}) - L
    sign = np.sign(vals)
    cross = np.nonzero(sign[:-1] * sign[1:] <= 0)[0]
    if cross.size == 0:
        return math.nan
    a, b = xs[cross[0]], xs[cross[0] + 1]
    fa = vals[cross[0]]
    for _ in range(80):
        mid = 0.5 * (a + b)
        fm = float(law.predict(dict(p), {var: np.exp([mid])})[0] - L)
        if (fm <= 0) == (fa <= 0):
            a, fa = mid, fm
        else:
            b = mid
    return float(np.exp(0.5 * (a + b)))
