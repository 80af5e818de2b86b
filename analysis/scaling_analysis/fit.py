"""The fitting API in one place: ``from scaling_analysis.fit import fit_law, bootstrap, compare_laws``.

Why a facade: the fitter is split into modules that import one way (laws -> inputs -> objective -> optimize ->
diagnostics -> fitting -> bootstrap / compare), and notebooks, tests and the README import from ``fit``.
This module only re-exports; nothing in the package imports it, so it cannot create an import cycle.
"""

from __future__ import annotations

from .bootstrap import BootstrapResult, bootstrap
from .compare import ComparisonResult, HoldoutResult, compare_laws, holdout_extrapolation
from .derived import derived_quantities
from .diagnostics import FLAT_RTOL, OPTIMUM_RTOL, sandwich_covariance
from .fitting import FitResult, fit_law
from .objective import FitProblem, fit_metrics, huber, huber_grad, objective
from .optimize import batched_bfgs, numerical_hessian, resolve_n_jobs, run_batched

__all__ = [
    "FLAT_RTOL",
    "OPTIMUM_RTOL",
    "BootstrapResult",
    "ComparisonResult",
    "FitProblem",
    "FitResult",
    "HoldoutResult",
    "batched_bfgs",
    "bootstrap",
    "compare_laws",
    "derived_quantities",
    "fit_law",
    "fit_metrics",
    "holdout_extrapolation",
    "huber",
    "huber_grad",
    "numerical_hessian",
    "objective",
    "resolve_n_jobs",
    "run_batched",
    "sandwich_covariance",
]
