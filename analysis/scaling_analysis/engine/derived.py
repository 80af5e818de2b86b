"""Derived quantities: named functions of a law's natural parameters, for point estimates and bootstrap CIs.

Why: parameters are often weakly identified while predictions and ratios are not (Epoch's B has a 60% SE,
the compute-optimal exponent a = β/(α+β) is tight), so reports state derived quantities with intervals.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from .laws import Law, get_law

ParamFn = Callable[[dict[str, float]], float]


def _fmt(v: float) -> str:
    return f"{float(v):.4g}"


def _as_list(v: Any) -> list[float]:
    return [float(x) for x in np.atleast_1d(v)]


def _doc(fn: ParamFn, text: str) -> ParamFn:
    fn.__doc__ = text
    return fn


def chinchilla_frontier(p: Mapping[str, float], C: float) -> tuple[float, float]:
    """(N_opt, D_opt) at compute C ≈ 6ND on the efficient frontier of E + A/N^α + B/D^β (Hoffmann Eq. 4)."""
    al, be, A, B = p["alpha"], p["beta"], p["A"], p["B"]
    a, b = be / (al + be), al / (al + be)
    G = (al * A / (be * B)) ** (1.0 / (al + be))
    return G * (C / 6.0) ** a, (C / 6.0) ** b / G


def _frontier_loss(p: Mapping[str, float], C: float) -> float:
    n_opt, d_opt = chinchilla_frontier(p, C)
    return p.get("E", 0.0) + p["A"] / n_opt ** p["alpha"] + p["B"] / d_opt ** p["beta"]


def _at_budget(fn: Callable[[Mapping[str, float], float], float], C: float, text: str) -> ParamFn:
    """``fn`` evaluated at compute budget ``C``, as a documented function of the parameters."""

    def at_c(p: dict[str, float]) -> float:
        return fn(p, C)

    return _doc(at_c, text)


def _tokens_per_param(p: Mapping[str, float], C: float) -> float:
    n_opt, d_opt = chinchilla_frontier(p, C)
    return d_opt / n_opt


def _exponent_a(p: dict[str, float]) -> float:
    return p["beta"] / (p["alpha"] + p["beta"])


def _exponent_b(p: dict[str, float]) -> float:
    return p["alpha"] / (p["alpha"] + p["beta"])


def _chinchilla_quantities(targets: Mapping[str, Any]) -> dict[str, ParamFn]:
    """a, b and, per compute budget C, the compute-optimal N, D, tokens per parameter and loss."""
    out = {
        "a": _doc(_exponent_a, "compute-optimal exponent a = β/(α+β) (N_opt ∝ C^a)"),
        "b": _doc(_exponent_b, "compute-optimal exponent b = α/(α+β) (D_opt ∝ C^b)"),
    }
    for C in _as_list(targets.get("C", [])):
        tag, at = f"@C={_fmt(C)}", f"at C = {_fmt(C)} FLOP"
        n_opt = _at_budget(lambda p, c: chinchilla_frontier(p, c)[0], C, f"compute-optimal parameters {at}")
        d_opt = _at_budget(lambda p, c: chinchilla_frontier(p, c)[1], C, f"compute-optimal tokens {at}")
        out["N_opt" + tag], out["D_opt" + tag] = n_opt, d_opt
        out["tokens_per_param" + tag] = _at_budget(
            _tokens_per_param, C, f"compute-optimal tokens per parameter D_opt/N_opt {at}"
        )
        out["loss_opt" + tag] = _at_budget(
            _frontier_loss, C, f"loss on the compute-optimal frontier {at} (no repetition)"
        )
    return out


def _loss_at_points(law: Law, targets: Mapping[str, Any]) -> dict[str, ParamFn]:
    """Predicted loss at target points (a value for each of the law's variables; scalars or equal lists)."""
    cols = {v: np.atleast_1d(targets[v]) for v in law.variables}
    m = max(len(c) for c in cols.values())
    if any(len(c) not in (1, m) for c in cols.values()):
        raise ValueError("derived_quantities: variable targets must be scalars or lists of one common length")
    cols = {v: np.resize(c, m) for v, c in cols.items()}
    out: dict[str, ParamFn] = {}
    for i in range(m):
        point = {v: cols[v][i : i + 1] for v in law.variables}
        label = ",".join(
            f"{v}={_fmt(point[v][0]) if v not in law.categorical else point[v][0]}" for v in law.variables
        )

        def _loss_at(p: dict[str, float], point: dict = point) -> float:
            return float(law.predict(p, point)[0])

        out[f"loss@{label}"] = _doc(_loss_at, f"predicted loss at {label}")
    return out


def _size_for_losses(law: Law, losses: Any) -> dict[str, ParamFn]:
    """For a one-variable law: the size needed to reach each target loss (NaN if never)."""
    if len(law.variables) != 1:
        raise ValueError(f"derived_quantities({law.name!r}): L targets need a one-variable law")
    var = law.variables[0]
    out: dict[str, ParamFn] = {}
    for L in _as_list(losses):

        def _needed(p: dict[str, float], L: float = L) -> float:
            return size_for_loss(law, p, L)

        out[f"{var}@loss={_fmt(L)}"] = _doc(_needed, f"{var} needed to reach loss {_fmt(L)} (NaN if never)")
    return out


def derived_quantities(law: str | Law, **targets: Any) -> dict[str, ParamFn]:
    """Named functions of the natural parameters, for point estimates and bootstrap CIs.

    Chinchilla-type laws (chinchilla, data_constrained): ``a`` = β/(α+β) and ``b`` = α/(α+β) (N_opt ∝ C^a,
    D_opt ∝ C^b); with ``C=`` (FLOP, C ≈ 6ND) also ``N_opt@C=…``, ``D_opt@C=…``, ``tokens_per_param@C=…`` and
    ``loss_opt@C=…``. Any law: with a value for each of its variables (``N=``, ``D=``, ``U=``, ``condition=``;
    scalars or equal-length lists) ``loss@…`` is the predicted loss there. One-variable laws: with ``L=`` (or
    ``loss=``) a target loss, ``D@loss=…`` (or ``N@loss=…``) is the data (size) needed to reach it (NaN if
    never).
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
    out: dict[str, ParamFn] = {}
    if {"A", "B", "alpha", "beta"} <= set(law.params):
        out.update(_chinchilla_quantities(targets))
    elif "C" in targets:
        raise ValueError(
            f"derived_quantities({law.name!r}): C targets need a Chinchilla-type law (A, B, alpha, beta)"
        )
    if all(v in targets for v in law.variables):
        out.update(_loss_at_points(law, targets))
    if "L" in targets:
        out.update(_size_for_losses(law, targets["L"]))
    return out


def size_for_loss(law: Law, p: Mapping[str, float], L: float) -> float:
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
