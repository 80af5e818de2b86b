"""Scaling-law forms: a small, extensible registry of laws with log-space predictions and analytic Jacobians.

Why this shape: every fit in this package is a robust regression of log loss on a law's *log* prediction
(Hoffmann et al. 2022, App. D.2). So a law is defined by one function that returns ``log L̂`` for a *batch* of
parameter vectors at once (thousands of multi-start points are optimised together, ``optimize.py``) together
with its Jacobian. Positive scale parameters (E, A, B, ...) are optimised as their logarithms, which turns
sums of power laws into log-sum-exp (LSE) expressions that stay finite for any parameter value.

Conventions
-----------
* ``params``: natural parameter names, the public face of a law (``FitResult.params`` uses them).
* ``theta``: the optimised vector, in ``params`` order, with ``log(p)`` for every ``p`` in ``log_params``;
  ``theta_names`` spells it (``log_E``, ``log_A``, ``alpha``, ...). For Chinchilla,
  ``log_A``/``log_B``/``log_E`` are Hoffmann's a/b/e.
* ``log_predict_fn(theta[S, P], X, grad) -> (log_pred[S, n], jac)`` where ``jac`` is a list of ``P`` arrays
  broadcastable to ``[S, n]``: d log_pred / d theta_p. ``X`` maps law variables to float arrays (categorical
  variables arrive as integer codes).
* ``start_grid_fn(X, loss, fixed_theta) -> theta[S, P]``: the default multi-start grid (may depend on the
  data).

Add a law with :func:`register_law`; tests/analysis/test_laws.py checks the built-in Jacobians against finite
differences (do the same for a new law).
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

LogPredict = Callable[
    [np.ndarray, Mapping[str, np.ndarray], bool], tuple[np.ndarray, list[np.ndarray] | None]
]
StartGrid = Callable[[Mapping[str, np.ndarray], np.ndarray, Mapping[str, float]], np.ndarray]


@dataclass(frozen=True)
class Law:
    """A scaling-law form. Instances are immutable and picklable (the bootstrap ships them to worker
    processes)."""

    name: str
    variables: tuple[str, ...]
    params: tuple[str, ...]
    formula: str
    log_predict_fn: LogPredict = field(repr=False, compare=False)
    log_params: tuple[str, ...] = ()
    exponents: tuple[str, ...] = ()
    start_grid_fn: StartGrid | None = field(default=None, repr=False, compare=False)
    asymptote: str | None = None  # the irreducible-loss parameter, checked for collapse to 0
    categorical: tuple[str, ...] = ()  # variables holding condition labels (encoded as integer codes)
    levels: tuple[str, ...] = ()  # bound condition levels, the reference level first
    bind_fn: Callable[[Law, Any], Law] | None = field(default=None, repr=False, compare=False)
    description: str = ""

    def __post_init__(self) -> None:
        unknown = [p for p in (*self.log_params, *self.exponents) if p not in self.params]
        if unknown:
            raise ValueError(
                f"law {self.name!r}: log_params/exponents {unknown} are not in params {self.params}"
            )
        if len(set(self.params)) != len(self.params):
            raise ValueError(f"law {self.name!r}: duplicate parameter names in {self.params}")

    # ------------------------------------------------------------------ parameter spaces
    @property
    def n_params(self) -> int:
        return len(self.params)

    @property
    def theta_names(self) -> tuple[str, ...]:
        return tuple(f"log_{p}" if p in self.log_params else p for p in self.params)

    @property
    def is_log(self) -> np.ndarray:
        return np.array([p in self.log_params for p in self.params], dtype=bool)

    def to_theta(self, params: Mapping[str, float]) -> np.ndarray:
        """Natural parameters -> optimisation vector (logs of the positive scales)."""
        missing = [p for p in self.params if p not in params]
        if missing:
            raise ValueError(f"law {self.name!r}: missing parameters {missing}; needs {list(self.params)}")
        vals = np.array([float(params[p]) for p in self.params], dtype=float)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(self.is_log, np.log(vals), vals)

    def from_theta(self, theta: np.ndarray) -> dict[str, float]:
        """Optimisation vector -> natural parameters (full float precision)."""
        theta = np.asarray(theta, dtype=float)
        with np.errstate(over="ignore", under="ignore"):  # a diverged scale becomes inf (flagged `diverged`)
            vals = np.where(self.is_log, np.exp(theta), theta)
        return {p: float(v) for p, v in zip(self.params, vals, strict=True)}

    # ------------------------------------------------------------------ data
    def bind(self, X: Mapping[str, Any] | pd.DataFrame) -> Law:
        """A law whose data-dependent parameters (per-condition multipliers) are fixed from ``X``."""
        if self.bind_fn is None or self.levels:
            return self
        return self.bind_fn(self, X)

    def encode(self, X: Mapping[str, Any] | pd.DataFrame) -> dict[str, np.ndarray]:
        """Law variables as arrays: floats for numeric variables, integer level codes for categorical ones."""
        out: dict[str, np.ndarray] = {}
        for var in self.variables:
            if var not in X:
                raise ValueError(
                    f"law {self.name!r} needs variable {var!r}; got {sorted(map(str, X.keys()))}"
                )
            values = np.asarray(X[var])
            if var in self.categorical:
                if not self.levels:
                    raise ValueError(f"law {self.name!r} is not bound to condition levels yet: fit it first")
                index = {lvl: i for i, lvl in enumerate(self.levels)}
                labels = [str(v) for v in values.ravel()]
                unknown = sorted(set(labels) - set(index))
                if unknown:
                    raise ValueError(
                        f"law {self.name!r}: unknown {var} levels {unknown}; fitted {list(self.levels)}"
                    )
                out[var] = np.array([index[v] for v in labels], dtype=np.intp)
            else:
                out[var] = np.asarray(values, dtype=float).ravel()
        return out

    # ------------------------------------------------------------------ evaluation
    def log_predict(
        self, theta: np.ndarray, X: Mapping[str, np.ndarray], grad: bool = False
    ) -> tuple[np.ndarray, list[np.ndarray] | None]:
        """log L̂ for a batch ``theta[S, P]`` on encoded ``X``; with ``grad`` also d/dtheta (list of P
        arrays)."""
        theta = np.atleast_2d(np.asarray(theta, dtype=float))
        # evaluated in log space (LSE); far from the data extreme parameters can still over/underflow, which
        # yields inf/0 (an infinite objective for that start) rather than a warning on the console
        with np.errstate(all="ignore"):
            return self.log_predict_fn(theta, X, grad)

    def predict(self, params: Mapping[str, float], X: Mapping[str, np.ndarray] | pd.DataFrame) -> np.ndarray:
        """Predicted loss at natural ``params`` for the rows of ``X`` (columns named by ``variables``)."""
        theta = self.to_theta(params)[None, :]
        lp, _ = self.log_predict(theta, self.encode(X), grad=False)
        with np.errstate(over="ignore", under="ignore"):
            return np.exp(lp[0])

    def default_starts(
        self, X: Mapping[str, np.ndarray], loss: np.ndarray, fixed_theta: Mapping[str, float] | None = None
    ) -> np.ndarray:
        """The law's default multi-start grid ``theta[S, P]`` (data-adaptive for most laws)."""
        fixed_theta = dict(fixed_theta or {})
        if self.start_grid_fn is None:
            raise ValueError(f"law {self.name!r} has no default start grid: pass starts=<array>")
        return np.atleast_2d(np.asarray(self.start_grid_fn(X, np.asarray(loss, float), fixed_theta), float))


LAWS: dict[str, Law] = {}


def register_law(law: Law) -> None:
    """Add (or replace) a law in the registry under ``law.name``."""
    if not isinstance(law, Law):
        raise TypeError(f"register_law expects a Law, got {type(law).__name__}")
    LAWS[law.name] = law


def get_law(name: str | Law) -> Law:
    """The registered law called ``name`` (a ``Law`` passes through)."""
    if isinstance(name, Law):
        return name
    try:
        return LAWS[name]
    except (KeyError, TypeError):
        raise ValueError(f"law={name!r}: must be one of {sorted(LAWS)}") from None


# ====================================================================================== building blocks


def _lse(terms: Sequence[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
    """log(sum(exp(terms))) and the softmax weights (= d LSE / d term), overflow-safe."""
    m = functools.reduce(np.maximum, terms)
    ex = [np.exp(t - m) for t in terms]
    s = functools.reduce(np.add, ex)
    return m + np.log(s), [e / s for e in ex]


def _col(theta: np.ndarray, i: int) -> np.ndarray:
    return theta[:, i : i + 1]


def _product(*axes: Sequence[float]) -> np.ndarray:
    return np.array(list(itertools.product(*axes)), dtype=float)


def _lsq_log_scale(loss: np.ndarray, offset: np.ndarray | float, log_x: np.ndarray) -> np.ndarray:
    """log B minimising sum (loss - offset - B·x)² with x = exp(log_x) (variable projection for seeding).

    ``offset`` and ``log_x`` broadcast to [S, n]; returns log B per row [S]; non-positive B falls back to a
    small positive value, since starts only need to be sensible, not optimal.
    """
    y = loss[None, :] - offset
    shift = np.max(log_x, axis=-1, keepdims=True)
    x = np.exp(log_x - shift)
    num = np.sum(x * y, axis=-1)
    den = np.sum(x * x, axis=-1)
    b = num / np.maximum(den, 1e-300)
    b = np.where(b > 0, b, 1e-3 * np.mean(loss))
    return np.log(b) + shift[..., 0]


def _fixed_or(fixed: Mapping[str, float], name: str, values: Sequence[float] | np.ndarray) -> list[float]:
    return [float(fixed[name])] if name in fixed else [float(v) for v in values]


# ====================================================================================== one-variable laws

_E_FRACTIONS = (0.05, 0.3, 0.6, 0.85, 0.97)
_EXPONENT_GRID = (0.05, 0.15, 0.3, 0.5, 0.8, 1.2, 2.0)


def _lp_saturating(theta: np.ndarray, X: Mapping[str, np.ndarray], grad: bool, var: str):
    # theta: log E, log B, beta.  L = E + B x^-beta  ->  LSE(e, b - beta log x)
    logx = np.log(X[var])[None, :]
    e, b, beta = _col(theta, 0), _col(theta, 1), _col(theta, 2)
    lp, (we, wb) = _lse([np.broadcast_to(e, (theta.shape[0], logx.shape[1])), b - beta * logx])
    if not grad:
        return lp, None
    return lp, [we, wb, -wb * logx]


def _grid_saturating(X, loss, fixed, var: str, names: tuple[str, str, str]):
    n_e, n_b, n_x = names
    logx = np.log(X[var])
    lmin = float(np.min(loss))
    e_vals = _fixed_or(fixed, n_e, [np.log(f * lmin) for f in _E_FRACTIONS])
    x_vals = _fixed_or(fixed, n_x, _EXPONENT_GRID)
    base = _product(e_vals, x_vals)
    b = _lsq_log_scale(loss, np.exp(base[:, :1]), -base[:, 1:2] * logx[None, :])
    rows = []
    for shift in (0.0, -2.0, 2.0):
        rows.append(np.column_stack([base[:, 0], b + shift, base[:, 1]]))
    if n_b in fixed:
        rows = [np.column_stack([base[:, 0], np.full(len(base), fixed[n_b]), base[:, 1]])]
    return np.vstack(rows)


def _lp_kaplan1(theta: np.ndarray, X: Mapping[str, np.ndarray], grad: bool, var: str):
    # theta: log x_c, alpha.  log L = alpha (log x_c - log x)
    logx = np.log(X[var])[None, :]
    c, a = _col(theta, 0), _col(theta, 1)
    u = c - logx
    lp = a * u
    if not grad:
        return lp, None
    return lp, [np.broadcast_to(a, lp.shape), u]


def _grid_kaplan1(X, loss, fixed, var: str, names: tuple[str, str]):
    n_c, n_a = names
    logx = np.log(X[var])
    logl = np.log(loss)
    a_vals = _fixed_or(fixed, n_a, (0.02, 0.05, 0.1, 0.2, 0.5, 1.0))
    rows = []
    for a in a_vals:
        c0 = float(np.mean(logl / a + logx)) if a != 0 else float(np.max(logx))
        for shift in (0.0, -3.0, 3.0):
            rows.append((fixed.get(n_c, c0 + shift), a))
    return np.array(rows)


def _lp_kaplan_nd(theta: np.ndarray, X: Mapping[str, np.ndarray], grad: bool):
    # theta: log N_c, log D_c, alpha_N, alpha_D.
    # log L = alpha_D · LSE(u1, u2),  u1 = (alpha_N/alpha_D)(log N_c - log N),  u2 = log D_c - log D
    logn = np.log(X["N"])[None, :]
    logd = np.log(X["D"])[None, :]
    nc, dc, an, ad = (_col(theta, i) for i in range(4))
    r = an / ad
    v = nc - logn
    u1 = r * v
    u2 = dc - logd
    s, (w1, w2) = _lse([u1, u2])
    lp = ad * s
    if not grad:
        return lp, None
    return lp, [an * w1, ad * w2, w1 * v, s - w1 * u1]


def _grid_kaplan_nd(X, loss, fixed, names=("log_N_c", "log_D_c", "alpha_N", "alpha_D")):
    n_nc, n_dc, n_an, n_ad = names
    logn, logd, logl = np.log(X["N"]), np.log(X["D"]), np.log(loss)
    rows = []
    for an in _fixed_or(fixed, n_an, (0.03, 0.076, 0.2)):
        for ad in _fixed_or(fixed, n_ad, (0.03, 0.1, 0.3)):
            nc0 = float(np.median(logn) + np.median(logl) / an)
            dc0 = float(np.median(logd) + np.median(logl) / ad)
            for sn in (-2.0, 0.0, 2.0):
                for sd in (-2.0, 0.0, 2.0):
                    rows.append((fixed.get(n_nc, nc0 + sn), fixed.get(n_dc, dc0 + sd), an, ad))
    return np.array(rows)


# ====================================================================================== Chinchilla

#: Hoffmann et al. (2022) App. D.2: the 4,500-point initialisation grid, in theta order (e, a, b, alpha,
#: beta).
HOFFMANN_GRID: dict[str, tuple[float, ...]] = {
    "log_E": (-1.0, -0.5, 0.0, 0.5, 1.0),
    "log_A": (0.0, 5.0, 10.0, 15.0, 20.0, 25.0),
    "log_B": (0.0, 5.0, 10.0, 15.0, 20.0, 25.0),
    "alpha": (0.0, 0.5, 1.0, 1.5, 2.0),
    "beta": (0.0, 0.5, 1.0, 1.5, 2.0),
}


def _lp_chinchilla(theta: np.ndarray, X: Mapping[str, np.ndarray], grad: bool):
    # theta: e, a, b, alpha, beta.  L = E + A N^-alpha + B D^-beta = exp(LSE(e, a - alpha log N, b - beta log
    # D))
    logn = np.log(X["N"])[None, :]
    logd = np.log(X["D"])[None, :]
    e, a, b, al, be = (_col(theta, i) for i in range(5))
    t1 = a - al * logn
    t2 = b - be * logd
    lp, (we, w1, w2) = _lse([np.broadcast_to(e, t1.shape), t1, t2])
    if not grad:
        return lp, None
    return lp, [we, w1, w2, -w1 * logn, -w2 * logd]


def _grid_chinchilla(X, loss, fixed):
    axes = [_fixed_or(fixed, k, v) for k, v in HOFFMANN_GRID.items()]
    return _product(*axes)


# ====================================================================================== data-constrained


def _lp_data_constrained(theta: np.ndarray, X: Mapping[str, np.ndarray], grad: bool):
    """Muennighoff et al. (2023): L = E + A/N'^alpha + B/D'^beta with decaying value of repeated data/params.

    U_D = min(U, D), R_D = D/U_D - 1, D' = U_D (1 + R_D* (1 - exp(-R_D/R_D*))).
    U_N = min(N, N_opt(U_D)), N_opt(U) = (alpha A/(beta B))^(1/alpha) U^(beta/alpha) (the Chinchilla frontier;
    = G² U for alpha = beta), R_N = N/U_N - 1, N' = U_N (1 + R_N* (1 - exp(-R_N/R_N*))).
    theta: e, a, b, alpha, beta, log R_D*, log R_N*.
    """
    n = np.asarray(X["N"], float)[None, :]
    d = np.asarray(X["D"], float)[None, :]
    u = np.asarray(X["U"], float)[None, :]
    ud = np.minimum(u, d)
    log_ud, log_n = np.log(ud), np.log(n)
    rd = np.maximum(d / ud - 1.0, 0.0)
    e, a, b, al, be, lrd, lrn = (_col(theta, i) for i in range(7))
    # effective data
    rds = np.exp(lrd)
    qd = rd / rds
    omd = -np.expm1(-qd)  # 1 - exp(-R_D/R_D*)
    hd = 1.0 + rds * omd
    log_dp = log_ud + np.log(hd)
    # effective parameters
    with np.errstate(divide="ignore", invalid="ignore"):
        c = np.log(al) + a - np.log(be) - b
        log_nopt = c / al + (be / al) * log_ud
    capped = log_nopt < log_n
    log_un = np.where(capped, log_nopt, log_n)
    rn = np.where(capped, np.expm1(np.maximum(log_n - log_un, 0.0)), 0.0)
    rns = np.exp(lrn)
    qn = rn / rns
    omn = -np.expm1(-qn)
    hn = 1.0 + rns * omn
    log_np = log_un + np.log(hn)
    t1 = a - al * log_np
    t2 = b - be * log_dp
    lp, (we, w1, w2) = _lse([np.broadcast_to(e, t1.shape), t1, t2])
    if not grad:
        return lp, None
    k_n = -al * w1  # d lp / d log N'
    k_d = -be * w2  # d lp / d log D'
    dlogdp_dlrd = rds * (omd - qd * (1.0 - omd)) / hd
    dlognp_dlrn = rns * (omn - qn * (1.0 - omn)) / hn
    # d log N' / d log U_N, only where U_N = N_opt (else U_N = N does not depend on theta)
    g_un = np.where(capped, 1.0 - (1.0 - omn) * (rn + 1.0) / hn, 0.0)
    kg = k_n * g_un
    dlogopt_da = 1.0 / al
    dlogopt_db = -1.0 / al
    dlogopt_dal = (1.0 - c) / al**2 - (be / al**2) * log_ud
    dlogopt_dbe = -1.0 / (al * be) + log_ud / al
    return lp, [
        we,
        w1 + kg * dlogopt_da,
        w2 + kg * dlogopt_db,
        -w1 * log_np + kg * dlogopt_dal,
        -w2 * log_dp + kg * dlogopt_dbe,
        k_d * dlogdp_dlrd,
        k_n * dlognp_dlrn,
    ]


def _grid_data_constrained(X, loss, fixed):
    base_names = ("log_E", "log_A", "log_B", "alpha", "beta")
    if all(k in fixed for k in base_names):
        # Muennighoff's stage 2 (base frozen): the R_D*, R_N* landscape is multi-modal and almost flat
        # (Muennighoff et al. 2023), so the 2-D grid is dense and wide; R* = 0 is a singular limit, start
        # above it
        r_grid = np.geomspace(0.5, 500.0, 10)
    else:
        r_grid = np.array([1.0, 5.0, 15.0, 60.0])
    axes = [
        _fixed_or(fixed, "log_E", (-0.5, 0.5, 1.0)),
        _fixed_or(fixed, "log_A", (0.0, 6.0, 12.0)),
        _fixed_or(fixed, "log_B", (0.0, 6.0, 12.0)),
        _fixed_or(fixed, "alpha", (0.2, 0.5, 1.0)),
        _fixed_or(fixed, "beta", (0.2, 0.5, 1.0)),
        _fixed_or(fixed, "log_R_D_star", np.log(r_grid)),
        _fixed_or(fixed, "log_R_N_star", np.log(r_grid)),
    ]
    return _product(*axes)


# ====================================================================================== effective data


def _lp_effective_data(theta: np.ndarray, X: Mapping[str, np.ndarray], grad: bool):
    # theta: log E, log B, beta, log k_<level> for every non-reference level.  L = E + B (k_c D)^-beta
    logd = np.log(X["D"])[None, :]
    codes = np.asarray(X["condition"], dtype=np.intp)
    e, b, beta = _col(theta, 0), _col(theta, 1), _col(theta, 2)
    logk_all = np.concatenate([np.zeros((theta.shape[0], 1)), theta[:, 3:]], axis=1)
    logk = logk_all[:, codes]
    z = logk + logd
    lp, (we, wb) = _lse([np.broadcast_to(e, z.shape), b - beta * z])
    if not grad:
        return lp, None
    jac = [we, wb, -wb * z]
    for j in range(1, logk_all.shape[1]):
        jac.append(np.where(codes[None, :] == j, -beta * wb, 0.0))
    return lp, jac


def _grid_effective_data(X, loss, fixed):
    # unbound law (no levels yet): the saturating grid; the bound law adds the k_<level> columns
    return _grid_saturating({"D": X["D"]}, loss, fixed, "D", ("log_E", "log_B", "beta"))


def _bind_effective_data(law: Law, X: Mapping[str, Any]) -> Law:
    values = X.get("condition")
    if values is None:
        raise ValueError(f"law {law.name!r} needs a 'condition' column to bind its per-condition multipliers")
    levels = tuple(sorted({str(v) for v in np.asarray(values).ravel()}))
    return effective_data_law(levels, name=law.name)


def effective_data_law(
    levels: Sequence[str], *, reference: str | None = None, name: str = "effective_data"
) -> Law:
    """The effective-data law bound to condition ``levels`` (``reference`` gets k = 1; default: first level).

    Why: a quality or domain axis is summarised by one number per condition, the multiplier k_c by which a
    token
    of condition c is worth more (k > 1) or less (k < 1) than a reference token, under a shared E, B, beta.
    """
    levels = [str(v) for v in levels]
    if not levels:
        raise ValueError("effective_data_law needs at least one condition level")
    if reference is not None:
        if str(reference) not in levels:
            raise ValueError(f"reference={reference!r}: must be one of {levels}")
        levels.remove(str(reference))
        levels.insert(0, str(reference))
    ks = tuple(f"k_{lvl}" for lvl in levels[1:])
    return Law(
        name=name,
        variables=("D", "condition"),
        params=("E", "B", "beta", *ks),
        formula=f"L(D, c) = E + B·(k_c·D)^(−β), k_{levels[0]} = 1 (reference)",
        log_predict_fn=_lp_effective_data,
        log_params=("E", "B", *ks),
        exponents=("beta",),
        start_grid_fn=functools.partial(_grid_effective_data_bound, n_levels=len(levels)),
        asymptote="E",
        categorical=("condition",),
        levels=tuple(levels),
        bind_fn=_bind_effective_data,
        description="effective-data multiplier per condition (quality/domain axis)",
    )


def _grid_effective_data_bound(X, loss, fixed, n_levels: int):
    sat = _grid_saturating({"D": X["D"]}, loss, fixed, "D", ("log_E", "log_B", "beta"))
    rows = []
    for logk in np.log([0.25, 1.0, 4.0]):
        ks = np.full((len(sat), n_levels - 1), logk)
        rows.append(np.hstack([sat, ks]))
    return np.vstack(rows)


# ====================================================================================== broken power law


def _lp_broken(theta: np.ndarray, X: Mapping[str, np.ndarray], grad: bool):
    """Caballero et al. (2023) BNSL, one break: L = E + B D^-c0 (1 + (D/d1)^(1/f1))^(-c1 f1).

    theta: log E, log B, c0, c1, log d1, log f1.  With z = (log D - log d1)/f1 and sp = log(1 + e^z):
    log(L - E) = b - c0 log D - c1 f1 sp.
    """
    logd = np.log(X["D"])[None, :]
    e, b, c0, c1, ld1, lf1 = (_col(theta, i) for i in range(6))
    f1 = np.exp(lf1)
    z = (logd - ld1) / f1
    sp = np.logaddexp(0.0, z)
    u = b - c0 * logd - c1 * f1 * sp
    lp, (we, wu) = _lse([np.broadcast_to(e, u.shape), u])
    if not grad:
        return lp, None
    sig = np.exp(z - sp)  # logistic(z), overflow-safe
    return lp, [
        we,
        wu,
        -wu * logd,
        -wu * f1 * sp,
        wu * c1 * sig,
        wu * c1 * f1 * (z * sig - sp),
    ]


def _grid_broken(X, loss, fixed):
    logd = np.log(X["D"])
    lmin = float(np.min(loss))
    q = np.quantile(logd, [0.25, 0.5, 0.75])
    base = _product(
        _fixed_or(fixed, "log_E", [np.log(f * lmin) for f in (0.05, 0.5, 0.9)]),
        _fixed_or(fixed, "c0", (0.0, 0.2, 0.5)),
        _fixed_or(fixed, "c1", (-0.3, 0.2, 0.6)),
        _fixed_or(fixed, "log_d1", q),
        _fixed_or(fixed, "log_f1", np.log([0.3, 1.0, 3.0])),
    )
    e, c0, c1, ld1, lf1 = base.T
    f1 = np.exp(lf1)[:, None]
    z = (logd[None, :] - ld1[:, None]) / f1
    log_x = -c0[:, None] * logd[None, :] - c1[:, None] * f1 * np.logaddexp(0.0, z)
    if "log_B" in fixed:
        b = np.full(len(base), fixed["log_B"])
    else:
        b = _lsq_log_scale(loss, np.exp(e)[:, None], log_x)
    return np.column_stack([e, b, c0, c1, ld1, lf1])


# ================================================================================ shifted power, envelope

_SHIFTED_EXPONENT_GRID = (*_EXPONENT_GRID, 3.0)
_SHIFTED_E_FRACTIONS = (*_E_FRACTIONS[:-1], 0.95, 0.99)  # a bend can end close to E
_B_SHIFTS = (0.0,)  # log B comes from least squares at each (E, exponent, shift) start, so one is enough


def _lp_shifted(theta: np.ndarray, X: Mapping[str, np.ndarray], grad: bool, var: str):
    """L = E + B·(x + x0)^-β, theta: log E, log B, beta, log x0.

    Why: with x0 > 0 the log-log slope steepens from ~0 (x << x0) to -β (x >> x0), the bend a saturating
    law cannot make. log(x + x0) = logaddexp(log x, log x0), so the prediction is an LSE as for the others.
    """
    logx = np.log(X[var])[None, :]
    e, b, beta, lx0 = (_col(theta, i) for i in range(4))
    g = np.logaddexp(logx, lx0)
    lp, (we, wb) = _lse([np.broadcast_to(e, g.shape), b - beta * g])
    if not grad:
        return lp, None
    frac0 = np.exp(lx0 - g)  # x0 / (x + x0) = d g / d log x0
    return lp, [we, wb, -wb * g, -wb * beta * frac0]


def _grid_shifted(X, loss, fixed, var: str, names: tuple[str, str, str, str]):
    n_e, n_b, n_x, n_0 = names
    logx = np.log(X[var])
    lmin = float(np.min(loss))
    lo, hi = float(np.min(logx)), float(np.max(logx))
    shifts = [lo - 3.0, lo - 1.5, lo, lo + 1.5, hi, hi + 1.0]
    base = _product(
        _fixed_or(fixed, n_e, [np.log(f * lmin) for f in _SHIFTED_E_FRACTIONS]),
        _fixed_or(fixed, n_x, _SHIFTED_EXPONENT_GRID),
        _fixed_or(fixed, n_0, shifts),
    )
    g = np.logaddexp(logx[None, :], base[:, 2:3])
    if n_b in fixed:
        return np.column_stack([base[:, 0], np.full(len(base), fixed[n_b]), base[:, 1], base[:, 2]])
    b = _lsq_log_scale(loss, np.exp(base[:, :1]), -base[:, 1:2] * g)
    rows = [np.column_stack([base[:, 0], b + s, base[:, 1], base[:, 2]]) for s in _B_SHIFTS]
    return np.vstack(rows)


def _lp_envelope(theta: np.ndarray, X: Mapping[str, np.ndarray], grad: bool, var: str):
    """Rosenfeld et al. (2020) envelope: L = E + (L0 − E)·h/(1 + h), h = B·x^-β; theta: log E, log B, beta,
    log L0.

    Why: L runs from L0 (the loss of a model that learnt nothing, e.g. ln V) at small x to E at large x, so
    the log-log slope steepens in between. Written as L = (E + L0·h)/(1 + h):
    log L = LSE(e, l0 + s) − softplus(s) with s = log h = b − β log x; finite for any theta.
    """
    logx = np.log(X[var])[None, :]
    e, b, beta, l0 = (_col(theta, i) for i in range(4))
    s = b - beta * logx
    num, (we, wl) = _lse([np.broadcast_to(e, s.shape), l0 + s])
    sp = np.logaddexp(0.0, s)
    lp = num - sp
    if not grad:
        return lp, None
    ds = wl - np.exp(s - sp)  # d lp / d s = w_L0 − h/(1+h)
    return lp, [we, ds, -ds * logx, wl]


def _envelope_log_b(loss: np.ndarray, logx: np.ndarray, e: float, beta: float, l0: float) -> float:
    """log B from h_i = (L0 − L_i)/(L_i − E) at the points where that is positive (a seed, not a fit)."""
    E, L0 = math.exp(e), math.exp(l0)
    ok = (loss > E) & (loss < L0)
    if not ok.any():
        return 0.0
    h = (L0 - loss[ok]) / (loss[ok] - E)
    return float(np.mean(np.log(h) + beta * logx[ok]))


def _grid_envelope(X, loss, fixed, var: str, names: tuple[str, str, str, str]):
    n_e, n_b, n_x, n_l0 = names
    logx = np.log(X[var])
    lmin, lmax = float(np.min(loss)), float(np.max(loss))
    base = _product(
        _fixed_or(fixed, n_e, [np.log(f * lmin) for f in _SHIFTED_E_FRACTIONS]),
        _fixed_or(fixed, n_x, _SHIFTED_EXPONENT_GRID),
        _fixed_or(fixed, n_l0, [np.log(f * lmax) for f in (1.02, 1.2, 1.6, 2.5, 4.0)]),
    )
    rows = []
    for e, beta, l0 in base:
        if n_b in fixed:
            rows.append((e, fixed[n_b], beta, l0))
            continue
        b = _envelope_log_b(loss, logx, e, beta, l0)
        rows.extend((e, b + s, beta, l0) for s in _B_SHIFTS)
    return np.array(rows)


def _grid_envelope_fixed(X, loss, fixed, var: str, names: tuple[str, str, str, str]):
    if names[3] not in fixed:
        raise ValueError(
            f"the envelope law with a fixed L0 needs fixed={{'L0': <reference loss>}} (e.g. ln(vocab size), "
            f"the loss of a uniform prediction; run records carry it); got fixed={sorted(fixed)}"
        )
    return _grid_envelope(X, loss, fixed, var, names)


# ====================================================================================== registry

register_law(
    Law(
        name="saturating_power_D",
        variables=("D",),
        params=("E", "B", "beta"),
        formula="L(D) = E + B·D^(−β)",
        log_predict_fn=functools.partial(_lp_saturating, var="D"),
        log_params=("E", "B"),
        exponents=("beta",),
        start_grid_fn=functools.partial(_grid_saturating, var="D", names=("log_E", "log_B", "beta")),
        asymptote="E",
        description="saturating power law in data (irreducible loss E)",
    )
)
register_law(
    Law(
        name="saturating_power_N",
        variables=("N",),
        params=("E", "A", "alpha"),
        formula="L(N) = E + A·N^(−α)",
        log_predict_fn=functools.partial(_lp_saturating, var="N"),
        log_params=("E", "A"),
        exponents=("alpha",),
        start_grid_fn=functools.partial(_grid_saturating, var="N", names=("log_E", "log_A", "alpha")),
        asymptote="E",
        description="saturating power law in model size (irreducible loss E)",
    )
)
register_law(
    Law(
        name="kaplan_D",
        variables=("D",),
        params=("D_c", "alpha_D"),
        formula="L(D) = (D_c/D)^α_D",
        log_predict_fn=functools.partial(_lp_kaplan1, var="D"),
        log_params=("D_c",),
        exponents=("alpha_D",),
        start_grid_fn=functools.partial(_grid_kaplan1, var="D", names=("log_D_c", "alpha_D")),
        description="Kaplan et al. (2020) pure power law in data, no irreducible term",
    )
)
register_law(
    Law(
        name="kaplan_N",
        variables=("N",),
        params=("N_c", "alpha_N"),
        formula="L(N) = (N_c/N)^α_N",
        log_predict_fn=functools.partial(_lp_kaplan1, var="N"),
        log_params=("N_c",),
        exponents=("alpha_N",),
        start_grid_fn=functools.partial(_grid_kaplan1, var="N", names=("log_N_c", "alpha_N")),
        description="Kaplan et al. (2020) pure power law in model size, no irreducible term",
    )
)
register_law(
    Law(
        name="kaplan_ND",
        variables=("N", "D"),
        params=("N_c", "D_c", "alpha_N", "alpha_D"),
        formula="L(N,D) = [(N_c/N)^(α_N/α_D) + D_c/D]^α_D",
        log_predict_fn=_lp_kaplan_nd,
        log_params=("N_c", "D_c"),
        exponents=("alpha_N", "alpha_D"),
        start_grid_fn=_grid_kaplan_nd,
        description="Kaplan et al. (2020) Eq. 1.5 joint law",
    )
)
register_law(
    Law(
        name="chinchilla",
        variables=("N", "D"),
        params=("E", "A", "B", "alpha", "beta"),
        formula="L(N,D) = E + A·N^(−α) + B·D^(−β)",
        log_predict_fn=_lp_chinchilla,
        log_params=("E", "A", "B"),
        exponents=("alpha", "beta"),
        start_grid_fn=_grid_chinchilla,
        asymptote="E",
        description="Hoffmann et al. (2022) Approach 3; default starts = their 4,500-point grid",
    )
)
register_law(
    Law(
        name="data_constrained",
        variables=("N", "D", "U"),
        params=("E", "A", "B", "alpha", "beta", "R_D_star", "R_N_star"),
        formula="L(N,D,U) = E + A·N'^(−α) + B·D'^(−β); D' = U_D + U_D·R_D*·(1 − e^(−R_D/R_D*)), "
        "N' = U_N + U_N·R_N*·(1 − e^(−R_N/R_N*)), U_N = min(N, N_opt(U_D))",
        log_predict_fn=_lp_data_constrained,
        log_params=("E", "A", "B", "R_D_star", "R_N_star"),
        exponents=("alpha", "beta"),
        start_grid_fn=_grid_data_constrained,
        asymptote="E",
        description="Muennighoff et al. (2023) data-constrained law (repeated data and excess parameters "
        "decay)",
    )
)
register_law(
    Law(
        name="effective_data",
        variables=("D", "condition"),
        params=("E", "B", "beta"),
        formula="L(D, c) = E + B·(k_c·D)^(−β), k_ref = 1 (one k per non-reference condition)",
        log_predict_fn=_lp_effective_data,
        log_params=("E", "B"),
        exponents=("beta",),
        start_grid_fn=_grid_effective_data,
        asymptote="E",
        categorical=("condition",),
        bind_fn=_bind_effective_data,
        description="effective-data multiplier per condition; levels (and k_<level> params) bound at fit "
        "time",
    )
)
register_law(
    Law(
        name="broken_power_D",
        variables=("D",),
        params=("E", "B", "c0", "c1", "d1", "f1"),
        formula="L(D) = E + B·D^(−c0)·(1 + (D/d1)^(1/f1))^(−c1·f1)",
        log_predict_fn=_lp_broken,
        log_params=("E", "B", "d1", "f1"),
        exponents=("c0", "c1"),
        start_grid_fn=_grid_broken,
        asymptote="E",
        description="Caballero et al. (2023) broken neural scaling law with one break",
    )
)


register_law(
    Law(
        name="shifted_power_U",
        variables=("U",),
        params=("E", "B", "beta", "U0"),
        formula="L(U) = E + B·(U + U0)^(−β)",
        log_predict_fn=functools.partial(_lp_shifted, var="U"),
        log_params=("E", "B", "U0"),
        exponents=("beta",),
        start_grid_fn=functools.partial(_grid_shifted, var="U", names=("log_E", "log_B", "beta", "log_U0")),
        asymptote="E",
        description="shifted power law in unique tokens: flat below U0, slope −β above (steepens in log-log)",
    )
)
register_law(
    Law(
        name="shifted_power_D",
        variables=("D",),
        params=("E", "B", "beta", "D0"),
        formula="L(D) = E + B·(D + D0)^(−β)",
        log_predict_fn=functools.partial(_lp_shifted, var="D"),
        log_params=("E", "B", "D0"),
        exponents=("beta",),
        start_grid_fn=functools.partial(_grid_shifted, var="D", names=("log_E", "log_B", "beta", "log_D0")),
        asymptote="E",
        description="shifted power law in data: flat below D0, slope −β above (steepens in log-log)",
    )
)
_ENVELOPE_NAMES = ("log_E", "log_B", "beta", "log_L0")
register_law(
    Law(
        name="envelope_U",
        variables=("U",),
        params=("E", "B", "beta", "L0"),
        formula="L(U) = E + (L0 − E)·h/(1 + h), h = B·U^(−β)",
        log_predict_fn=functools.partial(_lp_envelope, var="U"),
        log_params=("E", "B", "L0"),
        exponents=("beta",),
        start_grid_fn=functools.partial(_grid_envelope, var="U", names=_ENVELOPE_NAMES),
        asymptote="E",
        description="Rosenfeld et al. (2020) envelope in unique tokens, L0 (loss with no data) fitted",
    )
)
register_law(
    Law(
        name="envelope_U_fixed",
        variables=("U",),
        params=("E", "B", "beta", "L0"),
        formula="L(U) = E + (L0 − E)·h/(1 + h), h = B·U^(−β), L0 fixed (e.g. ln V)",
        log_predict_fn=functools.partial(_lp_envelope, var="U"),
        log_params=("E", "B", "L0"),
        exponents=("beta",),
        start_grid_fn=functools.partial(_grid_envelope_fixed, var="U", names=_ENVELOPE_NAMES),
        asymptote="E",
        description="Rosenfeld et al. (2020) envelope in unique tokens with L0 fixed to a reference loss: "
        "fit with fixed={'L0': ...} (e.g. the uniform loss ln V from the run records)",
    )
)
