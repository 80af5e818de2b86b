"""What a fit's optimum can be trusted for: curvature, local standard errors, and plain-language warnings.

Why every fit carries these (Besiroglu et al. 2024, *Chinchilla scaling: a replication attempt*; Li et al.
2025, *(Mis)Fitting: a survey of scaling laws*): scaling-law parameters are often weakly identified and optima
often sit on boundaries (exponents near 0, the irreducible loss collapsing to 0, outside the start grid). A
number printed without saying so is a confident wrong number. Each warning is a ``(flag, message)`` pair: the
flag is a stable code for programs (law comparison sets degenerate fits aside), the message says what is wrong
and what it means for interpreting the fit.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .laws import Law
from .loss import FitProblem, huber_grad
from .optimize import numerical_hessian

#: Starts whose end objective is within this relative distance of the best count as "at the optimum"
#: (1e-6 relative is the 1e-9 absolute used for Epoch's 1.018e-3 optimum in the notes).
OPTIMUM_RTOL = 1e-6
#: End points within this relative objective distance of the best are "near-optimal" for the flatness check.
FLAT_RTOL = 1e-2
#: Fewer starts than this share reaching the optimum flags the landscape as rugged (Epoch's data: ~34%).
MIN_FRAC_AT_OPTIMUM = 0.05
#: An optimum within this share of the grid's span from its edge sits on the edge of the start grid.
GRID_EDGE_FRACTION = 0.01
#: Fewer starts than this share reaching the optimum flags the landscape as rugged (Epoch's data: ~34%).
MIN_FRAC_AT_OPTIMUM = 0.05
#: An optimum within this share of the grid's span from its edge sits on the edge of the start grid.
GRID_EDGE_FRACTION = 0.01

Warning = tuple[str, str]


def optimum_tol(f_best: float, n: int, delta: float) -> float:
    """Objective distance counted as 'the same optimum': 1e-6 relative, plus 1e-10·n·δ² for (near) exact
    fits."""
    return OPTIMUM_RTOL * abs(f_best) + 1e-10 * n * delta * delta


def grad_tol(n: int, delta: float) -> float:
    """Gradient-norm tolerance for 'converged': 1e-6 of the largest possible per-point gradient sum (n·δ)."""
    return 1e-6 * max(n * delta, 1e-12)


def sandwich_covariance(problem: FitProblem, z: np.ndarray, H: np.ndarray) -> np.ndarray | None:
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


@dataclass
class LocalErrors:
    """Sandwich standard errors on the optimisation scale (theta) and the natural scale, and the δ used."""

    theta: dict[str, float]
    natural: dict[str, float]
    delta: float


def local_standard_errors(
    problem: FitProblem, z_best: np.ndarray, params: Mapping[str, float]
) -> LocalErrors:
    """Local SEs, a cheap screen for weak identification (the bootstrap gives the reported intervals).

    The sandwich formula is unstable for a near-L1 loss (δ far below the residual scale: the curvature then
    rests on the few points with |r| < δ), so it is evaluated with δ widened to twice the robust residual
    scale. On Epoch's data and on synthetic fits this tracks bootstrap SEs to within ~1.5x.
    """
    law = problem.law
    resid, _ = problem.point_jacobian(z_best)
    sigma = 1.4826 * float(np.median(np.abs(resid - np.median(resid))))
    wide = problem.with_delta(max(float(problem.delta), 2.0 * sigma))
    cov = sandwich_covariance(wide, z_best, numerical_hessian(wide, z_best))
    out = LocalErrors({}, {}, wide.delta)
    if cov is None:
        return out
    with np.errstate(invalid="ignore"):
        d = np.sqrt(np.clip(np.diag(cov), 0.0, None))
    d = np.where(np.isnan(np.diag(cov)), np.inf, d)
    for j, i in enumerate(problem.free):
        out.theta[law.theta_names[i]] = float(d[j])
        p = law.params[i]
        # delta method: SE(p) = p·SE(log p) for log-scale parameters
        out.natural[p] = float(params[p] * d[j]) if p in law.log_params else float(d[j])
    return out


def near_optimal_spread(
    law: Law, free: np.ndarray, zs: np.ndarray, near: np.ndarray
) -> dict[str, tuple[float, float]]:
    """Range of each free parameter (theta scale) over the near-optimal end points (when more than one)."""
    if near.sum() <= 1:
        return {}
    names = [law.params[i] for i in free]
    return {nm: (float(zs[near, j].min()), float(zs[near, j].max())) for j, nm in enumerate(names)}


def hessian_summary(H: np.ndarray, k: int) -> tuple[np.ndarray, float | None]:
    """Eigenvalues of the Hessian (NaN if it is not finite) and its condition number."""
    eig = np.linalg.eigvalsh(H) if np.all(np.isfinite(H)) else np.full(k, np.nan)
    if not np.all(np.isfinite(eig)):
        return eig, None
    return eig, float(abs(eig).max() / max(abs(eig).min(), 1e-300))


# ====================================================================================== warnings


@dataclass
class FitEvidence:
    """Everything the warning checks look at, gathered once at the optimum."""

    law: Law
    params: dict[str, float]
    theta: np.ndarray  # full theta at the optimum
    free: np.ndarray
    y: np.ndarray
    X: Mapping[str, np.ndarray]
    frac: float
    n_starts: int
    n_at_opt: int
    start_info: dict
    se_theta: dict[str, float]
    spread: dict[str, tuple[float, float]]
    near_count: int
    hessian_eig: np.ndarray
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.y)

    @property
    def free_params(self) -> set[str]:
        return {self.law.params[i] for i in self.free}


def _few_points(ev: FitEvidence) -> list[Warning]:
    n, k = ev.n, len(ev.free)
    if n < 3 * k or n - k < 5:
        return [
            ("few_points", f"few points: {n} points for {k} free parameters; parameters and CIs are fragile")
        ]
    return []


def _few_values(ev: FitEvidence) -> list[Warning]:
    out = []
    for v in ev.law.variables:
        if v in ev.law.categorical:
            continue
        n_unique = len(np.unique(ev.X[v]))
        if n_unique < 3:
            msg = f"variable {v!r} takes only {n_unique} distinct values: its exponent is not identified"
            out.append(("few_values", msg))
    return out


def _asymptote_collapse(ev: FitEvidence) -> list[Warning]:
    """The irreducible loss collapsing to zero (the E–A–α trade-off)."""
    e_name = ev.law.asymptote
    if not e_name or e_name not in ev.free_params:
        return []
    e_val = ev.params[e_name]
    if e_val >= 1e-3 * float(np.min(ev.y)):
        return []
    return [
        (
            "asymptote_collapse",
            f"{e_name} collapsed to {e_val:.3g} (< 1e-3 × min loss): degenerate fit, the irreducible loss "
            "is not identified by these data (E–A–α trade-off); do not interpret E or the exponents",
        )
    ]


def _exponent_boundary(ev: FitEvidence) -> list[Warning]:
    out = []
    for p in ev.law.exponents:
        if p not in ev.free_params:
            continue
        v = ev.params[p]
        if v <= 1e-3:
            msg = f"exponent {p}={v:.3g} is at or below 0: its term is flat (boundary solution)"
            out.append(("exponent_boundary", msg))
        elif v > 5:
            out.append(
                ("exponent_boundary", f"exponent {p}={v:.3g} is implausibly large (boundary solution)")
            )
    return out


def _diverged(ev: FitEvidence) -> list[Warning]:
    out = []
    for i in ev.free:
        p = ev.law.params[i]
        if p in ev.law.log_params and abs(ev.theta[i]) > 100 and p != ev.law.asymptote:
            msg = f"{p}={ev.params[p]:.3g} diverged (|log {p}| > 100): boundary solution"
            out.append(("diverged", msg))
    return out


def _grid_coordinates(ev: FitEvidence) -> list[int]:
    """Free coordinates a default grid really spans.

    Data-adaptive grids derive coefficient starts by least squares from (E, exponent) pairs, so only the
    coordinates such a grid spans are checked; Hoffmann's fixed grid spans all of them.
    """
    law = ev.law
    return [
        int(i)
        for i in ev.free
        if law.name == "chinchilla"
        or not (law.params[i] in law.log_params and law.params[i] != law.asymptote)
    ]


def _grid_position(value: float, lo: float, hi: float) -> str | None:
    """'outside' or 'on the edge of' the start grid [lo, hi], or None when comfortably inside."""
    if not lo <= value <= hi:
        return "outside"
    if min(value - lo, hi - value) <= GRID_EDGE_FRACTION * (hi - lo):
        return "on the edge of"
    return None


def _outside_start_grid(ev: FitEvidence) -> list[Warning]:
    """Hoffmann: the optimum should not be on (or beyond) the boundary of the initialisation sweep."""
    gmin, gmax = ev.start_info.get("grid_min", {}), ev.start_info.get("grid_max", {})
    if not ev.start_info.get("kind", "").startswith("grid"):
        return []
    out = []
    for i in _grid_coordinates(ev):
        nm = ev.law.theta_names[i]
        if nm not in gmin or not gmax[nm] > gmin[nm]:
            continue
        where = _grid_position(float(ev.theta[i]), gmin[nm], gmax[nm])
        if where is None:
            continue
        flag = "outside_start_grid" if where == "outside" else "start_grid_edge"
        out.append(
            (
                flag,
                f"{nm}={ev.theta[i]:.4g} lies {where} the start grid [{gmin[nm]:.4g}, {gmax[nm]:.4g}] "
                "(boundary "
                "of the initialisation sweep): widen the grid before trusting this optimum",
            )
        )
    return out


def _weakly_identified(ev: FitEvidence) -> list[Warning]:
    """Weak identification from the local curvature (sandwich SE on the optimisation scale)."""
    weak = []
    for i in ev.free:
        se = ev.se_theta.get(ev.law.theta_names[i])
        if se is None:
            continue
        p = ev.law.params[i]
        rel = se if p in ev.law.log_params else se / max(abs(ev.theta[i]), 1e-12)
        if not np.isfinite(rel):
            weak.append(f"{p} (SE undefined: flat direction)")
        elif rel > 0.5:
            weak.append(f"{p} (≈{rel:.0%} relative SE)")
    if not weak:
        return []
    return [
        (
            "weakly_identified",
            "weakly identified (local curvature): " + ", ".join(weak) + "; report predictions or derived "
            "quantities with bootstrap CIs rather than these parameters",
        )
    ]


def _saddle(ev: FitEvidence) -> list[Warning]:
    eig = ev.hessian_eig
    if not (eig.size and np.all(np.isfinite(eig)) and eig.min() < -1e-8 * np.abs(eig).max()):
        return []
    return [
        (
            "saddle",
            "the Hessian at the optimum has a negative eigenvalue: this may be a saddle or a kink of the "
            "Huber "
            "objective rather than a minimum; check the optimum with more starts",
        )
    ]


def _exp_text(log_value: float) -> str:
    """exp(x) to 4 significant digits, or ``e^x`` where exp overflows a float (a run-away end point)."""
    return f"{math.exp(log_value):.4g}" if log_value < 700 else f"e^{log_value:.4g}"


def _flat_objective(ev: FitEvidence) -> list[Warning]:
    """Flatness seen across starts: near-optimal end points far apart."""
    flat = []
    for i in ev.free:
        p = ev.law.params[i]
        if p not in ev.spread:
            continue
        lo, hi = ev.spread[p]
        if p in ev.law.log_params:
            if hi - lo > math.log(1.5):
                flat.append(f"{p} ∈ [{_exp_text(lo)}, {_exp_text(hi)}]")
        elif hi - lo > 0.1 * max(abs(ev.theta[i]), 0.05):
            flat.append(f"{p} ∈ [{lo:.4g}, {hi:.4g}]")
    if not flat:
        return []
    return [
        (
            "flat_objective",
            f"flat objective: {ev.near_count} start end points within {FLAT_RTOL:.0%} of the optimal "
            "objective "
            "span "
            + ", ".join(flat)
            + "; these parameters are weakly identified (predictions may still be robust)",
        )
    ]


def _rugged(ev: FitEvidence) -> list[Warning]:
    """Few starts agree on the optimum: another, better one may exist that no start found."""
    threshold = float(ev.settings.get("min_frac_at_optimum", MIN_FRAC_AT_OPTIMUM))
    if ev.n_starts > 1 and (ev.n_at_opt <= 1 or ev.frac < threshold):
        return [
            (
                "rugged",
                f"only {ev.n_at_opt} of {ev.n_starts} starts reached the optimum ({ev.frac:.1%}, threshold "
                f"{threshold:.0%}): the landscape is rugged; add starts before trusting the optimum",
            )
        ]
    return []


#: The checks, in the order their warnings are listed.
CHECKS: tuple[Callable[[FitEvidence], list[Warning]], ...] = (
    _few_points,
    _few_values,
    _asymptote_collapse,
    _exponent_boundary,
    _diverged,
    _outside_start_grid,
    _weakly_identified,
    _saddle,
    _flat_objective,
    _rugged,
)


def fit_warnings(ev: FitEvidence) -> list[Warning]:
    """(flag, message) pairs from every check.

    Flags (stable codes for programs, e.g. law comparison): few_points, few_values, asymptote_collapse,
    exponent_boundary, diverged, outside_start_grid, start_grid_edge, weakly_identified, saddle,
    flat_objective, rugged (and forced, added by ``fit_law``).
    """
    return [w for check in CHECKS for w in check(ev)]
