"""The quantity every fit minimises: summed Huber loss of log L̂ − log L in the LSE parameterisation.

Why summed, not averaged (Besiroglu et al. 2024, *Chinchilla scaling: a replication attempt*; Li et al. 2025,
*(Mis)Fitting: a survey of scaling laws*): averaging, or default optimiser tolerances, stops the optimiser
early (Besiroglu et al. 2024). ``FitProblem`` is a law on fixed data with some parameters frozen; it evaluates
the objective and its analytic gradient for a whole batch of parameter vectors at once, which is what lets
thousands of starts (and bootstrap resamples) be optimised together.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .inputs import encode_checked, loss_array, raw_columns, resolve_variables
from .laws import Law, get_law


def quiet() -> np.errstate:
    """Silence numpy floating-point warnings while evaluating laws at arbitrary (even absurd) parameters:
    non-finite results become an infinite objective (or NaN) instead of warnings on the console."""
    return np.errstate(all="ignore")


def huber(r: np.ndarray | float, delta: float = 1e-3) -> np.ndarray:
    """Elementwise Huber loss: r²/2 for |r| ≤ δ, δ(|r| − δ/2) beyond (Hoffmann et al. 2022, Eq. 11)."""
    r = np.asarray(r, dtype=float)
    a = np.abs(r)
    return np.where(a <= delta, 0.5 * r * r, delta * (a - 0.5 * delta))


def huber_grad(r: np.ndarray | float, delta: float = 1e-3) -> np.ndarray:
    """d huber / d r = clip(r, −δ, δ)."""
    return np.clip(np.asarray(r, dtype=float), -delta, delta)


@dataclass
class FitProblem:
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
        """Number of free parameters."""
        return len(self.free)

    def with_delta(self, delta: float) -> FitProblem:
        """The same problem with another Huber δ (the sandwich SEs use a widened one)."""
        return FitProblem(self.law, self.X, self.log_y, delta, self.free, self.theta_fixed, self.weights)

    def with_weights(self, weights: np.ndarray | None) -> FitProblem:
        """The same problem with per-row (or per batch row) weights, e.g. bootstrap counts."""
        return FitProblem(self.law, self.X, self.log_y, self.delta, self.free, self.theta_fixed, weights)

    def full(self, z: np.ndarray) -> np.ndarray:
        """Free-theta rows [S, k] -> full theta rows [S, P] (frozen entries filled in)."""
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
        """Objective [S] and gradient [S, k] for a batch of free-theta rows (inf where not finite)."""
        with quiet():
            lp, jac = self.law.log_predict(self.full(z), self.X, grad=True)
            assert jac is not None
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
        """Objective only [S] (inf where not finite)."""
        with quiet():
            lp, _ = self.law.log_predict(self.full(z), self.X, grad=False)
            f = self._huber_terms(lp, rows)[0].sum(axis=1)
        f[~np.isfinite(f)] = np.inf
        return f

    def point_jacobian(self, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Residuals [n] and d log L̂ / d z [n, k] at one point."""
        with quiet():
            lp, jac = self.law.log_predict(self.full(z), self.X, grad=True)
        assert jac is not None
        J = np.stack([np.broadcast_to(jac[p], lp.shape)[0] for p in self.free], axis=1)
        return lp[0] - self.log_y, J

    def log_prediction(self, theta_full: np.ndarray) -> np.ndarray:
        """log L̂ [n] at one full theta."""
        with quiet():
            return self.law.log_predict(theta_full[None, :], self.X)[0][0]


def _bound_inputs(
    law: str | Law, df: pd.DataFrame, loss: str, variables: Mapping[str, str] | None
) -> tuple[Law, dict[str, np.ndarray], dict[str, np.ndarray], np.ndarray]:
    """(bound law, raw columns, encoded X, loss) for evaluating a law on ``df``."""
    law = get_law(law)
    mapping = resolve_variables(law, df, variables)
    raw = raw_columns(df, mapping)
    law = law.bind(raw)
    X = encode_checked(law, raw, mapping, df)
    return law, raw, X, loss_array(df, loss)


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
    bound, _raw, X, y = _bound_inputs(law, df, loss, variables)
    with quiet():
        lp, _ = bound.log_predict(bound.to_theta(params)[None, :], X)
    return float(np.sum(huber(lp[0] - np.log(y), huber_delta)))


def fit_metrics(
    law: str | Law,
    params: Mapping[str, float],
    df: pd.DataFrame,
    *,
    loss: str = "loss",
    variables: Mapping[str, str] | None = None,
) -> dict[str, float]:
    """In-sample quality: R² on loss (1 − SS_res/SS_tot, as datablations), R² on log loss, RMSE, MAPE, max
    ARE."""
    bound, raw, _X, y = _bound_inputs(law, df, loss, variables)
    return quality_metrics(y, bound.predict(params, raw))


def quality_metrics(y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """R², R² of log loss, RMSE (plain and log), MAPE, max ARE and mean (absolute) log residual."""
    resid = pred - y
    with quiet():
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
