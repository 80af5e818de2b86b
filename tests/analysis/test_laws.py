"""Law registry: names, closed forms, analytic Jacobians (vs finite differences), binding, pickling."""

from __future__ import annotations

import pickle
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from jacobians import fd_jacobian
from scaling_analysis.engine.laws import (
    HOFFMANN_GRID,
    LAWS,
    Law,
    effective_data_law,
    get_law,
    register_law,
)

EXPECTED = {
    "saturating_power_D",
    "saturating_power_N",
    "kaplan_D",
    "kaplan_N",
    "kaplan_ND",
    "chinchilla",
    "data_constrained",
    "effective_data",
    "broken_power_D",
}

# a parameter point per law (theta scale) that exercises every branch of its formula
THETAS = {
    "saturating_power_D": [0.5, 5.0, 0.3],
    "saturating_power_N": [0.5, 5.0, 0.3],
    "kaplan_D": [30.0, 0.1],
    "kaplan_N": [30.0, 0.08],
    "kaplan_ND": [30.0, 28.0, 0.076, 0.1],
    "chinchilla": [0.6, 6.0, 7.0, 0.34, 0.36],
    "data_constrained": [0.6, 6.2, 7.3, 0.35, 0.33, np.log(15.0), np.log(5.0)],
    "broken_power_D": [0.3, 4.0, 0.2, 0.3, 20.0, np.log(0.7)],
}


def _inputs(n: int = 40, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = {
        "N": np.exp(rng.uniform(15, 22, n)),
        "D": np.exp(rng.uniform(17, 25, n)),
        "condition": rng.integers(0, 3, n),
    }
    X["U"] = X["D"] / np.exp(rng.uniform(-1, 4, n))  # some rows repeat data (D > U), some do not
    return X


def test_registry_has_every_law_and_rejects_bad_names():
    assert set(LAWS) >= EXPECTED
    with pytest.raises(ValueError, match=r"law='chinchila': must be one of \[") as err:
        get_law("chinchila")
    assert "\n" not in str(err.value) and "chinchilla" in str(err.value)
    assert get_law(LAWS["kaplan_D"]) is LAWS["kaplan_D"]


@pytest.mark.parametrize("name", sorted(THETAS))
def test_analytic_jacobian_matches_finite_differences(name):
    law = get_law(name)
    X = _inputs()
    theta = np.array(THETAS[name], dtype=float)
    lp, jac = law.log_predict(theta[None], X, grad=True)
    assert lp.shape == (1, len(X["D"]))
    J = np.stack([np.broadcast_to(j, lp.shape)[0] for j in jac], axis=1)
    J_fd = fd_jacobian(law, theta, X)
    np.testing.assert_allclose(J, J_fd, rtol=1e-5, atol=1e-7)


def test_effective_data_jacobian_and_levels():
    law = effective_data_law(["base", "hq", "web"])
    X = _inputs()
    theta = np.array([0.5, 5.0, 0.3, np.log(2.0), np.log(0.5)])
    lp, jac = law.log_predict(theta[None], X, grad=True)
    J = np.stack([np.broadcast_to(j, lp.shape)[0] for j in jac], axis=1)
    np.testing.assert_allclose(J, fd_jacobian(law, theta, X), rtol=1e-5, atol=1e-7)
    assert law.params == ("E", "B", "beta", "k_hq", "k_web")


def test_data_constrained_fixture_covers_both_branches():
    # U_N = min(N, N_opt(U_D)): the Jacobian test above must see rows on both sides of the min
    X = _inputs()
    al, be, A, B = 0.35, 0.33, np.exp(6.2), np.exp(7.3)
    n_opt = (al * A / (be * B)) ** (1 / al) * np.minimum(X["U"], X["D"]) ** (be / al)
    assert 0 < np.sum(n_opt < X["N"]) < len(X["N"])
    assert 0 < np.sum(X["D"] > X["U"]) < len(X["D"])


def test_predictions_match_closed_forms():
    X = _inputs()
    N, D, U = X["N"], X["D"], X["U"]
    p = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}
    np.testing.assert_allclose(
        get_law("chinchilla").predict(p, X), 1.69 + 406.4 / N**0.34 + 410.7 / D**0.28, rtol=1e-12
    )
    k = {"N_c": 6.4e13, "D_c": 1.8e13, "alpha_N": 0.076, "alpha_D": 0.103}
    kap = ((k["N_c"] / N) ** (k["alpha_N"] / k["alpha_D"]) + k["D_c"] / D) ** k["alpha_D"]
    np.testing.assert_allclose(get_law("kaplan_ND").predict(k, X), kap, rtol=1e-12)
    np.testing.assert_allclose(
        get_law("kaplan_D").predict({"D_c": 5.4e13, "alpha_D": 0.095}, X), (5.4e13 / D) ** 0.095, rtol=1e-12
    )
    b = {"E": 1.5, "B": 20.0, "c0": 0.05, "c1": 0.35, "d1": 3e5, "f1": 0.5}
    bn = 1.5 + 20.0 * D**-0.05 * (1 + (D / 3e5) ** (1 / 0.5)) ** (-0.35 * 0.5)
    np.testing.assert_allclose(get_law("broken_power_D").predict(b, X), bn, rtol=1e-12)
    s = {"E": 1.2, "B": 300.0, "beta": 0.3}
    np.testing.assert_allclose(get_law("saturating_power_D").predict(s, X), 1.2 + 300.0 * D**-0.3, rtol=1e-12)

    # data-constrained: written out term by term (Muennighoff et al. 2023, datablations README)
    dc = {**p, "alpha": 0.35, "beta": 0.35, "R_D_star": 15.4, "R_N_star": 5.3}
    ud = np.minimum(U, D)
    rd = np.maximum(D / ud - 1, 0)
    dp = ud + ud * 15.4 * (1 - np.exp(-rd / 15.4))
    nopt = (dc["A"] / dc["B"]) ** (1 / 0.35) * ud  # = G² U_D for alpha = beta
    un = np.minimum(N, nopt)
    rn = np.maximum(N / un - 1, 0)
    np_ = un + un * 5.3 * (1 - np.exp(-rn / 5.3))
    want = dc["E"] + dc["A"] / np_**0.35 + dc["B"] / dp**0.35
    np.testing.assert_allclose(get_law("data_constrained").predict(dc, X), want, rtol=1e-10)
    # without repetition (D = U) and with N <= N_opt it is exactly Chinchilla
    X2 = {"N": np.full(5, 1e7), "D": np.geomspace(1e10, 1e11, 5), "U": np.geomspace(1e10, 1e11, 5)}
    np.testing.assert_allclose(
        get_law("data_constrained").predict(dc, X2),
        get_law("chinchilla").predict({k: dc[k] for k in p}, X2),
        rtol=1e-12,
    )


def test_effective_data_multiplier_is_a_data_rescaling():
    law = effective_data_law(["ref", "good"])
    p = {"E": 1.5, "B": 50.0, "beta": 0.3, "k_good": 3.0}
    D = np.geomspace(1e6, 1e9, 4)
    good = law.predict(p, {"D": D, "condition": np.array(["good"] * 4)})
    ref_at_3d = law.predict(p, {"D": 3 * D, "condition": np.array(["ref"] * 4)})
    np.testing.assert_allclose(good, ref_at_3d, rtol=1e-12)
    with pytest.raises(ValueError, match="unknown condition levels"):
        law.predict(p, {"D": D, "condition": np.array(["bad"] * 4)})
    other = effective_data_law(["a", "b", "c"], reference="b")
    assert other.levels[0] == "b" and other.params[3:] == ("k_a", "k_c")
    bound = get_law("effective_data").bind(pd.DataFrame({"D": D, "condition": ["y", "x", "y", "z"]}))
    assert bound.levels == ("x", "y", "z") and bound.params == ("E", "B", "beta", "k_y", "k_z")


def test_theta_round_trip_and_names():
    law = get_law("chinchilla")
    p = {"E": 1.8172, "A": 482.01, "B": 2085.43, "alpha": 0.3478, "beta": 0.3658}
    th = law.to_theta(p)
    assert law.theta_names == ("log_E", "log_A", "log_B", "alpha", "beta")
    np.testing.assert_allclose(th[:3], np.log([1.8172, 482.01, 2085.43]))
    back = law.from_theta(th)
    assert back.keys() == p.keys()
    np.testing.assert_allclose(list(back.values()), list(p.values()), rtol=1e-14)
    with pytest.raises(ValueError, match="missing parameters"):
        law.to_theta({"E": 1.0})


def test_hoffmann_grid_is_exactly_4500_points():
    grid = get_law("chinchilla").default_starts({"N": np.ones(3), "D": np.ones(3)}, np.ones(3))
    assert grid.shape == (4500, 5)
    for j, values in enumerate(HOFFMANN_GRID.values()):
        assert sorted(set(grid[:, j])) == list(values)
    assert HOFFMANN_GRID["log_A"] == (0.0, 5.0, 10.0, 15.0, 20.0, 25.0)
    assert HOFFMANN_GRID["alpha"] == (0.0, 0.5, 1.0, 1.5, 2.0)


def test_every_law_pickles_for_worker_processes():
    for law in [*LAWS.values(), effective_data_law(["a", "b"])]:
        clone = pickle.loads(pickle.dumps(law))
        assert clone == law and clone.params == law.params


def _lp_exp_decay(theta, X, grad):
    # L = E + B exp(-D / tau): a custom law written against the public Law interface
    e, b, ltau = theta[:, :1], theta[:, 1:2], theta[:, 2:3]
    tau = np.exp(ltau)
    d = X["D"][None, :]
    u = b - d / tau
    m = np.maximum(e, u)
    s = np.exp(e - m) + np.exp(u - m)
    lp = m + np.log(s)
    if not grad:
        return lp, None
    we, wu = np.exp(e - m) / s, np.exp(u - m) / s
    return lp, [we, wu, wu * d / tau]


def _grid_exp_decay(X, loss, fixed):
    return np.array([[e, b, t] for e in (0.0, 0.5) for b in (0.0, 1.0) for t in (1.0, 2.0, 3.0)])


def test_register_custom_law_and_fit_it():
    from scaling_analysis.engine import fit_law

    law = Law(
        name="exp_decay_test",
        variables=("D",),
        params=("E", "B", "tau"),
        formula="L(D) = E + B·exp(−D/τ)",
        log_predict_fn=_lp_exp_decay,
        log_params=("E", "B", "tau"),
        start_grid_fn=_grid_exp_decay,
    )
    register_law(law)
    try:
        D = np.linspace(1.0, 60.0, 15)
        df = pd.DataFrame({"D": D, "loss": 1.3 + 2.0 * np.exp(-D / 12.0)})
        fit = fit_law("exp_decay_test", df)
        assert fit.params == pytest.approx({"E": 1.3, "B": 2.0, "tau": 12.0}, rel=1e-6)
        with pytest.raises(TypeError):
            register_law("not a law")  # type: ignore[arg-type]
    finally:
        LAWS.pop("exp_decay_test", None)


def test_analysis_package_imports_without_torch():
    code = (
        "import sys; import scaling_analysis.engine.laws, scaling_analysis.engine, "
        "scaling_analysis.engine.bootstrap; bad = [m for m in sys.modules if m.split('.')[0] in "
        "('torch', 'pytorch_lightning', 'lightning')]; print(bad); sys.exit(1 if bad else 0)"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
