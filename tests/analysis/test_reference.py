"""Validation against published fits of public per-run data (../shared/reference; see
shared/notes/scaling-fits.md).

(a) Epoch AI's refit of Chinchilla (Besiroglu et al. 2024): 4,500-start grid optimum, bootstrap SEs and CIs,
    held-out extrapolation in compute.
(b) datablations (Muennighoff et al. 2023): the stage-2 data-constrained fit with the stage-1 base frozen.
(c) (Mis)Fitting OpenLM grid (Li et al. 2025): min over the learning-rate sweep first; N definition changes E.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scaling_analysis.engine import (
    bootstrap,
    derived_quantities,
    fit_law,
    fit_metrics,
    holdout_extrapolation,
    objective,
)

REPO = Path(__file__).resolve().parents[2]
REFERENCE = Path(os.environ.get("DATASCALE_SHARED", REPO.parent / "shared")) / "reference"


def _read(name: str) -> pd.DataFrame:
    path = REFERENCE / name
    if not path.exists():
        pytest.skip(f"reference data not found at {path}; CI provides ../shared")
    return pd.read_csv(path)


# ============================================================================ (a) Epoch / Chinchilla


def _epoch_points(drop_outliers: bool = True) -> pd.DataFrame:
    raw = _read("epoch_chinchilla_svg_extracted_data.csv")
    df = pd.DataFrame({"N": raw["Model Size"], "C": raw["Training FLOP"], "loss": raw["loss"]})
    df["D"] = df["C"] / (6 * df["N"])  # Epoch's definition of tokens
    if drop_outliers:
        cut = sorted(df["loss"])[-5]  # Epoch: keep loss < sorted(loss)[-5]  (cut-off 3.4470)
        df = df[df["loss"] < cut].reset_index(drop=True)
    df.attrs["preprocessing"] = {
        "source": "epoch_chinchilla_svg_extracted_data.csv",
        "tokens": "D = C / (6 N)",
        "exclusions": "5 highest losses dropped (loss < sorted(loss)[-5])" if drop_outliers else "none",
    }
    return df


@pytest.fixture(scope="module")
def epoch_fit():
    df = _epoch_points()
    return df, fit_law("chinchilla", df)


# Epoch notebook cell 18 (grid L-BFGS-B, summed Huber) and the independent reproduction in the notes
EPOCH_GRID = {"A": 477.84, "B": 2143.86, "E": 1.81724, "alpha": 0.347313, "beta": 0.367183}
EPOCH_GRID_OBJECTIVE = 0.00101827403
# Epoch paper Table 1 (Huber-likelihood BFGS fit) with its standard errors
EPOCH_PUBLISHED = {"E": 1.8172, "A": 482.01, "B": 2085.43, "alpha": 0.3478, "beta": 0.3658}
EPOCH_SE = {"E": 0.03, "A": 124.58, "B": 1293.23, "alpha": 0.02, "beta": 0.02}
EPOCH_BOOT_SE = {"E": 0.0257, "alpha": 0.0154, "beta": 0.0206}  # notebook cell 25
EPOCH_BOOT_CI = {"E": (1.769, 1.871), "alpha": (0.317, 0.373), "beta": (0.331, 0.415)}  # notebook cell 26


def test_epoch_grid_fit_reproduces_the_published_optimum(epoch_fit):
    _, fit = epoch_fit
    assert fit.n_points == 240 and fit.n_starts == 4500
    assert fit.objective == pytest.approx(EPOCH_GRID_OBJECTIVE, rel=1e-7)
    for p, v in EPOCH_GRID.items():
        assert fit.params[p] == pytest.approx(v, rel=1e-3), p
    # within one published standard error of Epoch's point estimate
    for p, v in EPOCH_PUBLISHED.items():
        assert abs(fit.params[p] - v) <= EPOCH_SE[p], p
    assert fit.converged and fit.grad_norm < 1e-10
    # a large share of the grid reaches the optimum, but far from all (notes: 33.8% with per-start L-BFGS-B)
    assert 0.25 < fit.frac_starts_at_optimum < 0.75
    # interior optimum (inside Hoffmann's grid), nothing degenerate; at most A/B flagged as weakly identified
    # (their bootstrap SEs are 25% and 60-70% of their values)
    assert set(fit.diagnostics["flags"]) <= {"weakly_identified"}
    assert not any(p in w for w in fit.warnings for p in ("E (", "alpha (", "beta ("))
    # in-sample quality as in the notes: RMSE 0.0218, MAPE 0.47%
    assert fit.metrics["rmse"] == pytest.approx(0.0218, abs=5e-4)
    assert fit.metrics["mape"] == pytest.approx(0.0047, abs=2e-4)
    assert fit.preprocessing["exclusions"].startswith("5 highest losses")


def test_epoch_published_and_chinchilla_parameters_score_worse(epoch_fit):
    df, fit = epoch_fit
    # Epoch's Table 1 values (a Huber-likelihood fit, rounded) are close to but above the grid optimum
    # (the notes quote 0.0010215; the rounded Table 1 values give 0.0010228 and notebook cell 25's 0.0010187)
    assert fit.objective < objective("chinchilla", EPOCH_PUBLISHED, df) < 1.005 * fit.objective
    # notes: Huber sums 0.0012312 (Chinchilla unrounded) and 0.0041210 (rounded);
    # mean residual +0.0086 / −0.045
    unrounded = {
        "E": np.exp(0.5267228),
        "A": np.exp(6.0073404),
        "B": np.exp(6.0179186),
        "alpha": 0.33917084,
        "beta": 0.2849083,
    }
    rounded = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}
    assert objective("chinchilla", unrounded, df) == pytest.approx(0.0012312, rel=2e-4)
    assert objective("chinchilla", rounded, df) == pytest.approx(0.0041210, rel=2e-4)
    law = fit.bound_law
    for params, mean_resid in ((unrounded, 0.0086), (rounded, -0.045)):
        resid = df["loss"].to_numpy() - law.predict(params, df)
        assert resid.mean() == pytest.approx(mean_resid, abs=1e-3)


def test_epoch_bootstrap_matches_published_uncertainty(epoch_fit):
    df, fit = epoch_fit
    boot = bootstrap(
        fit, df, n_resamples=1000, seed=0, n_jobs=-1, derived=derived_quantities("chinchilla", C=5.76e23)
    )
    assert boot.n_resamples == 1000 and boot.n_failed == 0
    for p, se in EPOCH_BOOT_SE.items():
        assert boot.std_errors[p] == pytest.approx(se, rel=0.25), p
    for p, (lo, hi) in EPOCH_BOOT_CI.items():
        mlo, mhi = boot.intervals[p]
        assert mlo < hi and lo < mhi, p  # overlap
        assert abs(mlo - lo) < 0.5 * (hi - lo) and abs(mhi - hi) < 0.5 * (hi - lo), p  # and similar bounds
    # derived quantities: a = β/(α+β) = 0.513 (SE 0.020); tokens per parameter at 5.76e23 FLOP ≈ 17.9
    assert boot.point["a"] == pytest.approx(0.513, abs=2e-3)
    assert boot.std_errors["a"] == pytest.approx(0.020, rel=0.25)
    assert boot.point["tokens_per_param@C=5.76e+23"] == pytest.approx(17.9, abs=0.1)
    lo, hi = boot.intervals["tokens_per_param@C=5.76e+23"]
    assert lo < 17.9 < hi and hi > 20  # Approaches 1 and 2 imply about 20: within the interval


def test_epoch_holdout_extrapolation_in_compute():
    # notes: train on C < 3e20 (177 points), predict the 63 points up to 1.3e22 FLOP: MAPE 1.00%, max ARE 4.1%
    df = _epoch_points()
    n_hold = int((np.unique(df["C"]) >= 3e20).sum())
    ho = holdout_extrapolation("chinchilla", df, by="C", n_holdout_values=n_hold)
    assert ho.n_train == 177 and ho.n_test == 63
    assert ho.mape == pytest.approx(0.0100, abs=0.002)
    assert ho.max_are == pytest.approx(0.041, abs=0.005)


@pytest.mark.slow
def test_epoch_all_245_points_without_the_outlier_rule():
    # notes [ours]: A=495.7, B=12,846, E=1.8913, α=0.3493, β=0.4530: five outliers move β by +0.086
    fit = fit_law("chinchilla", _epoch_points(drop_outliers=False))
    want = {"A": 495.7, "B": 12846.0, "E": 1.8913, "alpha": 0.3493, "beta": 0.4530}
    for p, v in want.items():
        assert fit.params[p] == pytest.approx(v, rel=2e-3), p


# ============================================================================ (b) datablations


def _datablations() -> pd.DataFrame:
    raw = _read("datablations_c4_fit_set_182.csv")
    return raw.rename(
        columns={"params_N": "N", "tokens_D": "D", "unique_tokens_U": "U", "val_loss_nats": "loss"}
    )


# stage-1 base law (alpha = beta tied), frozen in stage 2
STAGE1 = {
    "E": np.exp(0.6254804),
    "A": np.exp(6.255414),
    "B": np.exp(7.3049974),
    "alpha": 0.3526596,
    "beta": 0.3526596,
}
PUBLISHED_R = {"R_D_star": 15.387756, "R_N_star": 5.309743}


def test_datablations_published_point_objective_and_r2():
    df = _datablations()
    assert len(df) == 182
    params = {**STAGE1, **PUBLISHED_R}
    assert objective("data_constrained", params, df) == pytest.approx(0.0158259, rel=1e-5)
    # datablations R²: on the loss itself, 1 − SS_res/SS_tot
    assert fit_metrics("data_constrained", params, df)["r2"] == pytest.approx(0.7722, abs=5e-4)
    assert fit_metrics("chinchilla", STAGE1, df)["r2"] == pytest.approx(0.4452, abs=5e-4)


def test_datablations_stage2_fit_from_the_published_grid():
    df = _datablations()
    fit = fit_law(
        "data_constrained",
        df,
        fixed=STAGE1,
        starts={"R_D_star": [0, 6.67, 13.3, 20], "R_N_star": [0, 6.67, 13.3, 20]},
    )
    assert fit.n_starts == 16 and set(fit.fixed) == set(STAGE1)
    assert fit.objective <= 0.0158259 + 1e-9
    assert fit.metrics["r2"] >= 0.7722 - 5e-4
    # the published basin (15.39, 5.31) is among the distinct optima the grid reaches
    assert any(
        abs(o["params"]["R_D_star"] / 15.387756 - 1) < 0.01
        and abs(o["params"]["R_N_star"] / 5.309743 - 1) < 0.01
        for o in fit.diagnostics["optima"]
    )
    # the landscape is flat and multi-modal: this must be reported, not hidden
    assert {"flat_objective", "weakly_identified"} & set(fit.diagnostics["flags"])
    assert any("flat objective" in w for w in fit.warnings)


def test_datablations_started_in_the_published_basin_stays_there():
    df = _datablations()
    fit = fit_law("data_constrained", df, fixed=STAGE1, starts=pd.DataFrame([PUBLISHED_R]))
    assert fit.params["R_D_star"] == pytest.approx(15.387756, rel=2e-3)
    assert fit.params["R_N_star"] == pytest.approx(5.309743, rel=2e-3)
    assert fit.objective == pytest.approx(0.0158259, rel=1e-5)


def test_datablations_default_grid_finds_the_lower_basin():
    # notes [ours]: a lower basin at R_D* ≈ 95, R_N* ≈ 1.71 with Huber sum 0.0158047 and R² 0.791
    df = _datablations()
    fit = fit_law("data_constrained", df, fixed=STAGE1)
    assert fit.objective == pytest.approx(0.0158047, rel=1e-4)
    assert fit.params["R_D_star"] == pytest.approx(95, rel=0.05)
    assert fit.params["R_N_star"] == pytest.approx(1.71, rel=0.05)
    assert fit.metrics["r2"] == pytest.approx(0.791, abs=1e-3)
    assert "flat_objective" in fit.diagnostics["flags"]


# ============================================================================ (c) (Mis)Fitting OpenLM grid


@pytest.fixture(scope="module")
def openlm_cells() -> pd.DataFrame:
    raw = _read("misfitting_openlm_final_losses.csv")
    assert len(raw) == 261
    # the minimum over the learning-rate sweep per (N, D) cell FIRST: otherwise the fit sees the LR sweep
    best = raw.loc[raw.groupby(["N", "D"])["loss"].idxmin()].reset_index(drop=True)
    best.attrs["preprocessing"] = {
        "source": "misfitting_openlm_final_losses.csv",
        "collapse": "min loss over peak_lr per (N, D) cell",
        "n_rows_raw": len(raw),
        "n_rows": len(best),
    }
    return best


def test_openlm_total_parameters(openlm_cells):
    assert len(openlm_cells) == 81
    fit = fit_law("chinchilla", openlm_cells, variables={"N": "N"})
    assert fit.preprocessing["collapse"] == "min loss over peak_lr per (N, D) cell"
    assert fit.variables == {"N": "N", "D": "D"}
    # exploratory numbers of the notes §4.3 (324-start grid there): α 0.138, β 0.670, E 1.398
    assert fit.params["alpha"] == pytest.approx(0.138, abs=0.01)
    assert fit.params["beta"] == pytest.approx(0.670, abs=0.02)
    assert fit.params["E"] == pytest.approx(1.398, abs=0.05)
    assert "asymptote_collapse" not in fit.diagnostics["flags"]


def test_openlm_non_embedding_parameters_collapse_E_and_are_flagged(openlm_cells):
    fit = fit_law("chinchilla", openlm_cells, variables={"N": "N_no_emb"})
    assert fit.variables["N"] == "N_no_emb"
    assert fit.params["E"] < 1e-3  # notes: E ≈ 1e-73
    assert fit.params["alpha"] == pytest.approx(0.050, abs=0.01)
    assert "asymptote_collapse" in fit.diagnostics["flags"]
    assert any("E collapsed" in w for w in fit.warnings)
