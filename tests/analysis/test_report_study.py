"""analyze_study end to end (outputs, recovery of a known law, small studies) and the Markdown report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from scaling_analysis import study
from scaling_analysis.report import markdown
from scaling_analysis.tables.runs import read_runs
from synthetic_study import write_synthetic_study

from datascale.records import read_record, write_record

SIZES = (125_000, 250_000, 500_000, 1_000_000, 2_000_000, 4_000_000, 8_000_000)
TRUE = {"E": 2.0, "B": 400.0, "beta": 0.4}
OUTPUTS = (
    "runs.parquet",
    "fit.json",
    "report.md",
    "scaling_curve.png",
    "residuals.png",
    "law_comparison.png",
)


def _add_failed_run(root: Path) -> str:
    """A failed record next to the finished ones: never fitted, but listed."""
    first = next((root / "runs").iterdir())
    rec = read_record(first / "record.json")
    rec.run_id, rec.status, rec.error = "failedrun001", "failed", "worker died: out of memory"
    write_record(root / "runs" / rec.run_id, rec)
    return rec.run_id


@pytest.fixture(scope="module")
def analyzed(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("study") / "data_size"
    write_synthetic_study(
        root, sizes=SIZES, noise=0.005, rng_seed=0, non_converged_sizes=(8_000_000,), **TRUE
    )
    _add_failed_run(root)
    result = study.analyze_study(
        root, n_resamples=100, n_jobs=1, candidates=("saturating_power_D", "kaplan_D")
    )
    return {"root": root, "result": result, "fit_json": result.fit_json, "runs": result.runs}


def test_writes_all_outputs_with_documented_fit_json(analyzed: dict) -> None:
    root = analyzed["root"]
    for name in OUTPUTS:
        assert (root / name).is_file(), name
    fj = json.loads((root / "fit.json").read_text())
    assert set(fj) == set(study.FIT_JSON_FIELDS)
    assert fj["law"] == "saturating_power_D" and fj["variables"] == {
        "D": "U"
    }  # D of the law is unique tokens
    assert fj["loss_metric"] == "test_loss" and fj["n_points"] == 14 and fj["huber_delta"] == 1e-3
    assert fj["summary"]["n_sizes"] == 7 and fj["summary"]["n_failed"] == 1
    assert fj["summary"]["orders_of_magnitude"] == pytest.approx(1.80618, abs=1e-4)
    assert {r["run_id"] for r in fj["non_converged"]} == set(
        analyzed["runs"].loc[~analyzed["runs"]["converged"], "run_id"]
    )
    assert fj["diagnostics"]["converged"] is True and fj["skipped"] == {}
    assert read_runs(root / "runs.parquet")["run_id"].tolist() == analyzed["runs"]["run_id"].tolist()


def test_recovers_the_known_law_within_its_ci(analyzed: dict) -> None:
    fj = analyzed["fit_json"]
    for name, true in TRUE.items():
        lo, hi = fj["intervals"][name]
        assert lo < true < hi, (name, lo, hi)
    assert fj["params"]["beta"] == pytest.approx(0.4, abs=0.03)
    # predictions beyond the data carry CIs and cover the true curve
    d10 = fj["derived"]["loss_at_10x_max_U"]
    true_10x = TRUE["E"] + TRUE["B"] * (10 * SIZES[-1]) ** -TRUE["beta"]
    assert d10["interval"][0] < true_10x < d10["interval"][1]
    check = fj["scaling_check"]
    assert check["looks_like_scaling"] is True and check["spearman_rho"] < -0.9
    assert check["sentence"].startswith("Yes")


def test_holdout_and_tournament_recorded(analyzed: dict) -> None:
    fj = analyzed["fit_json"]
    ho = fj["holdout"]
    assert ho["by"] == "U" and ho["threshold"] == 8_000_000 and ho["n_test"] == 2 and ho["n_train"] == 12
    assert len(ho["points"]) == 2 and ho["mape"] < 0.02
    assert ho["max_are"] == pytest.approx(max(p["abs_rel_error"] for p in ho["points"]))
    # the law is chosen in advance on the 12 fitting runs (the 2 held-out runs removed before the choice)
    t = fj["tournament"]
    assert t["chosen"] == "saturating_power_D" == fj["law"] and t["reason"]
    assert t["headline"]["source"] == "tournament" and (t["n_fitting_rows"], t["n_held_out_rows"]) == (12, 2)
    assert {row["law"] for row in t["laws"]} == {"saturating_power_D", "kaplan_D"}
    assert all(row["held_out (not used for the choice)"]["n_held_out"] == 2 for row in t["laws"])
    # two seeds per size: the seed-noise floor is measured, the bootstrap draws rows (cells need 3 runs)
    assert len(fj["seed_noise"]["rows"]) == 7 and fj["seed_noise"]["floor"] > 0
    assert fj["bootstrap"]["resampled"] == "rows"


def test_report_has_fit_table_plots_and_glossary(analyzed: dict) -> None:
    root = analyzed["root"]
    md = (root / "report.md").read_text()
    fj = analyzed["fit_json"]
    assert "| parameter | estimate | 95% CI (bootstrap) | std. error (bootstrap) |" in md
    beta_row = next(line for line in md.splitlines() if line.startswith("| beta |"))
    assert repr(fj["params"]["beta"]) in beta_row  # full precision, never rounded
    lo, hi = fj["intervals"]["beta"]
    assert f"[{lo!r}, {hi!r}]" in beta_row
    for png in ("scaling_curve.png", "residuals.png", "law_comparison.png", "domains.png"):
        assert f"]({png})" in md and (root / png).is_file()
    for section in (
        "## Held-out extrapolation",
        "## Law choice: a tournament decided in advance",
        "**Chosen:** `saturating_power_D`",
        "held-out MAPE (not used for the choice)",
        "## Seed noise",
        "vs seed floor",
        "## Non-converged runs",
        "## Column glossary",
        "## Does this look like a scaling curve?",
    ):
        assert section in md, section
    assert "failedrun001" in md  # failed runs are listed, not silently dropped
    assert "| `U` |" in md and "| `D` |" in md


def test_two_sizes_skip_gracefully_and_still_write_everything(tmp_path: Path) -> None:
    root = tmp_path / "tiny"
    write_synthetic_study(root, sizes=(500_000, 4_000_000), seeds=(0, 1))
    result = study.analyze_study(root, n_resamples=50, n_jobs=1)
    for name in OUTPUTS:
        assert (root / name).is_file(), name
    fj = result.fit_json
    assert fj["skipped"] == result.skipped
    assert result.bootstrap is None and result.holdout is None and result.tournament is None
    assert set(fj["skipped"]) >= {"bootstrap", "holdout", "tournament"}
    assert "1 distinct U values among the fitting points" in fj["skipped"]["tournament"]
    assert fj["law"] == study.DEFAULT_LAW and fj["tournament"]["headline"]["source"] == "default"
    assert "2 distinct U values" in fj["skipped"]["bootstrap"]
    assert fj["holdout"] == {"skipped": fj["skipped"]["holdout"]}
    assert fj["intervals"] == {} and fj["tournament"]["skipped"]
    assert any("not identified" in w for w in fj["diagnostics"]["warnings"])
    md = (root / "report.md").read_text()
    assert fj["scaling_check"]["identified"] is False
    assert fj["scaling_check"]["sentence"].startswith(
        "Inconclusive: loss falls as U grows, but 2 distinct sizes"
    )
    assert "Bootstrap skipped:" in md and fj["scaling_check"]["sentence"] in md


def test_a_curve_that_does_not_fall_is_called_out(tmp_path: Path) -> None:
    root = tmp_path / "rising"
    write_synthetic_study(root, sizes=SIZES[:5], E=4.0, B=-50.0, beta=0.4, noise=0.002)
    result = study.analyze_study(root, n_resamples=0, n_jobs=1, candidates=())
    check = result.fit_json["scaling_check"]
    assert check == result.scaling_check
    assert check["looks_like_scaling"] is False and check["spearman_rho"] > 0.9
    assert check["sentence"].startswith("No: this does not look like a scaling curve")
    assert check["sentence"] in result.report


def test_render_report_from_a_minimal_fit_json() -> None:
    fj = {
        "law": "kaplan_D",
        "formula": "L(D) = (D_c/D)^α_D",
        "variables": {"D": "U"},
        "loss_metric": "test_loss",
        "params": {"D_c": 12345.678901234567, "alpha_D": 0.0951234567891234},
        "intervals": {"alpha_D": [0.09, 0.1]},
        "std_errors": {"alpha_D": 0.0025},
        "holdout": {"skipped": "2 distinct U values"},
        "tournament": {"skipped": "no candidate laws given"},
        "diagnostics": {"converged": True, "warnings": ["few points: 4 points for 2 free parameters"]},
        "summary": {"study": "s", "x": "U", "n_runs": 4, "n_sizes": 2, "sizes": [1e5, 1e6]},
        "preprocessing": {"source": "records", "steps": [{"rule": "drop_highest", "k": 1, "cutoff": 5.0}]},
    }
    md = markdown.render_report(fj, plots={"scaling_curve": "scaling_curve.png"})
    assert "| D_c | 12345.678901234567 | — | — |" in md
    assert "| alpha_D | 0.0951234567891234 | [0.09, 0.1] | 0.0025 |" in md
    assert "Skipped: 2 distinct U values" in md and "⚠ few points" in md
    assert "**drop_highest**: k=1, cutoff=5.0" in md and "![scaling_curve](scaling_curve.png)" in md


def test_loglog_curvature_tells_steepening_from_flattening_and_straight():
    import numpy as np
    from scaling_analysis.steps.checks import loglog_curvature

    sizes = np.array([4e3, 8e3, 1.6e4, 3.2e4, 6.4e4, 1.28e5, 2.56e5])
    # the default study's measured test losses (small-data region bending into the power-law region)
    measured = np.array([7.29, 6.94, 6.66, 6.26, 5.82, 5.35, 4.60])
    steep = loglog_curvature(sizes, measured)
    assert steep["shape"] == "steepens" and steep["upper_slope"] < steep["lower_slope"] < 0
    assert "small-data region" in steep["sentence"]
    assert loglog_curvature(sizes, 3 + 50 * sizes**-0.3)["shape"] == "flattens"
    assert loglog_curvature(sizes, 10 * sizes**-0.1)["shape"] == "straight"
    assert loglog_curvature(sizes[:3], measured[:3])["shape"] == "unknown"
