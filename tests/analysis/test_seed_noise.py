"""Seed noise: per-size spread and the pooled floor, the bootstrap drawing runs within cells when every cell
holds repeats, and the held-out check's bias (mean signed error) next to MAPE and max error."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scaling_analysis.engine import bootstrap, fit_law, holdout_extrapolation
from scaling_analysis.engine.laws import get_law
from scaling_analysis.engine.noise import seed_noise, seed_noise_floor

TRUTH = {"E": 1.7, "B": 400.0, "beta": 0.3}


def _runs(seeds: int, noise: float = 0.01, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    D = np.repeat(np.geomspace(1e6, 1e10, 8), seeds)
    loss = get_law("saturating_power_D").predict(TRUTH, {"D": D}) * np.exp(rng.normal(0, noise, D.size))
    return pd.DataFrame({"D": D, "loss": loss, "seed": np.tile(range(seeds), 8)})


def test_per_size_spread_and_pooled_floor():
    df = pd.DataFrame(
        {"U": [1, 1, 1, 2, 2, 3], "loss": [4.0, 5.0, 6.0, 3.0, 3.5, 2.0], "seed": [0, 1, 2, 0, 1, 0]}
    )
    per = seed_noise(df, ["U"]).set_index("U")
    assert per["n"].tolist() == [3, 2, 1]
    assert per.loc[1, "mean"] == 5.0 and per.loc[1, "std"] == pytest.approx(1.0)
    assert per.loc[2, "rel_spread"] == pytest.approx(np.std([3.0, 3.5], ddof=1) / 3.25)
    assert math.isnan(per.loc[3, "std"])
    floor = seed_noise_floor(df, ["U"])
    want = math.sqrt((2 * 0.2**2 + 1 * per.loc[2, "rel_spread"] ** 2) / 3)  # weights: n - 1
    assert floor["floor"] == pytest.approx(want) and floor["n_cells_with_repeats"] == 2
    assert floor["max_rel_spread"] == pytest.approx(0.2)
    assert math.isnan(seed_noise_floor(df[df["seed"] == 0], ["U"])["floor"])  # no repeats: nothing measured
    with pytest.raises(ValueError, match="not in the table"):
        seed_noise(df, ["N"])


def test_floor_recovers_the_noise_of_synthetic_seeds():
    floor = seed_noise_floor(_runs(seeds=4, noise=0.01), ["D"])["floor"]
    assert floor == pytest.approx(0.01, rel=0.3)


def test_bootstrap_draws_runs_within_cells_when_every_cell_repeats():
    df = _runs(seeds=3)
    fit = fit_law("saturating_power_D", df)
    boot = bootstrap(fit, df, n_resamples=40, seed=0, n_jobs=1)
    assert boot.resampled == "runs within cells" and boot.stratified_by == "D" and boot.n_failed == 0
    assert boot.to_dict()["resampled"] == "runs within cells"
    assert boot.within_cell_scale == pytest.approx(math.sqrt(24 / (24 - 8)))  # 3 runs in each of 8 cells
    # every draw keeps 3 runs at each of the 8 sizes, so every size stays in every resample
    from scaling_analysis.engine.bootstrap import _problem_of, _resample_weights, _rescaled, _strata

    problem, _, y = _problem_of(fit, df)
    strata, _, _ = _strata(problem, fit, "auto")
    W = _resample_weights(len(y), 50, np.random.default_rng(0), strata)
    per_cell = np.stack([W[:, strata == c].sum(axis=1) for c in np.unique(strata)], axis=1)
    assert np.all(per_cell == 3)
    rows = bootstrap(fit, df, n_resamples=40, seed=0, n_jobs=1, resample="rows")
    assert rows.resampled == "rows" and rows.stratified_by is None and rows.within_cell_scale == 1.0
    # the rescaling moves each refit away from the point estimate in theta (log B, not B)
    z_hat = np.array([0.5, 6.0, 0.3])
    Z = np.array([[0.6, 5.0, 0.31], [np.nan, 6.0, 0.3]])
    moved, _, _ = _rescaled((Z, np.zeros(2), np.zeros(2)), z_hat, 2.0)
    np.testing.assert_allclose(moved[0], [0.7, 4.0, 0.32])
    assert np.isnan(moved[1, 0])
    # two seeds per size are too coarse to draw within (see MIN_RUNS_PER_CELL), and so is one size with a
    # single run: "auto" falls back to rows
    two = _runs(seeds=2)
    fit2 = fit_law("saturating_power_D", two)
    assert bootstrap(fit2, two, n_resamples=5, seed=0, n_jobs=1).resampled == "rows"
    assert bootstrap(fit2, two, n_resamples=5, seed=0, n_jobs=1, resample="cells").within_cell_scale == 2**0.5
    single = df.drop(index=df.index[(df["D"] == df["D"].max()) & (df["seed"] > 0)])
    fit1 = fit_law("saturating_power_D", single)
    assert bootstrap(fit1, single, n_resamples=5, seed=0, n_jobs=1).resampled == "rows"
    with pytest.raises(ValueError, match="resample="):
        bootstrap(fit, df, n_resamples=5, resample="seeds")


def test_held_out_check_reports_bias_next_to_mape():
    df = _runs(seeds=2, noise=0.002)
    ho = holdout_extrapolation("kaplan_D", df, by="D")  # no asymptote: the pure power law under-predicts
    obs, pred = ho.predictions["observed"].to_numpy(), ho.predictions["predicted"].to_numpy()
    assert ho.bias == pytest.approx(np.mean((pred - obs) / obs))
    assert ho.bias < 0 and ho.mape == pytest.approx(abs(ho.bias)) and ho.to_dict()["bias"] == ho.bias
