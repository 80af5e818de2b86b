"""The fitting engine and its public API: ``from scaling_analysis.engine import fit_law, bootstrap, predict``.

Why a wing: the fitter is pure numerics on a table (no run records, no study steps, no figures), so it imports
nothing from the rest of the package. Inside, modules import one way: laws -> inputs -> loss -> starts ->
optimize -> preflight -> diagnostics -> fit -> derived / bootstrap / compare / sensitivity. This module only
re-exports; no engine module imports it, so it cannot create an import cycle.
"""

from __future__ import annotations

from .bootstrap import BootstrapResult, bootstrap
from .compare import ComparisonResult, HoldoutResult, compare_laws, holdout_extrapolation
from .derived import derived_quantities
from .diagnostics import FLAT_RTOL, OPTIMUM_RTOL, sandwich_covariance
from .fit import FitResult, fit_law, law_of, predict
from .laws import LAWS, Law, get_law, register_law
from .loss import FitProblem, fit_metrics, huber, huber_grad, objective
from .optimize import batched_bfgs, numerical_hessian, resolve_n_jobs, run_batched
from .preflight import UnfittableError

__all__ = [
    "FLAT_RTOL",
    "LAWS",
    "OPTIMUM_RTOL",
    "BootstrapResult",
    "ComparisonResult",
    "FitProblem",
    "FitResult",
    "HoldoutResult",
    "Law",
    "UnfittableError",
    "batched_bfgs",
    "bootstrap",
    "compare_laws",
    "derived_quantities",
    "fit_law",
    "fit_metrics",
    "get_law",
    "holdout_extrapolation",
    "huber",
    "huber_grad",
    "law_of",
    "numerical_hessian",
    "objective",
    "predict",
    "register_law",
    "resolve_n_jobs",
    "run_batched",
    "sandwich_covariance",
]
