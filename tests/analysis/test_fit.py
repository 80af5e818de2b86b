"""Fitter on synthetic data with known parameters: exact recovery, recovery within bootstrap CIs, diagnostics,
held-out extrapolation, law comparison, derived quantities, serialisation."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scaling_analysis.engine import (
    BootstrapResult,
    FitResult,
    bootstrap,
    compare_laws,
    derived_quantities,
    fit_law,
    fit_metrics,
    holdout_extrapolation,
    huber,
    huber_grad,
    objective,
)
from scaling_analysis.engine.laws import effective_data_law, get_law

SAT_TRUE = {"E": 1.7, "B": 400.0, "beta": 0.3}
CHIN_TRUE = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}
BNSL_TRUE = {"E": 1.5, "B": 20.0, "c0": 0.05, "c1": 0.35, "d1": 3e5, "f1": 0.5}


def _sat_data(noise: float = 0.0, seeds: int = 1, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    D = np.repeat(np.geomspace(1e6, 1e10, 12), seeds)
    L = get_law("saturating_power_D").predict(SAT_TRUE, {"D": D})
    return pd.DataFrame(
        {"D": D, "loss": L * np.exp(rng.normal(0, noise, D.size)), "seed": np.tile(range(seeds), 12)}
    )


def _chin_data(noise: float = 0.0, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    N, D = np.meshgrid(np.geomspace(7e7, 1.6e10, 6), np.geomspace(5e9, 5e11, 8))
    N, D = N.ravel(), D.ravel()
    L = get_law("chinchilla").predict(CHIN_TRUE, {"N": N, "D": D})
    return pd.DataFrame({"N": N, "D": D, "loss": L * np.exp(rng.normal(0, noise, N.size))})


def _bnsl_data(noise: float = 0.0, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    D = np.geomspace(1e3, 1e9, 25)
    L = get_law("broken_power_D").predict(BNSL_TRUE, {"D": D})
    return pd.DataFrame({"D": D, "loss": L * np.exp(rng.normal(0, noise, D.size))})


def _rel(a: dict, b: dict) -> dict:
    return {k: abs(a[k] / b[k] - 1) for k in b}


# ---------------------------------------------------------------------------------------------- objective


def test_huber_is_quadratic_inside_and_linear_outside():
    r = np.array([-3e-3, -1e-3, -2e-4, 0.0, 5e-4, 1e-3, 2e-2])
    d = 1e-3
    want = np.where(np.abs(r) <= d, 0.5 * r**2, d * (np.abs(r) - 0.5 * d))
    np.testing.assert_allclose(huber(r, d), want, rtol=0, atol=1e-20)
    np.testing.assert_allclose(huber_grad(r, d), np.clip(r, -d, d))
    assert huber(0.01, 1e-3) == pytest.approx(1e-3 * (0.01 - 5e-4))


def test_objective_is_the_summed_huber_of_log_residuals():
    df = _sat_data(noise=0.01, seeds=2)
    p = {"E": 1.6, "B": 350.0, "beta": 0.29}
    pred = 1.6 + 350.0 * df["D"].to_numpy() ** -0.29
    want = np.sum(huber(np.log(pred) - np.log(df["loss"].to_numpy()), 1e-3))
    assert objective("saturating_power_D", p, df) == pytest.approx(want, rel=1e-12)
    assert objective("saturating_power_D", p, df, huber_delta=0.1) == pytest.approx(
        np.sum(huber(np.log(pred) - np.log(df["loss"].to_numpy()), 0.1)), rel=1e-12
    )


# ---------------------------------------------------------------------------------------------- exact
# recovery


@pytest.mark.parametrize(
    ("law", "make", "truth"),
    [
        ("saturating_power_D", lambda: _sat_data(), SAT_TRUE),
        ("chinchilla", lambda: _chin_data(), CHIN_TRUE),
        ("broken_power_D", lambda: _bnsl_data(), BNSL_TRUE),
    ],
)
def test_noise_free_data_recover_the_parameters(law, make, truth):
    fit = fit_law(law, make())
    assert fit.converged and fit.grad_norm < 1e-9
    assert max(_rel(fit.params, truth).values()) < 1e-6, fit.params
    assert fit.objective < 1e-18
    assert fit.frac_starts_at_optimum > 0.05
    assert not [w for w in fit.warnings if "collapsed" in w or "not converged" in w]


def test_chinchilla_default_starts_are_the_4500_point_grid():
    fit = fit_law("chinchilla", _chin_data())
    assert fit.n_starts == 4500
    assert fit.diagnostics["starts"]["kind"].startswith("grid (Hoffmann")
    assert fit.diagnostics["n_starts_unfinished"] == 0


# ---------------------------------------------------------------------------------------------- noisy
# recovery


def test_noisy_saturating_bootstrap_cis_cover_the_truth():
    # a 95% interval misses the truth 1 time in 20, so check coverage over 12 independent noisy data sets
    # (an offline run over 40 data sets gave coverage E 1.00, B 0.95, beta 0.975). Row resampling: with 3
    # seeds per size the default draws runs within sizes (see bootstrap._within_cell_scale for its coverage)
    hits = dict.fromkeys(SAT_TRUE, 0)
    widths = []
    for s in range(12):
        df = _sat_data(noise=0.01, seeds=3, seed=s)
        fit = fit_law("saturating_power_D", df)
        boot = bootstrap(fit, df, n_resamples=100, seed=s, n_jobs=1, resample="rows")
        assert boot.n_failed == 0
        for p, v in SAT_TRUE.items():
            lo, hi = boot.intervals[p]
            hits[p] += lo <= v <= hi
        widths.append(boot.intervals["beta"][1] - boot.intervals["beta"][0])
    assert all(h >= 10 for h in hits.values()), hits
    assert np.median(widths) < 0.1  # informative, not just wide


def test_noisy_chinchilla_truth_inside_bootstrap_cis():
    df = _chin_data(noise=0.01, seed=3)
    fit = fit_law("chinchilla", df)
    boot = bootstrap(fit, df, n_resamples=200, seed=0, n_jobs=1, derived=derived_quantities("chinchilla"))
    assert boot.n_failed == 0
    for p, v in CHIN_TRUE.items():
        lo, hi = boot.intervals[p]
        assert lo <= v <= hi, (p, v, boot.intervals[p])
    a_true = CHIN_TRUE["beta"] / (CHIN_TRUE["alpha"] + CHIN_TRUE["beta"])
    assert boot.intervals["a"][0] <= a_true <= boot.intervals["a"][1]


def test_noisy_broken_power_law_truth_inside_bootstrap_cis():
    df = _bnsl_data(noise=0.003, seed=5)
    fit = fit_law("broken_power_D", df)
    boot = bootstrap(fit, df, n_resamples=200, seed=0, n_jobs=1)
    for p in ("E", "c0", "c1", "d1"):
        lo, hi = boot.intervals[p]
        assert lo <= BNSL_TRUE[p] <= hi, (p, BNSL_TRUE[p], boot.intervals[p])


# ---------------------------------------------------------------------------------------------- options


def test_fixed_parameters_are_held_and_recorded():
    df = _chin_data(noise=0.005, seed=2)
    fit = fit_law("chinchilla", df, fixed={"E": 1.69})
    assert fit.params["E"] == 1.69 and fit.fixed == {"E": 1.69}
    assert fit.n_starts == 900  # Hoffmann's grid without its 5 e-values
    assert abs(fit.params["alpha"] - 0.34) < 0.03 and abs(fit.params["beta"] - 0.28) < 0.03
    with pytest.raises(ValueError, match="unknown parameters"):
        fit_law("chinchilla", df, fixed={"gamma": 1.0})


def test_start_specifications_agree():
    df = _sat_data()
    by_array = fit_law("saturating_power_D", df, starts=np.array([[1.0, 100.0, 0.5], [0.5, 1000.0, 0.2]]))
    by_map = fit_law("saturating_power_D", df, starts={"E": [1.0, 0.5], "B": [100.0], "beta": [0.5]})
    by_frame = fit_law(
        "saturating_power_D", df, starts=pd.DataFrame({"E": [1.0], "B": [100.0], "beta": [0.5]})
    )
    by_int = fit_law("saturating_power_D", df, starts=20)
    for f in (by_array, by_map, by_frame, by_int):
        assert f.params == pytest.approx(SAT_TRUE, rel=1e-6)
    assert by_array.n_starts == 2 and by_map.n_starts == 2 and by_int.n_starts == 20
    with pytest.raises(ValueError, match="starts="):
        fit_law("saturating_power_D", df, starts="random")


def test_variable_mapping_predict_and_parallel_determinism():
    df = _chin_data(noise=0.005, seed=4).rename(columns={"N": "params", "D": "tokens", "loss": "val"})
    fit1 = fit_law("chinchilla", df, loss="val", variables={"N": "params", "D": "tokens"}, starts=200)
    fit2 = fit_law(
        "chinchilla", df, loss="val", variables={"N": "params", "D": "tokens"}, starts=200, n_jobs=2
    )
    assert fit1.params == fit2.params and fit1.frac_starts_at_optimum == fit2.frac_starts_at_optimum
    assert fit1.variables == {"N": "params", "D": "tokens"} and fit1.loss_column == "val"
    np.testing.assert_allclose(
        fit1.predict(df), get_law("chinchilla").predict(fit1.params, {"N": df.params, "D": df.tokens})
    )
    np.testing.assert_allclose(fit1.predict({"N": df.params, "D": df.tokens}), fit1.predict(df))
    with pytest.raises(ValueError, match="not in the DataFrame"):
        fit_law("chinchilla", df, loss="val")


def test_invalid_data_is_rejected_not_dropped():
    df = _sat_data()
    bad = df.copy()
    bad.loc[3, "loss"] = np.nan
    with pytest.raises(ValueError, match="finite and > 0"):
        fit_law("saturating_power_D", bad)
    bad = df.copy()
    bad.loc[0, "D"] = 0.0
    with pytest.raises(ValueError, match="finite and > 0"):
        fit_law("saturating_power_D", bad)


def test_to_dict_is_strict_json_and_keeps_full_precision():
    df = _sat_data(noise=0.01, seeds=2)
    fit = fit_law("saturating_power_D", df, preprocessing={"rules": ["none"]})
    d = json.loads(json.dumps(fit.to_dict(), allow_nan=False))
    assert d["params"]["beta"] == fit.params["beta"]  # not rounded
    for key in (
        "grad_norm",
        "frac_starts_at_optimum",
        "warnings",
        "n_starts",
        "huber_delta",
        "preprocessing",
        "diagnostics",
    ):
        assert key in d
    assert d["preprocessing"] == {"rules": ["none"]}
    assert isinstance(fit, FitResult) and fit.formula == "L(D) = E + B·D^(−β)"


def test_preprocessing_defaults_to_the_tables_record():
    df = _sat_data()
    df.attrs["preprocessing"] = {"source": "synthetic", "steps": [{"rule": "drop nothing"}]}
    assert fit_law("saturating_power_D", df).preprocessing == df.attrs["preprocessing"]


# ---------------------------------------------------------------------------------------------- diagnostics


def test_pure_power_law_data_collapse_the_asymptote_and_are_flagged():
    D = np.geomspace(1e5, 1e9, 10)
    df = pd.DataFrame({"D": D, "loss": (5.4e13 / D) ** 0.095})  # Kaplan: no irreducible term
    fit = fit_law("saturating_power_D", df)
    assert fit.params["E"] < 1e-3
    assert "asymptote_collapse" in fit.diagnostics["flags"]
    assert any("collapsed" in w for w in fit.warnings)


def test_few_points_and_few_values_are_flagged():
    df = _sat_data().iloc[:5]
    fit = fit_law("saturating_power_D", df)
    assert "few_points" in fit.diagnostics["flags"]
    df2 = _chin_data()
    df2 = df2[df2["N"].isin(sorted(df2["N"].unique())[:2])]
    fit2 = fit_law("chinchilla", df2, starts=100)
    assert "few_values" in fit2.diagnostics["flags"]


def test_approximate_standard_errors_track_the_bootstrap():
    df = _chin_data(noise=0.01, seed=3)
    fit = fit_law("chinchilla", df)
    boot = bootstrap(fit, df, n_resamples=200, seed=1, n_jobs=1)
    for p in ("E", "alpha", "beta"):
        ratio = fit.std_errors_approx[p] / boot.std_errors[p]
        assert 0.33 < ratio < 3.0, (p, ratio)


# ---------------------------------------------------------------------------------------------- bootstrap


def test_bootstrap_is_reproducible_and_parallel_safe():
    df = _sat_data(noise=0.01, seeds=2, seed=3)
    fit = fit_law("saturating_power_D", df)
    derived = derived_quantities("saturating_power_D", D=1e11, L=1.9)
    b1 = bootstrap(fit, df, n_resamples=60, seed=7, n_jobs=1, derived=derived, chunk_size=16)
    b2 = bootstrap(fit, df, n_resamples=60, seed=7, n_jobs=2, derived=derived, chunk_size=16)
    pd.testing.assert_frame_equal(b1.samples, b2.samples)
    assert isinstance(b1, BootstrapResult) and len(b1.samples) == 60
    assert set(b1.intervals) == {"E", "B", "beta", "loss@D=1e+11", "D@loss=1.9"}
    json.dumps(b1.to_dict(), allow_nan=False)
    b3 = bootstrap(fit, df, n_resamples=60, seed=8, n_jobs=1)
    assert not b3.samples["beta"].equals(b1.samples["beta"])


def test_stratified_bootstrap_for_categorical_conditions():
    # (offline: this design covered k_hq = 2.5 in 30 of 30 noisy data sets)
    rng = np.random.default_rng(0)
    law = effective_data_law(["base", "hq"])
    D = np.tile(np.geomspace(1e6, 1e9, 12), 2)
    cond = np.repeat(["base", "hq"], 12)
    truth = {"E": 1.6, "B": 60.0, "beta": 0.25, "k_hq": 2.5}
    L = law.predict(truth, {"D": D, "condition": cond}) * np.exp(rng.normal(0, 0.005, D.size))
    df = pd.DataFrame({"D": D, "condition": cond, "loss": L})
    fit = fit_law("effective_data", df)
    assert fit.params["k_hq"] == pytest.approx(2.5, rel=0.1)
    assert fit.diagnostics["reference_level"] == "base"
    boot = bootstrap(fit, df, n_resamples=100, seed=0, n_jobs=1)
    assert boot.stratified_by == "condition" and boot.n_failed == 0
    assert boot.intervals["k_hq"][0] <= 2.5 <= boot.intervals["k_hq"][1]
    # every resample keeps each condition's run count (resampling within levels)
    assert np.all(np.isfinite(boot.samples["k_hq"]))


def test_derived_quantities_values():
    p = {"E": 1.8172, "A": 482.01, "B": 2085.43, "alpha": 0.3478, "beta": 0.3658}
    dq = derived_quantities("chinchilla", C=5.76e23, N=7e10, D=1.4e12)
    assert dq["a"](p) == pytest.approx(0.3658 / (0.3478 + 0.3658))
    assert dq["b"](p) == pytest.approx(0.3478 / (0.3478 + 0.3658))
    n_opt, d_opt = dq["N_opt@C=5.76e+23"](p), dq["D_opt@C=5.76e+23"](p)
    assert 6 * n_opt * d_opt == pytest.approx(5.76e23, rel=1e-10)
    assert dq["tokens_per_param@C=5.76e+23"](p) == pytest.approx(d_opt / n_opt)
    # the frontier minimises the loss at fixed compute
    L = get_law("chinchilla").predict
    for f in (0.8, 1.25):
        off = L(p, {"N": np.array([n_opt * f]), "D": np.array([d_opt / f])})[0]
        assert off > dq["loss_opt@C=5.76e+23"](p)
    assert dq["loss@N=7e+10,D=1.4e+12"](p) == pytest.approx(
        L(p, {"N": np.array([7e10]), "D": np.array([1.4e12])})[0]
    )
    # one-variable laws: the size needed to reach a loss inverts the prediction
    for name, params in (
        ("saturating_power_D", SAT_TRUE),
        ("broken_power_D", BNSL_TRUE),
        ("kaplan_D", {"D_c": 5.4e13, "alpha_D": 0.095}),
    ):
        dq1 = derived_quantities(name, D=3e7, loss=2.2)
        target = dq1["D@loss=2.2"](params)
        assert get_law(name).predict(params, {"D": np.array([target])})[0] == pytest.approx(2.2, rel=1e-8)
    assert np.isnan(derived_quantities("saturating_power_D", L=1.0)["D@loss=1"](SAT_TRUE))  # below E: never
    with pytest.raises(ValueError, match="unknown targets"):
        derived_quantities("saturating_power_D", N=1e9)


# ---------------------------------------------------------------------------------------------- holdout /
# compare


def _bending_curve(seed: int = 0) -> pd.DataFrame:
    """Small-scale learning curve (8k..256k tokens, 3 seeds) that steepens: a single power law misses
    the end."""
    rng = np.random.default_rng(seed)
    truth = {"E": 1.2, "B": 8.0, "c0": 0.05, "c1": 0.3, "d1": 4e4, "f1": 0.3}
    D = np.repeat(8000 * 2.0 ** np.arange(6), 3)
    L = get_law("broken_power_D").predict(truth, {"D": D}) * np.exp(rng.normal(0, 0.003, D.size))
    return pd.DataFrame({"D": D, "loss": L, "seed": np.tile([0, 1, 2], 6)})


def test_holdout_leaves_out_every_seed_of_the_largest_scale():
    df = _bending_curve()
    ho = holdout_extrapolation("saturating_power_D", df, by="D")
    assert ho.threshold == 256000 and ho.n_test == 3 and ho.n_train == 15
    assert ho.held_out_values == [256000.0] and ho.extrapolation_ratio == pytest.approx(2.0)
    assert set(ho.predictions["seed"]) == {0, 1, 2}
    obs, pred = ho.predictions["observed"].to_numpy(), ho.predictions["predicted"].to_numpy()
    np.testing.assert_allclose(ho.abs_rel_errors, np.abs(pred - obs) / obs)
    assert ho.mape == pytest.approx(np.mean(ho.abs_rel_errors)) and ho.max_are == max(ho.abs_rel_errors)
    assert ho.mape > 0.03  # the plain saturating law misses the bend
    assert ho.fit.preprocessing["holdout"]["n_test"] == 3
    json.dumps(ho.to_dict(), allow_nan=False)
    two = holdout_extrapolation("saturating_power_D", df, by="D", n_holdout_values=2)
    assert two.n_test == 6 and two.threshold == 128000
    with pytest.raises(ValueError, match="n_holdout_values"):
        holdout_extrapolation("saturating_power_D", df, n_holdout_values=6)


def test_compare_laws_trusts_the_form_that_extrapolates():
    df = _bending_curve()
    cmp = compare_laws(df, ["saturating_power_D", "broken_power_D", "kaplan_D"], by="D")
    assert cmp.chosen == "broken_power_D"
    row = cmp.table.set_index("law")
    assert row.loc["broken_power_D", "holdout_mape"] < 0.5 * row.loc["saturating_power_D", "holdout_mape"]
    assert {"n_params", "objective", "holdout_mape", "aic", "bic", "penalised_score", "chosen"} <= set(
        cmp.table.columns
    )
    assert row.loc["kaplan_D", "n_params"] == 2
    assert "broken_power_D" in cmp.reason and "held-out MAPE" in cmp.reason
    assert set(cmp.fits) == set(cmp.holdouts) == {"saturating_power_D", "broken_power_D", "kaplan_D"}
    json.dumps(cmp.to_dict(), allow_nan=False)


def test_compare_laws_prefers_fewer_parameters_on_a_tie():
    # data from the saturating law: the broken law fits as well, so it must not win on held-out error alone
    df = _sat_data(noise=0.002, seeds=2, seed=9)
    cmp = compare_laws(df, ["broken_power_D", "saturating_power_D"], by="D")
    assert cmp.chosen == "saturating_power_D", cmp.reason


def test_fit_metrics_r2_definition():
    df = _sat_data(noise=0.01, seeds=2, seed=2)
    m = fit_metrics("saturating_power_D", SAT_TRUE, df)
    y = df["loss"].to_numpy()
    pred = get_law("saturating_power_D").predict(SAT_TRUE, {"D": df["D"]})
    assert m["r2"] == pytest.approx(1 - np.sum((y - pred) ** 2) / np.sum((y - y.mean()) ** 2))
    assert m["mape"] == pytest.approx(np.mean(np.abs(pred - y) / y))


# ---------------------------------------------------------------------------------------------- every law


def _grid_nd(n_n: int = 5, n_d: int = 6) -> dict[str, np.ndarray]:
    N, D = np.meshgrid(np.geomspace(1e7, 1e10, n_n), np.geomspace(1e8, 1e11, n_d))
    return {"N": N.ravel(), "D": D.ravel()}


@pytest.mark.parametrize(
    ("name", "truth", "X"),
    [
        ("saturating_power_N", {"E": 2.0, "A": 300.0, "alpha": 0.32}, {"N": np.geomspace(1e7, 1e10, 10)}),
        ("kaplan_D", {"D_c": 5.4e13, "alpha_D": 0.095}, {"D": np.geomspace(1e8, 1e11, 8)}),
        ("kaplan_N", {"N_c": 8.8e13, "alpha_N": 0.076}, {"N": np.geomspace(1e7, 1e10, 8)}),
        ("kaplan_ND", {"N_c": 6.4e13, "D_c": 1.8e13, "alpha_N": 0.076, "alpha_D": 0.103}, _grid_nd()),
    ],
)
def test_other_laws_recover_their_own_noise_free_data(name, truth, X):
    law = get_law(name)
    df = pd.DataFrame({**X, "loss": law.predict(truth, X)})
    fit = fit_law(name, df)
    assert fit.converged
    assert max(_rel(fit.params, truth).values()) < 1e-5, fit.params
    np.testing.assert_allclose(fit.predict(df), df["loss"], rtol=1e-9)


def test_data_constrained_stage2_recovers_decay_constants():
    law = get_law("data_constrained")
    base = {"E": 1.87, "A": 520.8, "B": 1487.7, "alpha": 0.3527, "beta": 0.3527}
    truth = {**base, "R_D_star": 15.4, "R_N_star": 5.3}
    rng = np.random.default_rng(0)
    U = np.repeat([1e8, 4e8, 1.5e9], 12)
    D = U * np.tile(np.geomspace(1, 60, 12), 3)
    N = np.exp(rng.uniform(np.log(2e7), np.log(3e9), U.size))
    X = {"N": N, "D": D, "U": U}
    df = pd.DataFrame({**X, "loss": law.predict(truth, X)})
    fit = fit_law("data_constrained", df, fixed=base)
    assert fit.fixed == base and fit.n_starts == 100
    assert fit.params["R_D_star"] == pytest.approx(15.4, rel=1e-5)
    assert fit.params["R_N_star"] == pytest.approx(5.3, rel=1e-5)
