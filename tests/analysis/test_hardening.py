"""Issue 12: the fitter on degenerate and malformed tables refuses what it cannot fit and says what it did.

Every table here is hand-made with a known answer; CLI runs are in-process (``cli.main``) with the bootstrap
and the law comparison off unless a test needs them, so the file stays fast.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scaling_analysis import cli, study
from scaling_analysis.engine import BootstrapResult, UnfittableError, fit_law, get_law
from scaling_analysis.engine.diagnostics import FitEvidence, fit_warnings
from scaling_analysis.report import markdown
from scaling_analysis.tables.cells import repeated_cells, repeated_cells_warning
from scaling_analysis.tables.runs import load_table, preprocessing_of
from synthetic_study import write_synthetic_study

TRUE = {"E": 1.7, "B": 400.0, "beta": 0.3}
FAST = ["--resamples", "0", "--candidates", "none", "--jobs", "1"]


@pytest.fixture(autouse=True)
def _wide_console(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """rich wraps at 80 columns when not on a terminal; the tests read whole console lines. A table's default
    output (``./<table>_analysis``) lands in the test's tmp dir, not the checkout."""
    monkeypatch.setenv("COLUMNS", "400")
    monkeypatch.chdir(tmp_path)


def _curve(D: np.ndarray, noise: float = 0.0, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    clean = get_law("saturating_power_D").predict(TRUE, {"D": D})
    return clean * np.exp(rng.normal(0.0, noise, len(D)))


def _csv(tmp_path: Path, name: str, frame: pd.DataFrame) -> Path:
    path = tmp_path / name
    frame.to_csv(path, index=False)
    return path


def _main(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = cli.main(list(argv))
    out = capsys.readouterr()
    return rc, out.out, out.err


def _one_line_error(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    rc, _out, err = _main(capsys, *argv)
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


# ---------------------------------------------------------------------------------------------- 1. refuse


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        (pd.DataFrame({"D": [1e6], "loss": [3.2]}), "1 distinct (D) point(s) for the 3 free parameters"),
        (pd.DataFrame({"D": np.geomspace(1e6, 1e9, 140), "loss": 3.0}), "all 140 values of 'loss' equal 3"),
        (
            pd.DataFrame({"D": np.full(6, 1e7), "loss": _curve(np.geomspace(1e6, 1e9, 6))}),
            "is 1e+07 in all 6",
        ),
        (
            pd.DataFrame({"D": np.repeat([1e6, 1e8], 5), "loss": _curve(np.repeat([1e6, 1e8], 5), 0.01)}),
            "2 distinct (D) point(s) for the 3 free parameters",
        ),
    ],
    ids=["one_row", "equal_losses", "constant_variable", "two_sizes_many_seeds"],
)
def test_unfittable_tables_are_refused_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], frame: pd.DataFrame, reason: str
) -> None:
    path = _csv(tmp_path, "t.csv", frame)
    line = _one_line_error(capsys, str(path), "--out", str(tmp_path / "out"), *FAST)
    assert reason in line and "--force" in line
    assert not (tmp_path / "out" / "fit.json").exists()  # no confident wrong number written
    with pytest.raises(UnfittableError, match="cannot fit 'saturating_power_D'"):
        fit_law("saturating_power_D", frame)


def test_all_nan_loss_column_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _csv(tmp_path, "t.csv", pd.DataFrame({"D": [1e6, 1e7, 1e8], "loss": ["n/a", "", "x"]}))
    line = _one_line_error(capsys, str(path), *FAST)
    assert "column 'loss'" in line and "no row has a finite numeric loss" in line and "row 2" in line


def test_all_nan_scaling_column_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    frame = pd.DataFrame({"D": [np.nan] * 4, "loss": [3.0, 2.9, 2.8, 2.7]})
    line = _one_line_error(capsys, str(_csv(tmp_path, "t.csv", frame)), *FAST)
    assert "column 'D'" in line and "no usable value in any of its 4 rows" in line


def test_force_fits_anyway_and_marks_every_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    D = np.repeat([1e6, 1e8], 3)
    path = _csv(tmp_path, "t.csv", pd.DataFrame({"D": D, "loss": _curve(D, 0.01)}))
    rc, out, _err = _main(capsys, str(path), "--out", str(tmp_path / "o"), "--force", *FAST)
    assert rc == 0 and "FORCED FIT" in out
    fj = json.loads((tmp_path / "o" / "fit.json").read_text())
    assert fj["forced"] and "2 distinct (D) point(s)" in fj["forced"][0]
    assert "forced" in fj["diagnostics"]["flags"] and fj["diagnostics"]["warnings"][0].startswith("FORCED")
    assert fj["scaling_check"]["sentence"].startswith("Inconclusive")
    assert (tmp_path / "o" / "report.md").read_text().count("FORCED FIT") == 1


# ---------------------------------------------------------------------------------------- 2. say what dropped


def _table_with_bad_losses(tmp_path: Path) -> Path:
    D = np.geomspace(1e6, 1e9, 8)
    frame = pd.DataFrame({"D": D, "loss": _curve(D).astype(object)})
    frame.loc[2, "loss"] = "diverged"
    frame.loc[5, "loss"] = np.nan
    return _csv(tmp_path, "bad.csv", frame)


def test_dropped_rows_are_listed_on_the_console_and_in_fit_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _table_with_bad_losses(tmp_path)
    rc, out, _err = _main(capsys, str(path), "--out", str(tmp_path / "o"), *FAST)
    assert rc == 0
    assert "dropped 2 row(s) by drop_nonfinite_loss" in out and "row 2: loss='diverged'" in out
    fj = json.loads((tmp_path / "o" / "fit.json").read_text())
    (dropped,) = fj["dropped"]
    assert dropped["n_dropped"] == 2
    assert dropped["rows"] == [
        {"row": 2, "column": "loss", "value": "diverged"},
        {"row": 5, "column": "loss", "value": None},
    ]
    assert fj["n_points"] == 6


def test_strict_turns_a_drop_into_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    line = _one_line_error(capsys, str(_table_with_bad_losses(tmp_path)), "--strict", *FAST)
    assert line.count("strict: 2 row(s) of 'loss'") == 1 and "row 2: loss='diverged'" in line


def test_input_errors_name_the_column_the_row_and_the_value(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    N = np.repeat([1e7, 3e7, 1e8], 3).astype(object)
    N[4] = "big"
    frame = pd.DataFrame({"N": N, "C": np.geomspace(1e17, 1e20, 9), "loss": np.linspace(4.0, 3.0, 9)})
    path = _csv(tmp_path, "t.csv", frame)
    derive = _one_line_error(capsys, str(path), "--law", "chinchilla", "--derive", "D=C/(6*N)", *FAST)
    assert "column 'N'" in derive and "row 4" in derive and "'big'" in derive and "BinOp" not in derive
    direct = _one_line_error(capsys, str(path), "--law", "saturating_power_N", *FAST)
    assert "column 'N'" in direct and "row 4" in direct and "'big'" in direct


# -------------------------------------------------------------------------------------------- 3. diagnostics


def _evidence(frac: float, n_at_opt: int, theta_beta: float = 0.3, **settings: float) -> FitEvidence:
    law = get_law("saturating_power_D")
    D = np.geomspace(1e6, 1e9, 12)
    params = {"E": 1.7, "B": 400.0, "beta": theta_beta}
    return FitEvidence(
        law, params, law.to_theta(params), np.arange(3), _curve(D), {"D": D}, frac, 100, n_at_opt,
        {"kind": "grid", "grid_min": {"beta": 0.05}, "grid_max": {"beta": 1.0}}, {}, {}, 1,
        np.array([1.0, 2.0, 3.0]), dict(settings),
    )  # fmt: skip


def test_rugged_warns_below_five_percent_of_starts_and_is_configurable() -> None:
    flags = {f for f, _ in fit_warnings(_evidence(0.03, 3))}
    assert "rugged" in flags  # 3% of starts agree: the old rule (<= 1 start) stayed silent
    assert "rugged" not in {f for f, _ in fit_warnings(_evidence(0.10, 10))}
    assert "rugged" in {f for f, _ in fit_warnings(_evidence(0.10, 10, min_frac_at_optimum=0.2))}


def test_an_optimum_on_the_edge_of_the_start_grid_is_flagged() -> None:
    assert "start_grid_edge" in {f for f, _ in fit_warnings(_evidence(0.5, 50, theta_beta=1.0))}
    assert "outside_start_grid" in {f for f, _ in fit_warnings(_evidence(0.5, 50, theta_beta=1.5))}
    inside = {f for f, _ in fit_warnings(_evidence(0.5, 50, theta_beta=0.3))}
    assert not inside & {"start_grid_edge", "outside_start_grid"}


def test_bootstrap_intervals_that_exclude_the_estimate_are_warned() -> None:
    boot = BootstrapResult(
        n_resamples=100,
        seed=0,
        confidence=0.95,
        samples=pd.DataFrame(),
        intervals={"beta": (0.31, 0.40), "E": (1.6, 1.8)},
        std_errors={},
        n_failed=0,
        point={"beta": 0.30, "E": 1.7},
    )
    assert boot.excluding_point() == {"beta": (0.31, 0.40)}
    ((flag, message),) = study.bootstrap_warnings(boot)
    assert flag == "bootstrap_excludes_estimate" and "beta [0.31, 0.4]" in message and "0.3" in message


# -------------------------------------------------------------------------------------------- 4. sensitivity


def test_the_report_shows_what_each_exclusion_moved(tmp_path: Path) -> None:
    D = np.repeat(np.geomspace(1e6, 1e9, 8), 2)
    loss = _curve(D, 0.002, seed=1)
    loss[:4] *= 1.3  # the two smallest sizes (4 rows) far above the curve
    path = _csv(tmp_path, "t.csv", pd.DataFrame({"D": D, "loss": loss}))
    result = study.analyze_table(
        path, out_dir=tmp_path / "o", drop_highest=4, n_resamples=0, candidates=(), n_jobs=1
    )
    rows = {r["variant"]: r for r in result.fit_json["sensitivity"]["rows"]}
    fitted, without = rows["as fitted"], rows["without --drop-highest 4"]
    assert fitted["n_rows"] == 12 and without["n_rows"] == 16
    assert fitted["beta"] == pytest.approx(TRUE["beta"], abs=0.01)  # outliers gone: the truth
    assert without["beta"] == pytest.approx(0.431, abs=0.01)  # outliers kept: a steeper curve
    assert result.fit_json["sensitivity"]["quantities"][0] == "beta"
    md = result.report
    assert "## Sensitivity to exclusions" in md and "without --drop-highest 4" in md


def test_non_converged_runs_are_a_sensitivity_variant(tmp_path: Path) -> None:
    root = tmp_path / "s"
    write_synthetic_study(root, non_converged_sizes=(8_000_000,), noise=0.003)
    result = study.analyze_study(root, n_resamples=0, candidates=(), n_jobs=1)
    labels = [r["variant"] for r in result.sensitivity["rows"]]
    assert labels == ["as fitted", "without the 2 non-converged run(s)"]
    assert result.sensitivity["rows"][1]["n_rows"] == 10


# ----------------------------------------------------------------------------------------- 5. repeated cells


def _lr_sweep() -> pd.DataFrame:
    rows = []
    for n in (1e7, 1e8):
        for d in (1e9, 1e10):
            for lr, bump in ((1e-3, 0.05), (3e-3, 0.0), (1e-2, 0.2)):
                rows.append({"N": n, "D": d, "peak_lr": lr, "loss": 3.0 + bump - 0.1 * np.log10(n * d)})
    return pd.DataFrame(rows)


def test_repeated_cells_are_detected_and_the_collapse_is_shown(tmp_path: Path) -> None:
    df = _lr_sweep()
    info = repeated_cells(df, ["N", "D"])
    assert info["n_cells"] == 4 and info["n_repeated_cells"] == 4 and info["max_rows_per_cell"] == 3
    assert info["explained_by_seeds"] is False and info["swept_columns"] == ["peak_lr"]
    warning = repeated_cells_warning(info, len(df))
    assert warning is not None and "--collapse-min-over peak_lr (12 -> 4 rows)" in warning
    seeds = df.assign(seed=np.tile([0, 1, 2], 4)).drop(columns="peak_lr")
    assert repeated_cells_warning(repeated_cells(seeds, ["N", "D"]), 12) is None


def test_the_n_definition_is_recorded_even_when_not_given(tmp_path: Path) -> None:
    path = _csv(tmp_path, "t.csv", _lr_sweep().rename(columns={"N": "Params"}))
    pre = preprocessing_of(load_table(path, columns={"Params": "N"}))
    assert pre["n_definition"].startswith("not stated: N is the table's column 'Params'")
    pre = preprocessing_of(load_table(path, columns={"Params": "N"}, n_definition="non-embedding"))
    assert pre["n_definition"] == "non-embedding"


# ------------------------------------------------------------------------------ 6. reports that fit the input


@pytest.fixture(scope="module")
def chinchilla_table(tmp_path_factory: pytest.TempPathFactory) -> study.StudyAnalysis:
    rng = np.random.default_rng(5)
    N = np.repeat(np.geomspace(1e7, 1e9, 5), 5)
    D = np.tile(np.geomspace(1e9, 1e11, 5), 5)
    truth = {"E": 1.7, "A": 400.0, "B": 410.0, "alpha": 0.34, "beta": 0.28}
    loss = get_law("chinchilla").predict(truth, {"N": N, "D": D}) * np.exp(rng.normal(0, 0.002, N.size))
    tmp = tmp_path_factory.mktemp("chin")
    path = _csv(tmp, "chin.csv", pd.DataFrame({"N": N, "D": D, "C": 6 * N * D, "loss": loss}))
    return study.analyze_table(
        path,
        law="chinchilla",
        out_dir=tmp / "o",
        n_resamples=0,
        n_jobs=1,
        starts=300,
        holdout_by="C",
        holdout_above=1e19,
    )


def test_report_lines_fit_an_external_table(chinchilla_table: study.StudyAnalysis) -> None:
    md, fj = chinchilla_table.report, chinchilla_table.fit_json
    assert "Non-converged" not in md and "early stopping" not in md  # the table says nothing about stopping
    assert "### Loss vs N:" in md and "Loss vs data" not in md
    sentence = fj["scaling_check"]["sentence"]
    assert sentence.startswith("Yes: loss falls as N and D grow") and "vs D =" in sentence
    assert set(fj["scaling_check"]["variables"]) == {"N", "D"}
    # readable precision in the report table, full precision in fit.json (and in the collapsed table)
    e_row = next(line for line in md.splitlines() if line.startswith("| `E` |"))
    assert e_row.split("|")[2].strip() == f"{fj['params']['E']:.5g}"
    assert repr(fj["params"]["E"]) in md and repr(fj["params"]["E"]) not in e_row


def test_holdout_by_threshold_for_external_tables(chinchilla_table: study.StudyAnalysis) -> None:
    ho = chinchilla_table.fit_json["holdout"]
    runs = chinchilla_table.runs
    assert ho["by"] == "C" and ho["n_test"] == int((runs["C"] >= 1e19).sum()) and ho["n_test"] > 0
    assert ho["rule"].startswith("C >= 1e+19") and ho["mape"] < 0.01
    assert "Held out: C >= 1e+19" in chinchilla_table.report


def test_holdout_count_by_threshold_or_fraction() -> None:
    df = pd.DataFrame({"C": np.repeat([1e18, 1e19, 1e20, 1e21], 2)})
    assert study.StudyOptions(holdout_above=1e20).holdout_count(df, "C") == 2
    assert study.StudyOptions(holdout_above=1e22).holdout_count(df, "C") == 0
    assert study.StudyOptions(holdout_fraction=0.5).holdout_count(df, "C") == 2
    assert study.StudyOptions(holdout_fraction=0.1).holdout_count(df, "C") == 1  # at least one value
    assert study.StudyOptions(n_holdout_values=3).holdout_count(df, "C") == 3
    assert study.StudyOptions(holdout_above=1e20).holdout_rule("C", 2) == "C >= 1e+20 (2 distinct value(s))"


def test_distinct_values_are_printed_distinctly() -> None:
    labels = markdown.distinct_labels([100_010_000.0, 100_020_000.0, 2e8])
    assert len(set(labels)) == 3 and labels[2] == "2e+08"
    assert markdown.distinct_labels([1e6, 2e6]) == ["1e+06", "2e+06"]


# ----------------------------------------------------------------------------------------- 8. numpy warnings


def test_law_evaluation_at_extreme_parameters_raises_no_numpy_warning(tmp_path: Path) -> None:
    law = get_law("broken_power_D")
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        params = law.from_theta(np.array([-800.0, 900.0, 0.05, -0.03, 950.0, 0.5]))
        assert np.isinf(params["B"]) and np.isinf(params["d1"])
        law.predict(params, {"D": np.geomspace(1e3, 1e12, 10)})
        D = np.repeat(np.geomspace(1e6, 1e10, 8), 2)
        loss = (
            (1.5 + 20 * D**-0.05)
            * (1 + D / 3e8) ** -0.7
            * np.exp(np.random.default_rng(0).normal(0, 0.01, 16))
        )
        fit_law("broken_power_D", pd.DataFrame({"D": D, "loss": loss}), starts=60)


def test_a_run_away_log_parameter_is_reported_not_overflowed():
    """A flat-objective warning over a log parameter whose end points ran to e^800 must not raise."""
    from scaling_analysis.engine.diagnostics import _exp_text

    assert _exp_text(800.0) == "e^800" and _exp_text(0.0) == "1" and _exp_text(-800.0) == "0"
