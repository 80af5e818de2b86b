"""Robust multi-start fits of scaling laws: summed Huber loss on log loss, analytic gradients, diagnostics.

Why it is built this way (``shared/notes/scaling-fits.md`` §5):

* The objective is the *summed* Huber loss (δ = 1e-3 by default) of ``log L̂ − log L`` in the LSE
  parameterisation (Hoffmann et al. 2022, Eq. 11). Averaging instead of summing, or default optimiser tolerances,
  stops L-BFGS early (Besiroglu et al. 2024), so convergence is judged on the gradient norm and tolerances are tight.
* The landscape has many stalled points and local minima (only about a third to a half of Hoffmann's 4,500 starts
  reach the optimum on Epoch's data), so every fit is multi-start. All starts are optimised *together*: a batched
  BFGS in numpy evaluates the objective and gradient for every still-running start in one vectorised call, with a
  per-start weak-Wolfe line search, until each start has converged or stalled. The best distinct end points are then
  polished one by one with scipy BFGS (gtol=1e-12) and safeguarded Newton steps. This runs Hoffmann's full grid in seconds
  without shortcuts: every start is run to its own end point, and the fraction reaching the optimum is reported.
* Every result carries diagnostics: gradient norm, fraction of starts at the optimum, boundary solutions (optimum
  outside the start grid, exponents near 0, the irreducible loss collapsing to 0), weakly identified parameters
  (sandwich standard errors and the spread of near-optimal end points), too few points.

Bootstrap, held-out extrapolation and law comparison live in ``bootstrap.py`` and ``compare.py`` and are
re-exported here, so ``from scaling_analysis.fit import bootstrap, compare_laws`` works.
"""

from __future__ import annotations

import itertools
import math
import os
import time
import warnings as _warnings
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from scipy import optimize

from .laws import Law, get_law

if TYPE_CHECKING:  # re-exported lazily by __getattr__ below (they import this module)
    from .bootstrap import BootstrapResult, bootstrap, derived_quantities
    from .compare import ComparisonResult, HoldoutResult, compare_laws, holdout_extrapolation

__all__ = [
    "BootstrapResult",
    "ComparisonResult",
    "FitResult",
    "HoldoutResult",
    "bootstrap",
    "compare_laws",
    "derived_quantities",
    "fit_law",
    "fit_metrics",
    "holdout_extrapolation",
    "huber",
    "huber_grad",
    "objective",
]

#: Starts whose end objective is within this relative distance of the best count as "at the optimum"
#: (1e-6 relative is the 1e-9 absolute used for Epoch's 1.018e-3 optimum in the notes).
OPTIMUM_RTOL = 1e-6
#: End points within this relative objective distance of the best are "near-optimal" for the flatness check.
FLAT_RTOL = 1e-2


# ====================================================================================== objective


def huber(r: np.ndarray | float, delta: float = 1e-3) -> np.ndarray:
    """Elementwise Huber loss: r²/2 for |r| ≤ δ, δ(|r| − δ/2) beyond (Hoffmann et al. 2022, Eq. 11)."""
    r = np.asarray(r, dtype=float)
    a = np.abs(r)
    return np.where(a <= delta, 0.5 * r * r, delta * (a - 0.5 * delta))


def huber_grad(r: np.ndarray | float, delta: float = 1e-3) -> np.ndarray:
    """d huber / d r = clip(r, −δ, δ)."""
    return np.clip(np.asarray(r, dtype=float), -delta, delta)


def _resolve_variables(law: Law, df: pd.DataFrame, variables: Mapping[str, str] | None) -> dict[str, str]:
    mapping = {v: v for v in law.variables}
    if variables:
        unknown = sorted(set(variables) - set(law.variables))
        if unknown:
            raise ValueError(f"variables={dict(variables)}: keys must be law variables {list(law.variables)}")
        mapping.update({k: str(v) for k, v in variables.items()})
    missing = [f"{v}->{c}" for v, c in mapping.items() if c not in df.columns]
    if missing:
        raise ValueError(
            f"law {law.name!r}: columns {missing} not in the DataFrame (columns: {list(df.columns)}); "
            "pass variables={law_variable: column}"
        )
    return mapping


def _raw_columns(law: Law, df: pd.DataFrame, mapping: Mapping[str, str]) -> dict[str, np.ndarray]:
    return {v: df[c].to_numpy() for v, c in mapping.items()}


def _encode_checked(law: Law, raw: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    X = law.encode(raw)
    for v, arr in X.items():
        if v in law.categorical:
            continue
        if not np.all(np.isfinite(arr)) or np.any(arr <= 0):
            raise ValueError(
                f"variable {v!r} must be finite and > 0 for a log-space fit (got min {np.min(arr)!r})"
            )
    return X


def _loss_array(df: pd.DataFrame, loss: str) -> np.ndarray:
    if loss not in df.columns:
        raise ValueError(f"loss={loss!r}: not a column (columns: {list(df.columns)})")
    y = df[loss].to_numpy(dtype=float)
    if not np.all(np.isfinite(y)) or np.any(y <= 0):
        raise ValueError(
            f"loss column {loss!r} must be finite and > 0 (drop such runs as a recorded preprocessing step)"
        )
    return y


def objective(
    law: str | Law,
    params: Mapping[str, float],
    df: pd.DataFrame,
    *,
    loss: str = "loss",
    variables: Mapping[str, str] | None = None,
    huber_delta: float = 1e-3,
) -> float:
    """Summed Huber loss of log L̂ − log L at natural ``params`` (the quantity every fit minimises)."""
    law = get_law(law)
    mapping = _resolve_variables(law, df, variables)
    raw = _raw_columns(law, df, mapping)
    law = law.bind(raw)
    X = _encode_checked(law, raw)
    y = _loss_array(df, loss)
    lp, _ = law.log_predict(law.to_theta(params)[None, :], X)
    return float(np.sum(huber(lp[0] - np.log(y), huber_delta)))


def fit_metrics(
    law: str | Law,
    params: Mapping[str, float],
    df: pd.DataFrame,
    *,
    loss: str = "loss",
    variables: Mapping[str, str] | None = None,
) -> dict[str, float]:
    """In-sample quality: R² on loss (1 − SS_res/SS_tot, as datablations), R² on log loss, RMSE, MAPE, max ARE."""
    law = get_law(law)
    mapping = _resolve_variables(law, df, variables)
    raw = _raw_columns(law, df, mapping)
    law = law.bind(raw)
    y = _loss_array(df, loss)
    pred = law.predict(params, raw)
    return _metrics(y, pred)


def _metrics(y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    resid = pred - y
    lres = np.log(pred) - np.log(y)
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    ly = np.log(y)
    ss_tot_log = float(np.sum((ly - ly.mean()) ** 2))
    are = np.abs(resid) / y
    return {
        "r2": 1.0 - float(np.sum(resid**2)) / ss_tot if ss_tot > 0 else math.nan,
        "r2_log": 1.0 - float(np.sum(lres**2)) / ss_tot_log if ss_tot_log > 0 else math.nan,
        "rmse": float(np.sqrt(np.mean(resid**2))),
        "rmse_log": float(np.sqrt(np.mean(lres**2))),
        "mape": float(np.mean(are)),
        "max_are": float(np.max(are)),
        "mean_log_residual": float(np.mean(lres)),
        "mean_abs_log_residual": float(np.mean(np.abs(lres))),
    }


# ====================================================================================== problem


@dataclass
class _Problem:
    """A law on fixed data with some parameters frozen: the objective and gradient over the free theta."""

    law: Law
    X: dict[str, np.ndarray]
    log_y: np.ndarray
    delta: float
    free: np.ndarray  # indices of free theta entries
    theta_fixed: np.ndarray  # full theta; free entries are ignored
    weights: np.ndarray | None = None  # [n] or [S_total, n] (per batch row, e.g. bootstrap counts)

    @property
    def k(self) -> int:
        return len(self.free)

    def full(self, z: np.ndarray) -> np.ndarray:
        z = np.atleast_2d(z)
        th = np.broadcast_to(self.theta_fixed, (z.shape[0], self.theta_fixed.size)).copy()
        th[:, self.free] = z
        return th

    def _w(self, rows: np.ndarray | None) -> np.ndarray | None:
        if self.weights is None:
            return None
        if self.weights.ndim == 1:
            return self.weights[None, :]
        return self.weights if rows is None else self.weights[rows]

    def _huber_terms(self, lp: np.ndarray, rows: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """Per-point Huber loss and its derivative (both weighted) for log predictions ``lp`` [S, n].

        huber(r) = psi·(r − psi/2) with psi = clip(r, −δ, δ): one expression for both branches.
        """
        r = lp - self.log_y[None, :]
        psi = np.clip(r, -self.delta, self.delta)
        rho = psi * (r - 0.5 * psi)
        w = self._w(rows)
        if w is not None:
            rho *= w
            psi *= w
        return rho, psi

    def fg(self, z: np.ndarray, rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Objective [S] and gradient [S, k] for a batch of free-theta rows."""
        with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
            lp, jac = self.law.log_predict(self.full(z), self.X, grad=True)
            rho, psi = self._huber_terms(lp, rows)
            f = rho.sum(axis=1)
            g = np.empty((lp.shape[0], self.k))
            for j, p in enumerate(self.free):
                g[:, j] = np.einsum("ij,ij->i", psi, np.broadcast_to(jac[p], psi.shape))
        bad = ~np.isfinite(f) | ~np.all(np.isfinite(g), axis=1)
        f[bad] = np.inf
        g[bad] = 0.0
        return f, g

    def f(self, z: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
        with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
            lp, _ = self.law.log_predict(self.full(z), self.X, grad=False)
            f = self._huber_terms(lp, rows)[0].sum(axis=1)
        f[~np.isfinite(f)] = np.inf
        return f

    def point_jacobian(self, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Residuals [n] and d log L̂ / d z [n, k] at one point."""
        lp, jac = self.law.log_predict(self.full(z), self.X, grad=True)
        J = np.stack([np.broadcast_to(jac[p], lp.shape)[0] for p in self.free], axis=1)
        return lp[0] - self.log_y, J


# ====================================================================================== batched BFGS


def batched_bfgs(
    fg: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]],
    x0: np.ndarray,
    *,
    maxiter: int = 2000,
    gtol: float = 1e-12,
    ftol: float = 1e-15,
    stall_iters: int = 3,
    c1: float = 1e-4,
    c2: float = 0.9,
    max_linesearch: int = 40,
) -> dict[str, np.ndarray]:
    """Minimise many independent starts at once: BFGS with a per-start weak-Wolfe line search, all vectorised.

    ``fg(x[m, k], rows[m]) -> (f[m], g[m, k])`` evaluates the still-running rows (``rows`` index the batch, e.g.
    to pick per-row bootstrap weights). A start stops when its gradient max-norm is below ``gtol``, when the
    decrease its quasi-Newton model predicts (gᵀHg ≈ 2(f − f*)) is below ``ftol``·|f|, when it made no relative
    progress (< ``ftol``) for ``stall_iters`` consecutive iterations (with a Hessian reset in between), or at
    ``maxiter`` (reported as ``unfinished``). The line search expands while the curvature condition fails and bisects
    while the Armijo condition fails (Lewis & Overton's weak Wolfe search, robust for the piecewise-quadratic Huber
    objective). Rows are independent: results do not depend on how starts are batched or split across processes.
    """
    x = np.array(x0, dtype=float, copy=True)
    S, P = x.shape
    all_rows = np.arange(S)
    f, g = fg(x, all_rows)
    eye = np.eye(P)
    H = np.broadcast_to(eye, (S, P, P)).copy()
    fresh = np.ones(S, dtype=bool)  # H is the identity (first iteration or after a reset)
    active = np.isfinite(f)
    niter = np.zeros(S, dtype=np.int64)
    nstall = np.zeros(S, dtype=np.int64)
    n_evals = 1
    for _ in range(maxiter):
        idx = np.nonzero(active)[0]
        if idx.size == 0:
            break
        xa, fa, ga, Ha = x[idx], f[idx], g[idx], H[idx]
        d = -np.einsum("sij,sj->si", Ha, ga)
        gd = np.einsum("si,si->s", ga, d)
        bad = ~(gd < 0) | ~np.isfinite(gd)
        if bad.any():
            Ha[bad] = eye
            d[bad] = -ga[bad]
            gd[bad] = -np.einsum("si,si->s", ga[bad], ga[bad])
            fresh[idx[bad]] = True
        # predicted decrease g'Hg ≈ 2 (f - f*) of the BFGS model below the noise floor: converged, stop now
        negligible = (-gd <= ftol * np.maximum(np.abs(fa), 1e-300)) & ~bad
        if negligible.any():
            active[idx[negligible]] = False
            keep = ~negligible
            idx, xa, fa, ga, Ha, d, gd, bad = (
                idx[keep],
                xa[keep],
                fa[keep],
                ga[keep],
                Ha[keep],
                d[keep],
                gd[keep],
                bad[keep],
            )
            if idx.size == 0:
                break
        fr = fresh[idx]
        t = np.ones(idx.size)
        gnorm = np.sqrt(np.einsum("si,si->s", ga, ga))
        t[fr] = np.minimum(1.0, 1.0 / np.maximum(gnorm[fr], 1e-300))
        lo = np.zeros(idx.size)
        hi = np.full(idx.size, np.inf)
        searching = gd < 0
        xn, fn, gn = xa.copy(), fa.copy(), ga.copy()
        acc = np.zeros(idx.size)  # accepted step (0: no move)
        for _ls in range(max_linesearch):
            si = np.nonzero(searching)[0]
            if si.size == 0:
                break
            ts = t[si]
            xt = xa[si] + ts[:, None] * d[si]
            ft, gt = fg(xt, idx[si])
            n_evals += 1
            armijo = np.isfinite(ft) & (ft <= fa[si] + c1 * ts * gd[si])
            curv = np.einsum("si,si->s", gt, d[si]) >= c2 * gd[si]
            better = armijo & (ts > acc[si])
            r = si[better]
            xn[r], fn[r], gn[r], acc[r] = xt[better], ft[better], gt[better], ts[better]
            searching[si[armijo & curv]] = False
            fail = si[~armijo]
            hi[fail] = t[fail]
            t[fail] = 0.5 * (lo[fail] + hi[fail])
            grow = si[armijo & ~curv]
            lo[grow] = t[grow]
            t[grow] = np.where(np.isinf(hi[grow]), 2.0 * t[grow], 0.5 * (lo[grow] + hi[grow]))
            # a step whose predicted change is below double-precision resolution of f cannot make progress
            tiny = t[si] * -gd[si] <= 1e-17 * np.maximum(np.abs(fa[si]), 1e-300)
            searching[si[tiny]] = False
        moved = acc > 0
        s = xn - xa
        y = gn - ga
        sy = np.einsum("si,si->s", s, y)
        upd = moved & (sy > 1e-300)
        if upd.any():
            su, yu, syu, Hu = s[upd], y[upd], sy[upd], Ha[upd]
            fu = fresh[idx[upd]]
            if fu.any():  # Shanno-Phua scaling of the initial inverse Hessian
                Hu[fu] = eye[None] * (syu[fu] / np.einsum("si,si->s", yu[fu], yu[fu]))[:, None, None]
            rho = 1.0 / syu
            Hy = np.einsum("sij,sj->si", Hu, yu)
            yHy = np.einsum("si,si->s", yu, Hy)
            Hu = (
                Hu
                - rho[:, None, None] * (Hy[:, :, None] * su[:, None, :] + su[:, :, None] * Hy[:, None, :])
                + ((rho * rho * yHy + rho)[:, None, None]) * su[:, :, None] * su[:, None, :]
            )
            Ha[upd] = Hu
            fresh[idx[upd]] = False
        not_moved = ~moved
        if not_moved.any():
            Ha[not_moved] = eye
            fresh[idx[not_moved]] = True
        progress = fa - fn
        stalled = not_moved | (progress <= ftol * np.maximum(np.abs(fa), 1e-300))
        nstall[idx] = np.where(stalled, nstall[idx] + 1, 0)
        x[idx], f[idx], g[idx], H[idx] = xn, fn, gn, Ha
        niter[idx] += 1
        done = (np.max(np.abs(gn), axis=1) < gtol) | (nstall[idx] >= stall_iters)
        active[idx[done]] = False
    return {"x": x, "f": f, "g": g, "niter": niter, "unfinished": active, "n_evals": np.int64(n_evals)}


def _bfgs_chunk(problem: _Problem, z0: np.ndarray, rows: np.ndarray, opts: dict) -> dict[str, np.ndarray]:
    def fg(z: np.ndarray, r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return problem.fg(z, rows[r])

    return batched_bfgs(fg, z0, **opts)


def resolve_n_jobs(n_jobs: int | None) -> int:
    """-1 / None -> the CPUs this process may use; otherwise at least 1."""
    if n_jobs is None or n_jobs < 0:
        try:
            return max(1, len(os.sched_getaffinity(0)))
        except AttributeError:  # pragma: no cover - non-Linux
            return max(1, os.cpu_count() or 1)
    return max(1, int(n_jobs))


def run_batched(
    problem: _Problem, z0: np.ndarray, *, n_jobs: int = 1, rows: np.ndarray | None = None, **opts: Any
) -> dict[str, np.ndarray]:
    """Batched BFGS over all rows of ``z0``, split across ``n_jobs`` processes when that pays off."""
    rows = np.arange(len(z0)) if rows is None else np.asarray(rows)
    n_jobs = min(resolve_n_jobs(n_jobs), len(z0))
    if n_jobs <= 1 or len(z0) < 64:
        return _bfgs_chunk(problem, z0, rows, opts)
    parts = np.array_split(np.arange(len(z0)), n_jobs)
    with ProcessPoolExecutor(max_workers=n_jobs) as pool:
        futs = [pool.submit(_bfgs_chunk, problem, z0[p], rows[p], opts) for p in parts]
        outs = [fu.result() for fu in futs]
    merged = {k: np.concatenate([o[k] for o in outs]) for k in ("x", "f", "g", "niter", "unfinished")}
    merged["n_evals"] = np.int64(sum(int(o["n_evals"]) for o in outs))
    return merged


# ====================================================================================== polishing and diagnostics


def _polish(problem: _Problem, z0: np.ndarray) -> tuple[np.ndarray, float, Any]:
    """Single-start scipy BFGS on the summed objective (never averaged), stopped on the gradient norm.

    BFGS (as Epoch used) rather than L-BFGS-B: L-BFGS-B's relative-reduction test (factr) stops on this objective's
    tiny values, and its per-iteration overhead dominated on small problems. "Precision loss" endings are expected
    at gtol=1e-12; the Newton refinement that follows drives the gradient the rest of the way.
    """

    def fun(z: np.ndarray) -> tuple[float, np.ndarray]:
        f, g = problem.fg(z[None, :])
        return float(f[0]), g[0]

    with _warnings.catch_warnings():
        _warnings.simplefilter("ignore")
        res = optimize.minimize(fun, z0, jac=True, method="BFGS", options={"gtol": 1e-12, "maxiter": 5000})
    z = np.asarray(res.x, dtype=float)
    f = float(res.fun)
    f0 = float(problem.f(z0[None, :])[0])
    if not f <= f0:  # never accept a worse point than the start
        z, f = z0.copy(), f0
    with np.errstate(all="ignore"):
        z, f = _newton_refine(problem, z, f)
    return z, f, res


def _newton_refine(
    problem: _Problem, z: np.ndarray, f: float, max_steps: int = 8
) -> tuple[np.ndarray, float]:
    """A few safeguarded Newton steps (numerical Hessian of the analytic gradient) to drive the gradient to ~0.

    Quasi-Newton methods stop once the objective no longer changes in double precision; near a smooth optimum
    Newton steps still shrink the gradient by orders of magnitude. A step is kept only if the objective does not
    increase beyond rounding and the gradient norm drops.
    """
    _, g = problem.fg(z[None, :])
    gn = float(np.linalg.norm(g[0]))
    # rounding floor of a sum of n terms: changes of f below it are noise, not ascent
    f_noise = max(len(problem.log_y), 16) * np.finfo(float).eps * abs(f)
    for _ in range(max_steps):
        if gn == 0.0:
            break
        H = numerical_hessian(problem, z)
        try:
            step = np.linalg.solve(H, g[0])
        except np.linalg.LinAlgError:
            break
        if not np.all(np.isfinite(step)):
            break
        improved = False
        t = 1.0
        for _ls in range(8):
            zn = z - t * step
            fn, gnew = problem.fg(zn[None, :])
            gnn = float(np.linalg.norm(gnew[0]))
            if np.isfinite(fn[0]) and fn[0] <= f + f_noise and gnn < gn:
                z, f, g, gn = zn, float(fn[0]), gnew, gnn
                improved = True
                break
            t *= 0.5
        if not improved:
            break
    return z, f


def numerical_hessian(problem: _Problem, z: np.ndarray) -> np.ndarray:
    """Central differences of the analytic gradient, symmetrised.

    The Huber objective's curvature jumps where a residual crosses ±δ, so a step that straddles such a kink gives
    a meaningless (strongly asymmetric) matrix. Steps of 1e-6, 1e-7 and 1e-8 (relative) are tried in one batched
    evaluation and the most symmetric result is kept.
    """
    k = z.size
    rels = (1e-6, 1e-7, 1e-8)
    pts = np.repeat(z[None, :], 2 * k * len(rels), axis=0)
    hs = []
    for m, rel in enumerate(rels):
        h = rel * np.maximum(1.0, np.abs(z))
        hs.append(h)
        o = 2 * k * m
        pts[o + np.arange(k), np.arange(k)] += h
        pts[o + k + np.arange(k), np.arange(k)] -= h
    _, g = problem.fg(pts)
    best, best_asym = None, np.inf
    for m, h in enumerate(hs):
        o = 2 * k * m
        H = (g[o : o + k] - g[o + k : o + 2 * k]) / (2.0 * h[:, None])
        scale = max(float(np.max(np.abs(H))), 1e-300)
        asym = float(np.max(np.abs(H - H.T))) / scale
        if asym < best_asym:
            best, best_asym = H, asym
    assert best is not None
    return 0.5 * (best + best.T)


def sandwich_covariance(problem: _Problem, z: np.ndarray, H: np.ndarray) -> np.ndarray | None:
    """M-estimator covariance H⁻¹ (Σ ψ² J Jᵀ) H⁻¹ of the free theta (None if H is singular)."""
    r, J = problem.point_jacobian(z)
    psi = huber_grad(r, problem.delta)
    if problem.weights is not None and problem.weights.ndim == 1:
        psi = psi * problem.weights
    M = (J * psi[:, None] ** 2).T @ J
    if not (np.all(np.isfinite(H)) and np.all(np.isfinite(M))):
        return None
    lam, V = np.linalg.eigh(H)
    lam_max = float(np.max(np.abs(lam))) if lam.size else 0.0
    if lam_max == 0.0:
        return None
    null = lam <= 1e-12 * lam_max  # flat (or negative-curvature) directions: the variance there is unbounded
    inv = np.where(null, 0.0, 1.0 / np.where(null, 1.0, lam))
    Hinv = (V * inv) @ V.T
    cov = Hinv @ M @ Hinv
    if null.any():
        # parameters with a real component along a flat direction have no finite local SE
        touched = np.any(np.abs(V[:, null]) > 0.1, axis=1)
        cov[touched, :] = np.nan
        cov[:, touched] = np.nan
    return cov


def _distinct_endpoints(zs: np.ndarray, fs: np.ndarray, max_n: int, rtol: float = 1e-6) -> list[int]:
    """Indices of up to ``max_n`` best end points that differ in objective level or location."""
    order = np.argsort(fs, kind="stable")
    chosen: list[int] = []
    for i in order:
        if not np.isfinite(fs[i]):
            break
        dup = False
        for j in chosen:
            same_f = abs(fs[i] - fs[j]) <= rtol * max(abs(fs[j]), 1e-300) + 1e-300
            same_x = np.max(np.abs(zs[i] - zs[j])) <= 1e-3 * (1.0 + np.max(np.abs(zs[j])))
            if same_f and same_x:
                dup = True
                break
        if not dup:
            chosen.append(int(i))
            if len(chosen) >= max_n:
                break
    return chosen


# ====================================================================================== results


def _json_safe(value: Any) -> Any:
    """Plain JSON types (numpy scalars -> Python, non-finite floats -> None, tuples -> lists)."""
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return [_json_safe(v) for v in value.tolist()]
    if isinstance(value, np.bool_ | bool):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        v = float(value)
        return v if math.isfinite(v) else None
    if isinstance(value, pd.DataFrame):
        return [_json_safe(r) for r in value.to_dict(orient="records")]
    if value is None or isinstance(value, str | int):
        return value
    return str(value)


@dataclass
class FitResult:
    """A fitted law: natural parameters at full precision plus everything needed to judge the fit.

    Beyond the contract fields: ``theta`` (the optimised parametrisation, log of positive scales),
    ``std_errors_approx`` (local sandwich SEs, a screen for weak identification, not a substitute for the
    bootstrap), ``metrics`` (in-sample R² on loss as in datablations, R² on log loss, RMSE, MAPE, max ARE),
    ``diagnostics`` (``flags`` — stable codes behind ``warnings`` —, start grid, distinct optima with the share of
    starts ending at each, Hessian eigenvalues, timings) and ``law_obj`` (the Law used, bound to condition levels).
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

    def predict(self, X: pd.DataFrame | Mapping[str, Any]) -> np.ndarray:
        """Predicted loss for the rows of ``X`` (DataFrame columns as in ``variables``, or law variable names)."""
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
        out = {
            "law": self.law,
            "formula": self.formula,
            "params": self.params,
            "theta": self.theta,
            "std_errors_approx": self.std_errors_approx,
            "objective": self.objective,
            "n_points": self.n_points,
            "huber_delta": self.huber_delta,
            "n_starts": self.n_starts,
            "frac_starts_at_optimum": self.frac_starts_at_optimum,
            "grad_norm": self.grad_norm,
            "converged": self.converged,
            "warnings": list(self.warnings),
            "fixed": self.fixed,
            "variables": self.variables,
            "loss_column": self.loss_column,
            "preprocessing": self.preprocessing,
            "metrics": self.metrics,
            "diagnostics": self.diagnostics,
        }
        if self.law_obj is not None and self.law_obj.levels:
            out["levels"] = list(self.law_obj.levels)
        return _json_safe(out)


# ====================================================================================== fit_law


def _starts_array(
    law: Law,
    starts: str | np.ndarray | int | pd.DataFrame | Mapping[str, Sequence[float]],
    X: Mapping[str, np.ndarray],
    y: np.ndarray,
    theta_fixed: dict[str, float],
    free: np.ndarray,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Starting points in free-theta space and a description of where they came from."""
    names = law.theta_names
    free_params = [law.params[i] for i in free]
    info: dict[str, Any] = {}
    if isinstance(starts, str):
        if starts not in ("grid", "hoffmann"):
            raise ValueError(f"starts={starts!r}: must be 'grid', an int, an array or a DataFrame of starts")
        full = law.default_starts(X, y, theta_fixed)
        info["kind"] = "grid" if law.name != "chinchilla" else "grid (Hoffmann et al. 2022, 4,500 points)"
        z = full[:, free]
    elif isinstance(starts, int | np.integer) and not isinstance(starts, bool):
        if starts < 1:
            raise ValueError(f"starts={starts}: must be >= 1")
        grid = law.default_starts(X, y, theta_fixed)[:, free]
        lo, hi = grid.min(axis=0), grid.max(axis=0)
        rng = np.random.default_rng(0)
        z = lo + (hi - lo) * rng.random((int(starts), len(free)))
        info["kind"] = f"{int(starts)} uniform random starts (seed 0) in the default grid's box"
    else:
        if isinstance(starts, pd.DataFrame):
            missing = [p for p in free_params if p not in starts.columns]
            if missing:
                raise ValueError(f"starts DataFrame lacks columns {missing}")
            nat = starts[free_params].to_numpy(dtype=float)
        elif isinstance(starts, Mapping):
            missing = [p for p in free_params if p not in starts]
            if missing:
                raise ValueError(
                    f"starts mapping lacks {missing} (give a sequence of values per free parameter)"
                )
            nat = np.array(
                list(itertools.product(*[np.atleast_1d(starts[p]) for p in free_params])), dtype=float
            )
        else:
            nat = np.atleast_2d(np.asarray(starts, dtype=float))
            if nat.shape[1] == law.n_params and len(free) != law.n_params:
                nat = nat[:, free]
            if nat.shape[1] != len(free):
                raise ValueError(
                    f"starts has {nat.shape[1]} columns; expected the free parameters {free_params} (natural scale)"
                )
        is_log = law.is_log[free]
        with np.errstate(divide="ignore", invalid="ignore"):
            z = np.where(is_log, np.log(np.where(is_log & (nat <= 0), 1e-3, nat)), nat)
        if np.any(is_log & (nat <= 0)):
            info["note"] = "non-positive starts of log-scale parameters were moved to 1e-3"
        info["kind"] = "user-provided"
    z = np.unique(z, axis=0) if len(z) > 1 else z
    info["grid_min"] = {names[i]: float(v) for i, v in zip(free, z.min(axis=0), strict=True)}
    info["grid_max"] = {names[i]: float(v) for i, v in zip(free, z.max(axis=0), strict=True)}
    return z, info


def fit_law(
    law: str | Law,
    df: pd.DataFrame,
    *,
    loss: str = "loss",
    variables: Mapping[str, str] | None = None,
    huber_delta: float = 1e-3,
    starts: str | np.ndarray | int | pd.DataFrame | Mapping[str, Sequence[float]] = "grid",
    fixed: Mapping[str, float] | None = None,
    preprocessing: Mapping | None = None,
    n_jobs: int = 1,
) -> FitResult:
    """Fit ``law`` to the rows of ``df`` by multi-start minimisation of the summed Huber loss on log loss.

    ``variables`` maps law variables to columns (e.g. ``{"N": "N_non_embedding"}``); ``fixed`` freezes natural
    parameters (the datablations two-stage fit); ``starts`` is ``"grid"`` (the law's default grid: Hoffmann's
    4,500 points for Chinchilla), an int (random starts in the grid's box), or natural-scale starts for the free
    parameters (array, DataFrame or ``{param: values}`` product grid). ``preprocessing`` (default:
    ``df.attrs["preprocessing"]``) is stored verbatim so every exclusion rule travels with the fit.
    """
    t_start = time.perf_counter()
    base_law = get_law(law)
    if huber_delta <= 0:
        raise ValueError(f"huber_delta={huber_delta}: must be > 0")
    mapping = _resolve_variables(base_law, df, variables)
    raw = _raw_columns(base_law, df, mapping)
    law = base_law.bind(raw)
    X = _encode_checked(law, raw)
    y = _loss_array(df, loss)
    n = len(y)

    fixed = {str(k): float(v) for k, v in (fixed or {}).items()}
    unknown = sorted(set(fixed) - set(law.params))
    if unknown:
        raise ValueError(
            f"fixed={fixed}: unknown parameters {unknown}; law {law.name!r} has {list(law.params)}"
        )
    theta_fixed_full = np.zeros(law.n_params)
    theta_fixed_named: dict[str, float] = {}
    for i, p in enumerate(law.params):
        if p in fixed:
            v = fixed[p]
            if p in law.log_params and v <= 0:
                raise ValueError(f"fixed {p}={v}: must be > 0")
            theta_fixed_full[i] = math.log(v) if p in law.log_params else v
            theta_fixed_named[law.theta_names[i]] = theta_fixed_full[i]
    free = np.array([i for i, p in enumerate(law.params) if p not in fixed], dtype=np.intp)
    if free.size == 0:
        raise ValueError("all parameters are fixed: nothing to fit (use objective() to evaluate)")

    problem = _Problem(law, X, np.log(y), float(huber_delta), free, theta_fixed_full)
    z0, start_info = _starts_array(law, starts, X, y, theta_fixed_named, free)

    # ---- batched phase: every start to its own end point
    t0 = time.perf_counter()
    out = run_batched(problem, z0, n_jobs=n_jobs)
    t_batched = time.perf_counter() - t0
    zs, fs = out["x"], out["f"]
    if not np.any(np.isfinite(fs)):
        raise RuntimeError(f"law {law.name!r}: the objective is not finite at any start")

    # ---- polish the best distinct end points one by one at tight tolerances
    t0 = time.perf_counter()
    cand = _distinct_endpoints(zs, fs, max_n=6)
    polished = []
    for i in cand[:3]:
        zp, fp, res = _polish(problem, zs[i])
        polished.append((fp, zp, res, i))
    polished.sort(key=lambda t: t[0])
    f_best, z_best, res_best, i_best = polished[0]
    t_polish = time.perf_counter() - t0

    _, g_best = problem.fg(z_best[None, :])
    grad_norm = float(np.linalg.norm(g_best[0]))
    tol = _optimum_tol(f_best, n, huber_delta)
    at_opt = fs <= f_best + tol
    at_opt[i_best] = True  # the start the optimum was polished from reached it, even if it had stalled short
    frac = float(np.mean(at_opt))

    theta_full = problem.full(z_best)[0]
    params = law.from_theta(theta_full)
    for p, v in fixed.items():  # exact user values, not exp(log(v))
        params[p] = v

    # ---- diagnostics
    H = numerical_hessian(problem, z_best)
    eig = np.linalg.eigvalsh(H) if np.all(np.isfinite(H)) else np.full(len(free), np.nan)
    # Local standard errors: the sandwich formula is unstable for a near-L1 loss (δ far below the residual scale:
    # the curvature then rests on the few points with |r| < δ), so it is evaluated with δ widened to twice the
    # robust residual scale. On Epoch's data and on synthetic fits this tracks bootstrap SEs to within ~1.5x;
    # it is a cheap screen for weak identification, the bootstrap gives the reported intervals.
    resid, _ = problem.point_jacobian(z_best)
    sigma = 1.4826 * float(np.median(np.abs(resid - np.median(resid))))
    delta_se = max(float(huber_delta), 2.0 * sigma)
    problem_se = _Problem(law, X, problem.log_y, delta_se, free, theta_fixed_full)
    cov = sandwich_covariance(problem_se, z_best, numerical_hessian(problem_se, z_best))
    free_names = [law.params[i] for i in free]
    free_theta_names = [law.theta_names[i] for i in free]
    se_theta: dict[str, float] = {}
    se_nat: dict[str, float] = {}
    if cov is not None:
        with np.errstate(invalid="ignore"):
            d = np.sqrt(np.clip(np.diag(cov), 0.0, None))
        d = np.where(np.isnan(np.diag(cov)), np.inf, d)
        for j, i in enumerate(free):
            se_theta[free_theta_names[j]] = float(d[j])
            p = law.params[i]
            # delta method: SE(p) = p·SE(log p) for log-scale parameters
            se_nat[p] = float(params[p] * d[j]) if p in law.log_params else float(d[j])

    near = np.isfinite(fs) & (fs <= f_best * (1.0 + FLAT_RTOL) + tol)
    spread = {}
    if near.sum() > 1:
        for j, nm in enumerate(free_names):
            vals = zs[near, j]
            spread[nm] = (float(vals.min()), float(vals.max()))

    flagged = _warnings_for(
        law=law,
        params=params,
        theta=theta_full,
        free=free,
        y=y,
        X=X,
        n=n,
        frac=frac,
        n_starts=len(z0),
        n_at_opt=int(at_opt.sum()),
        start_info=start_info,
        se_theta=se_theta,
        spread=spread,
        near_count=int(near.sum()),
        hessian_eig=eig,
    )
    converged = bool(np.isfinite(f_best) and grad_norm <= _grad_tol(n, huber_delta) and frac > 0)
    if not converged:
        flagged.append(
            (
                "not_converged",
                f"not converged: gradient norm {grad_norm:.2e} at the best point (tolerance "
                f"{_grad_tol(n, huber_delta):.1e}); optimiser said: {getattr(res_best, 'message', '')}",
            )
        )
    warn = [m for _, m in flagged]
    flags = sorted({f for f, _ in flagged})

    # distinct end points for the report (local optima, plateaus): objective, share of starts ending there, params
    optima: list[dict[str, Any]] = []
    seen: list[tuple[float, np.ndarray]] = []
    entries = [(fp, zp, True) for fp, zp, _res, _i in polished] + [
        (float(fs[i]), zs[i], False) for i in cand[3:]
    ]
    for fp, zp, was_polished in sorted(entries, key=lambda e: e[0]):
        if any(
            abs(fp - f0) <= _optimum_tol(f0, n, huber_delta)
            and np.max(np.abs(zp - z0)) <= 1e-3 * (1 + np.max(np.abs(z0)))
            for f0, z0 in seen
        ):
            continue
        seen.append((fp, zp))
        share = float(np.mean(np.abs(fs - fp) <= _optimum_tol(fp, n, huber_delta)))
        optima.append(
            {
                "objective": fp,
                "frac_starts": share,
                "polished": was_polished,
                "params": law.from_theta(problem.full(zp)[0]),
            }
        )
    finite = fs[np.isfinite(fs)]
    pre = preprocessing if preprocessing is not None else df.attrs.get("preprocessing", {})
    diagnostics = {
        "flags": flags,
        "starts": start_info,
        "n_starts_nonfinite": int(np.sum(~np.isfinite(fs))),
        "n_starts_unfinished": int(np.sum(out["unfinished"])),
        "iterations_median": float(np.median(out["niter"])),
        "iterations_max": int(np.max(out["niter"])),
        "batched_evaluations": int(out["n_evals"]),
        "end_objective_quantiles": {
            q: float(np.quantile(finite, float(q))) for q in ("0", "0.1", "0.25", "0.5", "0.75", "1")
        },
        "optima": optima,
        "near_optimal_spread": spread,
        "hessian_eigenvalues": [float(v) for v in eig],
        "hessian_condition": float(abs(eig).max() / max(abs(eig).min(), 1e-300))
        if np.all(np.isfinite(eig))
        else None,
        "std_errors_theta": se_theta,
        "std_errors_delta": delta_se,
        "polish": {
            "success": bool(getattr(res_best, "success", False)),
            "message": str(getattr(res_best, "message", "")),
            "nit": int(getattr(res_best, "nit", 0)),
        },
        "timing_s": {"batched": t_batched, "polish": t_polish, "total": time.perf_counter() - t_start},
    }
    if law.levels:
        diagnostics["reference_level"] = law.levels[0]
    pred = np.exp(problem.law.log_predict(theta_full[None, :], X)[0][0])
    return FitResult(
        law=law.name,
        params=params,
        objective=float(f_best),
        n_points=n,
        huber_delta=float(huber_delta),
        n_starts=len(z0),
        frac_starts_at_optimum=frac,
        grad_norm=grad_norm,
        converged=converged,
        warnings=warn,
        fixed=fixed,
        variables=dict(mapping),
        preprocessing=dict(pre) if isinstance(pre, Mapping) else {"steps": pre},
        formula=law.formula,
        loss_column=loss,
        theta={law.theta_names[i]: float(theta_full[i]) for i in range(law.n_params)},
        std_errors_approx=se_nat,
        metrics=_metrics(y, pred),
        diagnostics=diagnostics,
        law_obj=law,
    )


def _optimum_tol(f_best: float, n: int, delta: float) -> float:
    """Objective distance counted as 'the same optimum': 1e-6 relative, plus 1e-10·n·δ² for (near) exact fits."""
    return OPTIMUM_RTOL * abs(f_best) + 1e-10 * n * delta * delta


def _grad_tol(n: int, delta: float) -> float:
    """Gradient-norm tolerance for 'converged': 1e-6 of the largest possible per-point gradient sum (n·δ)."""
    return 1e-6 * max(n * delta, 1e-12)


def _warnings_for(
    *,
    law: Law,
    params: dict[str, float],
    theta: np.ndarray,
    free: np.ndarray,
    y: np.ndarray,
    X: Mapping[str, np.ndarray],
    n: int,
    frac: float,
    n_starts: int,
    n_at_opt: int,
    start_info: dict,
    se_theta: dict[str, float],
    spread: dict[str, tuple[float, float]],
    near_count: int,
    hessian_eig: np.ndarray,
) -> list[tuple[str, str]]:
    """(flag, message) pairs: each message says what is wrong and what it means for interpreting the fit.

    Flags (stable codes for programs, e.g. law comparison): few_points, few_values, asymptote_collapse,
    exponent_boundary, diverged, outside_start_grid, weakly_identified, saddle, flat_objective, rugged.
    """
    out: list[tuple[str, str]] = []
    k = len(free)
    free_params = {law.params[i] for i in free}
    names = law.theta_names
    if n < 3 * k or n - k < 5:
        out.append(
            ("few_points", f"few points: {n} points for {k} free parameters; parameters and CIs are fragile")
        )
    for v in law.variables:
        if v in law.categorical:
            continue
        n_unique = len(np.unique(X[v]))
        if n_unique < 3:
            out.append(
                (
                    "few_values",
                    f"variable {v!r} takes only {n_unique} distinct values: its exponent is not identified",
                )
            )
    # irreducible loss collapsing to zero (the E-A-alpha trade-off)
    if law.asymptote and law.asymptote in free_params:
        e_val = params[law.asymptote]
        if e_val < 1e-3 * float(np.min(y)):
            out.append(
                (
                    "asymptote_collapse",
                    f"{law.asymptote} collapsed to {e_val:.3g} (< 1e-3 × min loss): degenerate fit, the irreducible loss "
                    "is not identified by these data (E–A–α trade-off); do not interpret E or the exponents",
                )
            )
    for p in law.exponents:
        if p not in free_params:
            continue
        v = params[p]
        if v <= 1e-3:
            out.append(
                (
                    "exponent_boundary",
                    f"exponent {p}={v:.3g} is at or below 0: its term is flat (boundary solution)",
                )
            )
        elif v > 5:
            out.append(
                ("exponent_boundary", f"exponent {p}={v:.3g} is implausibly large (boundary solution)")
            )
    for i in free:
        p = law.params[i]
        if p in law.log_params and abs(theta[i]) > 100 and p != law.asymptote:
            out.append(("diverged", f"{p}={params[p]:.3g} diverged (|log {p}| > 100): boundary solution"))
    # outside the start grid (Hoffmann: the optimum should not be on the boundary of the initialisation sweep)
    gmin, gmax = start_info.get("grid_min", {}), start_info.get("grid_max", {})
    if start_info.get("kind", "").startswith("grid"):
        # Data-adaptive grids derive coefficient starts by least squares from (E, exponent) pairs, so only the
        # coordinates such a grid really spans are checked; Hoffmann's fixed grid spans all of them.
        spanned = [
            i
            for i in free
            if law.name == "chinchilla"
            or not (law.params[i] in law.log_params and law.params[i] != law.asymptote)
        ]
        for i in spanned:
            nm = names[i]
            if nm in gmin and gmax[nm] > gmin[nm] and not gmin[nm] <= theta[i] <= gmax[nm]:
                out.append(
                    (
                        "outside_start_grid",
                        f"{nm}={theta[i]:.4g} lies outside the start grid [{gmin[nm]:.4g}, {gmax[nm]:.4g}] (boundary of "
                        "the initialisation sweep): widen the grid before trusting this optimum",
                    )
                )
    # weak identification from the local curvature (sandwich SE on the optimisation scale)
    weak = []
    for i in free:
        se = se_theta.get(names[i])
        if se is None:
            continue
        p = law.params[i]
        rel = se if p in law.log_params else se / max(abs(theta[i]), 1e-12)
        if not np.isfinite(rel) or rel > 0.5:
            weak.append(
                f"{p} (≈{rel:.0%} relative SE)" if np.isfinite(rel) else f"{p} (SE undefined: flat direction)"
            )
    if weak:
        out.append(
            (
                "weakly_identified",
                "weakly identified (local curvature): "
                + ", ".join(weak)
                + "; report predictions or derived quantities "
                "with bootstrap CIs rather than these parameters",
            )
        )
    if (
        hessian_eig.size
        and np.all(np.isfinite(hessian_eig))
        and hessian_eig.min() < -1e-8 * np.abs(hessian_eig).max()
    ):
        out.append(
            (
                "saddle",
                "the Hessian at the optimum has a negative eigenvalue: this may be a saddle or a kink of the Huber "
                "objective rather than a minimum; check the optimum with more starts",
            )
        )
    # flatness seen across starts: near-optimal end points far apart
    flat = []
    for i in free:
        p = law.params[i]
        if p not in spread:
            continue
        lo, hi = spread[p]
        if p in law.log_params:
            if hi - lo > math.log(1.5):
                flat.append(f"{p} ∈ [{math.exp(lo):.4g}, {math.exp(hi):.4g}]")
        elif hi - lo > 0.1 * max(abs(theta[i]), 0.05):
            flat.append(f"{p} ∈ [{lo:.4g}, {hi:.4g}]")
    if flat:
        out.append(
            (
                "flat_objective",
                f"flat objective: {near_count} start end points within {FLAT_RTOL:.0%} of the optimal objective span "
                + ", ".join(flat)
                + "; these parameters are weakly identified (predictions may still be robust)",
            )
        )
    if n_at_opt <= 1 and n_starts > 1:
        out.append(
            (
                "rugged",
                f"only {n_at_opt} of {n_starts} starts reached the optimum ({frac:.1%}): the landscape is rugged; "
                "add starts before trusting the optimum",
            )
        )
    return out


# ====================================================================================== re-exports

_LAZY = {
    "BootstrapResult": "bootstrap",
    "bootstrap": "bootstrap",
    "derived_quantities": "bootstrap",
    "HoldoutResult": "compare",
    "holdout_extrapolation": "compare",
    "ComparisonResult": "compare",
    "compare_laws": "compare",
}


def __getattr__(name: str) -> Any:
    """Lazy re-exports (PEP 562) so that fit.py stays the single entry point without circular imports."""
    if name in _LAZY:
        import importlib

        module = importlib.import_module(f".{_LAZY[name]}", __package__)
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
