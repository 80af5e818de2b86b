"""Scaling-law fitter speed: Hoffmann's 4,500-start Chinchilla fit on Epoch's 240 points, and a 1,000-resample
bootstrap; targets < 10 s and < 2 min on a 2-core machine.

Also times the straightforward alternative, one scipy L-BFGS-B per start at ftol=1e-15/gtol=1e-12 with an
analytic gradient, on a sample of the grid and extrapolates it to 4,500 starts, so the speed-up is measured
rather than claimed. Reads ``../shared/reference/epoch_chinchilla_svg_extracted_data.csv``
(``DATASCALE_SHARED`` overrides the shared dir); without it, 240 synthetic points with Epoch's fitted
parameters and 1% noise are used (reported).
``python -m bench.bench_fit`` prints the numbers; ``run()`` returns them.
"""

from __future__ import annotations

import argparse
import json
import os
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scaling_analysis.engine import (
    FitProblem,
    bootstrap,
    derived_quantities,
    fit_law,
    get_law,
    resolve_n_jobs,
)
from scipy import optimize

FIT_TARGET_S = 10.0
BOOTSTRAP_TARGET_S = 120.0
REPO = Path(__file__).resolve().parents[1]


def epoch_points() -> tuple[pd.DataFrame, str]:
    """Epoch's 240 points (D = C/6N, 5 highest losses dropped) or a synthetic stand-in of the same shape."""
    path = Path(os.environ.get("DATASCALE_SHARED", REPO.parent / "shared")) / "reference"
    path = path / "epoch_chinchilla_svg_extracted_data.csv"
    if path.exists():
        raw = pd.read_csv(path)
        df = pd.DataFrame({"N": raw["Model Size"], "C": raw["Training FLOP"], "loss": raw["loss"]})
        df["D"] = df["C"] / (6 * df["N"])
        df = df[df["loss"] < sorted(df["loss"])[-5]].reset_index(drop=True)
        return df, str(path)
    rng = np.random.default_rng(0)
    N = np.exp(rng.uniform(np.log(5.7e7), np.log(1.6e10), 240))
    D = np.exp(rng.uniform(np.log(2.5e8), np.log(3.2e11), 240))
    p = {"E": 1.8172, "A": 482.01, "B": 2085.43, "alpha": 0.3478, "beta": 0.3658}
    L = get_law("chinchilla").predict(p, {"N": N, "D": D}) * np.exp(rng.normal(0, 0.01, 240))
    return pd.DataFrame({"N": N, "D": D, "loss": L}), "synthetic (reference data not found)"


def scipy_per_start_baseline(df: pd.DataFrame, n_sample: int = 150) -> dict[str, Any]:
    """Seconds per start of plain per-start L-BFGS-B (tight tolerances, analytic gradient) on a grid
    sample."""
    law = get_law("chinchilla")
    X = law.encode({"N": df["N"].to_numpy(), "D": df["D"].to_numpy()})
    y = df["loss"].to_numpy()
    problem = FitProblem(law, X, np.log(y), 1e-3, np.arange(5), np.zeros(5))
    grid = law.default_starts(X, y)
    pick = np.random.default_rng(0).choice(len(grid), n_sample, replace=False)

    def fun(z: np.ndarray) -> tuple[float, np.ndarray]:
        f, g = problem.fg(z[None, :])
        return float(f[0]), g[0]

    t0 = time.perf_counter()
    best = np.inf
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for i in pick:
            res = optimize.minimize(
                fun,
                grid[i],
                jac=True,
                method="L-BFGS-B",
                options={"ftol": 1e-15, "gtol": 1e-12, "maxiter": 15000},
            )
            best = min(best, float(res.fun))
    per_start = (time.perf_counter() - t0) / n_sample
    return {
        "n_sampled_starts": n_sample,
        "s_per_start": per_start,
        "extrapolated_4500_starts_s": per_start * len(grid),
        "best_objective_in_sample": best,
    }


def run(n_resamples: int = 1000, baseline: bool = True, repeats: int = 2) -> dict[str, Any]:
    df, source = epoch_points()
    out: dict[str, Any] = {"data": source, "n_points": len(df), "cpus": resolve_n_jobs(-1)}
    if hasattr(os, "getloadavg"):
        out["load_average_at_start"] = os.getloadavg()

    for n_jobs in (1, resolve_n_jobs(-1)):
        walls = []
        for _ in range(
            repeats
        ):  # the best of a few runs: the machine is shared, load spikes inflate single runs
            t0 = time.perf_counter()
            fit = fit_law("chinchilla", df, n_jobs=n_jobs)
            walls.append(time.perf_counter() - t0)
        out[f"fit_4500_starts_n_jobs_{n_jobs}_s"] = min(walls)
        out[f"fit_4500_starts_n_jobs_{n_jobs}_all_s"] = walls
        if n_jobs == 1:
            out["fit"] = {
                "objective": fit.objective,
                "params": fit.params,
                "n_starts": fit.n_starts,
                "frac_starts_at_optimum": fit.frac_starts_at_optimum,
                "grad_norm": fit.grad_norm,
                "converged": fit.converged,
                "batched_phase_s": fit.diagnostics["timing_s"]["batched"],
                "polish_s": fit.diagnostics["timing_s"]["polish"],
                "iterations_median": fit.diagnostics["iterations_median"],
                "iterations_max": fit.diagnostics["iterations_max"],
                "n_starts_unfinished": fit.diagnostics["n_starts_unfinished"],
            }
    out["fit_target_s"] = FIT_TARGET_S
    out["fit_meets_target"] = out["fit_4500_starts_n_jobs_1_s"] < FIT_TARGET_S

    t0 = time.perf_counter()
    boot = bootstrap(
        fit, df, n_resamples=n_resamples, seed=0, n_jobs=-1, derived=derived_quantities("chinchilla")
    )
    out["bootstrap_s"] = time.perf_counter() - t0
    out["bootstrap"] = {
        "n_resamples": n_resamples,
        "n_jobs": resolve_n_jobs(-1),
        "n_failed": boot.n_failed,
        "n_not_converged": boot.n_not_converged,
        "starts_per_resample": boot.n_starts_per_resample,
        "std_errors": boot.std_errors,
        "intervals": {k: list(v) for k, v in boot.intervals.items()},
    }
    out["bootstrap_target_s"] = BOOTSTRAP_TARGET_S
    out["bootstrap_meets_target"] = out["bootstrap_s"] < BOOTSTRAP_TARGET_S

    if baseline:
        base = scipy_per_start_baseline(df)
        out["scipy_lbfgsb_per_start"] = base
        out["speedup_vs_scipy_per_start"] = (
            base["extrapolated_4500_starts_s"] / out["fit_4500_starts_n_jobs_1_s"]
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n-resamples", type=int, default=1000)
    parser.add_argument("--no-baseline", action="store_true", help="skip the per-start scipy baseline")
    args = parser.parse_args()
    print(json.dumps(run(args.n_resamples, baseline=not args.no_baseline), indent=2, default=str))


if __name__ == "__main__":
    main()
