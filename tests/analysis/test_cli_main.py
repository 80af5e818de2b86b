"""``python -m scaling_analysis``: help, one-line errors with exit status 2, and a table run end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scaling_analysis import cli

REPO_ROOT = Path(__file__).resolve().parents[2]


def _run_module(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "MPLBACKEND": "Agg", "COLUMNS": "120"}
    return subprocess.run(
        [sys.executable, "-m", "scaling_analysis", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_help_through_the_module_entry_point(tmp_path: Path) -> None:
    proc = _run_module("--help", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    for flag in (
        "--law",
        "--loss-metric",
        "--resamples",
        "--out",
        "--columns",
        "--drop-highest",
        "--collapse-min-over",
    ):
        assert flag in proc.stdout
    assert "saturating_power_D" in proc.stdout and "chinchilla" in proc.stdout


def test_bad_path_is_one_line_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "no_such_study"
    proc = _run_module(str(missing), cwd=tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and str(missing) in lines[0] and "Traceback" not in proc.stderr


def test_empty_study_and_bad_options(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty_study"
    (empty / "runs").mkdir(parents=True)
    assert cli.main([str(empty)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(empty) in err[0] and "no finished run records" in err[0]
    assert cli.main([str(empty), "--columns", "a=N"]) == 2
    assert "--columns: only for tables" in capsys.readouterr().err
    table = tmp_path / "t.txt"
    table.write_text("x")
    assert cli.main([str(table)]) == 2
    assert "not a study directory or a table" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        cli.main([str(empty), "--law", "no_such_law"])
    assert exc.value.code == 2


def test_table_with_mapping_and_preprocessing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A lr-swept results CSV: map columns, keep the best lr per size, drop the worst row; all recorded."""
    rng = np.random.default_rng(0)
    rows = []
    for u in (1e6, 2e6, 4e6, 8e6, 1.6e7, 3.2e7):
        for lr, bump in ((1e-3, 0.03), (3e-3, 0.0)):
            loss = (1.9 + 300 * u**-0.35) * np.exp(rng.normal(0, 0.002)) + bump
            rows.append({"tokens": u, "lr": lr, "eval loss": loss})
    rows.append({"tokens": 2e6, "lr": 3e-2, "eval loss": 9.0})  # a diverged run
    csv = tmp_path / "ext.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    out = tmp_path / "out"
    code = cli.main(
        [
            str(csv),
            "--columns",
            "tokens=D,eval loss=loss",
            "--collapse-min-over",
            "lr",
            "--drop-highest",
            "1",
            "--resamples",
            "30",
            "--jobs",
            "1",
            "--candidates",
            "saturating_power_D,kaplan_D",
            "--law",  # named: the headline stays this law, the tournament is shown beside it
            "saturating_power_D",
            "--out",
            str(out),
        ]
    )
    printed = capsys.readouterr().out
    assert code == 0
    fj = json.loads((out / "fit.json").read_text())
    steps = fj["preprocessing"]["steps"]
    assert [s["rule"] for s in steps] == ["collapse_min", "drop_highest"]
    assert steps[0]["n_before"] == 13 and steps[0]["n_after"] == 6 and steps[1]["n_dropped"] == 1
    assert fj["preprocessing"]["column_mapping"] == {"tokens": "D", "eval loss": "loss"}
    assert fj["n_points"] == 5 and fj["variables"] == {"D": "D"}
    assert 0.25 < fj["params"]["beta"] < 0.45
    assert fj["holdout"]["n_test"] == 1 and fj["tournament"]["chosen"] in ("saturating_power_D", "kaplan_D")
    assert fj["law"] == "saturating_power_D" and fj["tournament"]["headline"]["source"] == "named"
    for name in ("runs.parquet", "report.md", "scaling_curve.png", "residuals.png", "law_comparison.png"):
        assert (out / name).is_file()
    assert "beta" in printed and "held-out extrapolation" in printed and str(out / "report.md") in printed
