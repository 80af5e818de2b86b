"""Refuse what cannot be fitted: say why in one line, and what would fix it.

Why: a multi-start optimiser always returns *some* optimum. On one row, on a constant loss or on a scaling
variable that never varies, that optimum is arbitrary (α = −0.02 from a single point), and printing it is a
confident wrong number. These checks run before any fit; ``force=True`` (CLI ``--force``) fits anyway and the
result is marked as forced in its warnings, diagnostics and report.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from .laws import Law

#: Added to every refusal so the reader knows the escape hatch.
FORCE_HINT = "(pass --force / force=True to fit anyway; the output is then marked as forced)"


class UnfittableError(ValueError):
    """The table cannot identify the law; the one-line message says why and what would fix it."""


def _fmt(value: float) -> str:
    return f"{value:.6g}"


def constant_variables(law: Law, X: Mapping[str, np.ndarray], mapping: Mapping[str, str]) -> list[str]:
    """One message per numeric law variable that takes a single value in every row."""
    out = []
    for v in law.variables:
        if v in law.categorical or len(X[v]) == 0:
            continue
        values = np.unique(X[v])
        if values.size == 1:
            out.append(
                f"column {mapping.get(v, v)!r} (law variable {v}) is {_fmt(values[0])} in all {len(X[v])} "
                "rows, "
                f"so its exponent cannot be fitted: vary it, or fit a law without {v}"
            )
    return out


def distinct_points(X: Mapping[str, np.ndarray]) -> int:
    """Distinct combinations of the law's variables (seeds and repeats aside)."""
    if not X:
        return 0
    stacked = np.column_stack([np.asarray(a, dtype=float) for a in X.values()])
    return int(np.unique(stacked, axis=0).shape[0]) if len(stacked) else 0


def fit_problems(
    law: Law, X: Mapping[str, np.ndarray], y: np.ndarray, mapping: Mapping[str, str], n_free: int, loss: str
) -> list[str]:
    """Why ``law`` cannot be fitted to these rows (empty when it can)."""
    if len(y) == 0:
        return [f"no rows with a finite {loss!r} to fit: check the loss column mapping"]
    problems = constant_variables(law, X, mapping)
    if np.unique(y).size == 1:
        problems.append(
            f"all {len(y)} values of {loss!r} equal {_fmt(y[0])}, so there is no trend to fit: check that "
            "the loss column is the right one"
        )
    n_points = distinct_points(X)
    if n_points < n_free:
        columns = ", ".join(mapping.get(v, v) for v in law.variables)
        problems.append(
            f"{n_points} distinct ({columns}) point(s) for the {n_free} free parameters of {law.name!r}: add "
            "runs "
            "at other sizes, fix parameters (fixed=...), or fit a law with fewer parameters"
        )
    return problems


def refusal(law: Law, problems: list[str]) -> UnfittableError:
    """The one-line error for ``problems``."""
    return UnfittableError(f"cannot fit {law.name!r}: " + "; ".join(problems) + " " + FORCE_HINT)


def forced_warning(problems: list[str]) -> tuple[str, str]:
    """The (flag, message) a forced fit carries."""
    return (
        "forced",
        "FORCED: fitted although "
        + "; ".join(problems)
        + "; the parameters are not identified by these data "
        "and must not be interpreted",
    )
