"""Central finite differences of a law's log prediction: what every analytic Jacobian is checked against."""

from __future__ import annotations

import numpy as np
from scaling_analysis.engine.laws import Law


def fd_jacobian(law: Law, theta: np.ndarray, X: dict) -> np.ndarray:
    """d log L / d theta at ``theta`` for every row of ``X``, by central differences."""
    J = np.zeros((len(next(iter(X.values()))), theta.size))
    for p in range(theta.size):
        h = 1e-6 * max(1.0, abs(theta[p]))
        tp, tm = theta.copy(), theta.copy()
        tp[p] += h
        tm[p] -= h
        J[:, p] = (law.log_predict(tp[None], X)[0][0] - law.log_predict(tm[None], X)[0][0]) / (2 * h)
    return J
