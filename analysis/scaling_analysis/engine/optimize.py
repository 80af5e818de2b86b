"""Optimisers for ``FitProblem``: a batched BFGS over many starts, then scipy BFGS polish and Newton
refinement.

Why this shape (Besiroglu et al. 2024, *Chinchilla scaling: a replication attempt*; Li et al. 2025,
*(Mis)Fitting: a survey of scaling laws*): the landscape has many stalled points and local minima (only about
a third to a half of Hoffmann's 4,500 starts reach the optimum on Epoch's data), so every fit is multi-start.
All starts are optimised *together*: a batched BFGS in numpy evaluates the objective and gradient for every
still-running start in one vectorised call, with a per-start weak-Wolfe line search, until each start has
converged or stalled. The best distinct end points are then polished one by one with scipy BFGS (gtol=1e-12)
and safeguarded Newton steps, which drive the gradient norm to ~1e-12.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import optimize

from .loss import FitProblem

BatchFG = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


@dataclass
class _LineSearch:
    """Settings of the per-start weak-Wolfe line search."""

    c1: float
    c2: float
    max_steps: int


def _directions(ga: np.ndarray, Ha: np.ndarray, eye: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Quasi-Newton directions; rows whose direction is not a descent direction restart from −g (H reset)."""
    d = -np.einsum("sij,sj->si", Ha, ga)
    gd = np.einsum("si,si->s", ga, d)
    bad = ~(gd < 0) | ~np.isfinite(gd)
    if bad.any():
        Ha[bad] = eye
        d[bad] = -ga[bad]
        gd[bad] = -np.einsum("si,si->s", ga[bad], ga[bad])
    return d, gd, bad


def _line_search(
    fg: BatchFG,
    rows: np.ndarray,
    start: tuple[np.ndarray, np.ndarray, np.ndarray],
    d: np.ndarray,
    gd: np.ndarray,
    fresh: np.ndarray,
    ls: _LineSearch,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """Weak-Wolfe search per row: expand while the curvature condition fails, bisect while Armijo fails.

    Returns the accepted points (x, f, g), the accepted step (0: no move) and the number of batch evaluations.
    """
    xa, fa, ga = start
    t = np.ones(rows.size)
    gnorm = np.sqrt(np.einsum("si,si->s", ga, ga))
    t[fresh] = np.minimum(1.0, 1.0 / np.maximum(gnorm[fresh], 1e-300))
    lo, hi = np.zeros(rows.size), np.full(rows.size, np.inf)
    searching = gd < 0
    xn, fn, gn = xa.copy(), fa.copy(), ga.copy()
    acc = np.zeros(rows.size)
    n_evals = 0
    for _ in range(ls.max_steps):
        si = np.nonzero(searching)[0]
        if si.size == 0:
            break
        ts = t[si]
        xt = xa[si] + ts[:, None] * d[si]
        ft, gt = fg(xt, rows[si])
        n_evals += 1
        armijo = np.isfinite(ft) & (ft <= fa[si] + ls.c1 * ts * gd[si])
        curv = np.einsum("si,si->s", gt, d[si]) >= ls.c2 * gd[si]
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
    return xn, fn, gn, acc, n_evals


def _bfgs_update(
    Ha: np.ndarray, s: np.ndarray, y: np.ndarray, moved: np.ndarray, fresh: np.ndarray, eye: np.ndarray
) -> np.ndarray:
    """Inverse-Hessian BFGS update of the rows that moved (Shanno-Phua scaling on fresh rows); which were
    updated."""
    sy = np.einsum("si,si->s", s, y)
    upd = moved & (sy > 1e-300)
    if upd.any():
        su, yu, syu, Hu = s[upd], y[upd], sy[upd], Ha[upd]
        fu = fresh[upd]
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
    return upd


def batched_bfgs(
    fg: BatchFG,
    x0: np.ndarray,
    *,
    maxiter: int = 2000,
    gtol: float = 1e-12,
    ftol: float = 1e-15,
    stall_iters: int = 3,
    c1: float = 1e-4,
    c2: float = 0.9,
    max_linesearch: int = 40,
) -> dict[str, Any]:
    """Minimise many independent starts at once: BFGS with a per-start weak-Wolfe line search, all vectorised.

    ``fg(x[m, k], rows[m]) -> (f[m], g[m, k])`` evaluates the still-running rows (``rows`` index the batch,
    e.g. to pick per-row bootstrap weights). A start stops when its gradient max-norm is below ``gtol``, when
    the decrease its quasi-Newton model predicts (gᵀHg ≈ 2(f − f*)) is below ``ftol``·|f|, when it made no
    relative progress (< ``ftol``) for ``stall_iters`` consecutive iterations (with a Hessian reset in
    between), or at
    ``maxiter`` (reported as ``unfinished``). Rows are independent: results do not depend on how starts are
    batched or split across processes.
    """
    x = np.array(x0, dtype=float, copy=True)
    S, P = x.shape
    f, g = fg(x, np.arange(S))
    eye = np.eye(P)
    H = np.broadcast_to(eye, (S, P, P)).copy()
    state = {
        "fresh": np.ones(S, dtype=bool),  # H is the identity (first iteration or after a reset)
        "active": np.isfinite(f),
        "niter": np.zeros(S, dtype=np.int64),
        "nstall": np.zeros(S, dtype=np.int64),
    }
    ls = _LineSearch(c1, c2, max_linesearch)
    n_evals = 1
    for _ in range(maxiter):
        idx = np.nonzero(state["active"])[0]
        if idx.size == 0:
            break
        n_evals += _iterate(fg, idx, (x, f, g, H), state, eye, ls, (gtol, ftol, stall_iters))
    return {
        "x": x,
        "f": f,
        "g": g,
        "niter": state["niter"],
        "unfinished": state["active"],
        "n_evals": np.int64(n_evals),
    }


def _iterate(
    fg: BatchFG,
    idx: np.ndarray,
    arrays: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    state: dict[str, np.ndarray],
    eye: np.ndarray,
    ls: _LineSearch,
    stops: tuple[float, float, int],
) -> int:
    """One BFGS iteration of the active rows ``idx`` (arrays updated in place); returns batch evaluations."""
    x, f, g, H = arrays
    gtol, ftol, stall_iters = stops
    fresh, active = state["fresh"], state["active"]
    xa, fa, ga, Ha = x[idx], f[idx], g[idx], H[idx]
    d, gd, bad = _directions(ga, Ha, eye)
    fresh[idx[bad]] = True
    # predicted decrease g'Hg ≈ 2 (f - f*) of the BFGS model below the noise floor: converged, stop now
    negligible = (-gd <= ftol * np.maximum(np.abs(fa), 1e-300)) & ~bad
    if negligible.any():
        active[idx[negligible]] = False
        keep = ~negligible
        idx, xa, fa, ga, Ha, d, gd = idx[keep], xa[keep], fa[keep], ga[keep], Ha[keep], d[keep], gd[keep]
        if idx.size == 0:
            return 0
    xn, fn, gn, acc, n_evals = _line_search(fg, idx, (xa, fa, ga), d, gd, fresh[idx], ls)
    moved = acc > 0
    upd = _bfgs_update(Ha, xn - xa, gn - ga, moved, fresh[idx], eye)
    fresh[idx[upd]] = False
    if (~moved).any():
        Ha[~moved] = eye
        fresh[idx[~moved]] = True
    stalled = ~moved | (fa - fn <= ftol * np.maximum(np.abs(fa), 1e-300))
    state["nstall"][idx] = np.where(stalled, state["nstall"][idx] + 1, 0)
    x[idx], f[idx], g[idx], H[idx] = xn, fn, gn, Ha
    state["niter"][idx] += 1
    done = (np.max(np.abs(gn), axis=1) < gtol) | (state["nstall"][idx] >= stall_iters)
    active[idx[done]] = False
    return n_evals


def _bfgs_chunk(problem: FitProblem, z0: np.ndarray, rows: np.ndarray, opts: dict) -> dict[str, Any]:
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
    problem: FitProblem, z0: np.ndarray, *, n_jobs: int = 1, rows: np.ndarray | None = None, **opts: Any
) -> dict[str, Any]:
    """Batched BFGS over all rows of ``z0``, split across ``n_jobs`` processes when that pays off."""
    rows = np.arange(len(z0)) if rows is None else np.asarray(rows)
    n_jobs = min(resolve_n_jobs(n_jobs), len(z0))
    if n_jobs <= 1 or len(z0) < 64:
        return _bfgs_chunk(problem, z0, rows, opts)
    parts = np.array_split(np.arange(len(z0)), n_jobs)
    with ProcessPoolExecutor(max_workers=n_jobs) as pool:
        futs = [pool.submit(_bfgs_chunk, problem, z0[p], rows[p], opts) for p in parts]
        outs = [fu.result() for fu in futs]
    merged: dict[str, Any] = {
        k: np.concatenate([o[k] for o in outs]) for k in ("x", "f", "g", "niter", "unfinished")
    }
    merged["n_evals"] = np.int64(sum(int(o["n_evals"]) for o in outs))
    return merged


def polish(problem: FitProblem, z0: np.ndarray) -> tuple[np.ndarray, float, Any]:
    """Single-start scipy BFGS on the summed objective (never averaged), then Newton refinement.

    BFGS (as Epoch used) rather than L-BFGS-B: L-BFGS-B's relative-reduction test (factr) stops on this
    objective's tiny values. "Precision loss" endings are expected at gtol=1e-12; the Newton refinement that
    follows drives the gradient the rest of the way. Never returns a worse point than ``z0``.
    """

    def fun(z: np.ndarray) -> tuple[float, np.ndarray]:
        f, g = problem.fg(z[None, :])
        return float(f[0]), g[0]

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = optimize.minimize(fun, z0, jac=True, method="BFGS", options={"gtol": 1e-12, "maxiter": 5000})
    z = np.asarray(res.x, dtype=float)
    f = float(res.fun)
    f0 = float(problem.f(z0[None, :])[0])
    if not f <= f0:
        z, f = z0.copy(), f0
    with np.errstate(all="ignore"):
        z, f = newton_refine(problem, z, f)
    return z, f, res


def newton_refine(
    problem: FitProblem, z: np.ndarray, f: float, max_steps: int = 8
) -> tuple[np.ndarray, float]:
    """A few safeguarded Newton steps (numerical Hessian of the analytic gradient) to drive the gradient to
    ~0.

    Quasi-Newton methods stop once the objective no longer changes in double precision; near a smooth optimum
    Newton steps still shrink the gradient by orders of magnitude. A step is kept only if the objective does
    not increase beyond rounding and the gradient norm drops.
    """
    _, g = problem.fg(z[None, :])
    gn = float(np.linalg.norm(g[0]))
    # rounding floor of a sum of n terms: changes of f below it are noise, not ascent
    f_noise = max(len(problem.log_y), 16) * np.finfo(float).eps * abs(f)
    for _ in range(max_steps):
        if gn == 0.0:
            break
        try:
            step = np.linalg.solve(numerical_hessian(problem, z), g[0])
        except np.linalg.LinAlgError:
            break
        if not np.all(np.isfinite(step)):
            break
        found = _newton_step(problem, z, step, f + f_noise, gn)
        if found is None:
            break
        z, f, g, gn = found
    return z, f


def _newton_step(
    problem: FitProblem, z: np.ndarray, step: np.ndarray, f_max: float, gn: float
) -> tuple[np.ndarray, float, np.ndarray, float] | None:
    """Backtrack along a Newton step until f stays below ``f_max`` and the gradient norm drops (else None)."""
    t = 1.0
    for _ in range(8):
        zn = z - t * step
        fn, gnew = problem.fg(zn[None, :])
        gnn = float(np.linalg.norm(gnew[0]))
        if np.isfinite(fn[0]) and fn[0] <= f_max and gnn < gn:
            return zn, float(fn[0]), gnew, gnn
        t *= 0.5
    return None


def numerical_hessian(problem: FitProblem, z: np.ndarray) -> np.ndarray:
    """Central differences of the analytic gradient, symmetrised.

    The Huber objective's curvature jumps where a residual crosses ±δ, so a step that straddles such a kink
    gives a meaningless (strongly asymmetric) matrix. Steps of 1e-6, 1e-7 and 1e-8 (relative) are tried in one
    batched evaluation and the most symmetric result is kept.
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


def distinct_endpoints(zs: np.ndarray, fs: np.ndarray, max_n: int, rtol: float = 1e-6) -> list[int]:
    """Indices of up to ``max_n`` best end points that differ in objective level or location."""
    chosen: list[int] = []
    for i in np.argsort(fs, kind="stable"):
        if not np.isfinite(fs[i]):
            break
        if not any(_same_endpoint(zs[i], fs[i], zs[j], fs[j], rtol) for j in chosen):
            chosen.append(int(i))
            if len(chosen) >= max_n:
                break
    return chosen


def _same_endpoint(zi: np.ndarray, fi: float, zj: np.ndarray, fj: float, rtol: float) -> bool:
    same_f = abs(fi - fj) <= rtol * max(abs(fj), 1e-300) + 1e-300
    return bool(same_f and np.max(np.abs(zi - zj)) <= 1e-3 * (1.0 + np.max(np.abs(zj))))
