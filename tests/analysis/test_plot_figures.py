"""Figures: each returns a Figure, saves a PNG, and draws what it claims (bands, hollow markers,
frontiers)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure
from scaling_analysis.engine import bootstrap, compare_laws, fit_law, get_law, holdout_extrapolation, predict
from scaling_analysis.report import plots
from scaling_analysis.tables.runs import domain_long, load_records
from synthetic_study import write_synthetic_study

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    root = tmp_path_factory.mktemp("plots") / "synthetic"
    write_synthetic_study(root, non_converged_sizes=(8_000_000,))
    return load_records(root)


@pytest.fixture(scope="module")
def fitted(study: pd.DataFrame) -> SimpleNamespace:
    fit = fit_law("saturating_power_D", study, variables={"D": "U"})
    boot = bootstrap(fit, study, n_resamples=40, seed=1, n_jobs=1)
    ho = holdout_extrapolation("saturating_power_D", study, by="U", variables={"D": "U"})
    return SimpleNamespace(fit=fit, boot=boot, holdout=ho)


def _is_png(path: Path) -> bool:
    return path.exists() and path.read_bytes()[:8] == PNG_MAGIC


def test_scaling_curve_band_holdout_and_non_converged(
    study: pd.DataFrame, fitted: SimpleNamespace, tmp_path: Path
) -> None:
    path = tmp_path / "curve.png"
    fig = plots.scaling_curve(study, fitted.fit, bootstrap=fitted.boot, holdout=fitted.holdout, path=path)
    assert isinstance(fig, Figure) and _is_png(path)
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log" and ax.get_xlabel() == "U"
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    for expected in (
        "seed=0",
        "seed=1",
        "not converged",
        "saturating_power_D fit",
        "95% bootstrap band",
        "held out (fit without them)",
        "extrapolated prediction",
    ):
        assert expected in labels
    # the non-converged runs (the largest size) are listed by id under the axes
    nc_ids = study.loc[~study["converged"], "run_id"].tolist()
    note = " ".join(t.get_text() for t in fig.texts)
    assert len(nc_ids) == 2 and all(i in note for i in nc_ids)
    # ... and drawn hollow: a scatter with no face colour at exactly their positions
    hollow = [
        c
        for c in ax.collections
        if len(c.get_offsets()) and len(c.get_facecolors()) == 0 and not c.get_label().startswith("held out")
    ]
    xs = sorted(float(o[0]) for c in hollow for o in c.get_offsets())
    assert xs == [8e6, 8e6]


def test_band_brackets_the_point_prediction(study: pd.DataFrame, fitted: SimpleNamespace) -> None:
    grid = {"D": np.logspace(5, 8, 30)}
    lo, hi = plots.band(fitted.fit, fitted.boot.samples, grid, 0.95)
    point = predict(fitted.fit, None, grid)
    assert np.all(lo <= point + 1e-9) and np.all(point <= hi + 1e-9)
    assert np.all(hi - lo > 0)
    # the band widens when extrapolating far beyond the largest U (8e6)
    width = hi - lo
    assert width[-1] > width[np.argmin(np.abs(grid["D"] - 1e6))]


def test_residuals_and_law_comparison(study: pd.DataFrame, fitted: SimpleNamespace, tmp_path: Path) -> None:
    fig = plots.residuals(study, fitted.fit, holdout=fitted.holdout, path=tmp_path / "res.png")
    assert _is_png(tmp_path / "res.png")
    offsets = np.concatenate([c.get_offsets() for c in fig.axes[0].collections if len(c.get_offsets())])
    assert np.all(np.abs(offsets[:, 1]) < 5)  # percent residuals of a 1%-noise study
    cmp = compare_laws(study, ["saturating_power_D", "kaplan_D"], by="U", variables={"D": "U"})
    fig = plots.law_comparison(study, cmp, path=tmp_path / "cmp.png")
    assert _is_png(tmp_path / "cmp.png")
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    chosen = [lbl for lbl in labels if lbl.endswith("[chosen]")]
    assert len(chosen) == 1 and chosen[0].startswith(cmp.chosen)
    assert any(lbl.startswith("kaplan_D (held-out MAPE") for lbl in labels)


def test_compute_optimal_matches_the_closed_form_frontier(tmp_path: Path) -> None:
    # Hoffmann Eq. 4: N_opt = G (C/6)^a, G = (alpha A / (beta B))^(1/(alpha+beta)), a = beta/(alpha+beta)
    p = {"E": 1.8172, "A": 482.01, "B": 2085.43, "alpha": 0.3478, "beta": 0.3658}
    fit = SimpleNamespace(law=get_law("chinchilla"), params=p, variables={"N": "N", "D": "D"})
    budgets = np.array([1e19, 1e21, 5.76e23])
    frontier = plots.compute_optimal(fit, budgets)
    G = (p["alpha"] * p["A"] / (p["beta"] * p["B"])) ** (1 / (p["alpha"] + p["beta"]))
    a = p["beta"] / (p["alpha"] + p["beta"])
    np.testing.assert_allclose(frontier["N_opt"], G * (budgets / 6) ** a, rtol=1e-3)
    np.testing.assert_allclose(frontier["N_opt"] * frontier["D_opt"] * 6, budgets, rtol=1e-12)
    rng = np.random.default_rng(0)
    n = 10 ** rng.uniform(7.5, 10, 40)
    d = 10 ** rng.uniform(9, 11.5, 40)
    df = pd.DataFrame(
        {"N": n, "D": d, "C": 6 * n * d, "loss": get_law("chinchilla").predict(p, {"N": n, "D": d})}
    )
    fig = plots.isoflop(fit, df=df, n_budgets=4, path=tmp_path / "iso.png")
    assert _is_png(tmp_path / "iso.png") and len(fig.axes) == 2
    assert "N ∝ C^0.51" in fig.axes[1].get_title()  # a = 0.5126 for these parameters


def test_conditions_one_curve_per_domain(study: pd.DataFrame, tmp_path: Path) -> None:
    long = domain_long(study)
    fig = plots.conditions(long, x="U", path=tmp_path / "dom.png")
    assert _is_png(tmp_path / "dom.png")
    labels = {t.get_text() for t in fig.axes[0].get_legend().get_texts()}
    assert {"code", "literature"} <= labels
    with pytest.raises(ValueError, match="no 'condition' column"):
        plots.conditions(study, x="U")
