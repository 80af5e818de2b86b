"""Tables with integers beyond int64 (FLOP counts) and infinite losses: the CLI reads the integers as floats
(parquet cannot store them) and reports a dropped ``inf`` loss as ``inf``, not as an empty cell."""

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
from scaling_analysis.tables.runs import big_ints_as_floats, describe_rows, load_table, read_runs, save_runs

REPO = Path(__file__).resolve().parents[2]
REFERENCE = Path(os.environ.get("DATASCALE_SHARED", REPO.parent / "shared")) / "reference"
BIG = 10**20  # > int64 max (9.2e18); pandas keeps such a CSV column as Python ints (object dtype)


def _csv(tmp_path: Path, inf_row: bool = False) -> Path:
    D = np.geomspace(1e6, 3.2e7, 6)
    loss = 1.9 + 300 * D**-0.35
    lines = ["D,loss,C"] + [
        f"{d:.0f},{y:.6f},{BIG + 7 * i}" for i, (d, y) in enumerate(zip(D, loss, strict=True))
    ]
    if inf_row:
        lines.append(f"{4e6:.0f},inf,{BIG}")
    path = tmp_path / "big.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_big_integer_columns_become_floats(tmp_path: Path):
    raw = pd.read_csv(_csv(tmp_path))
    assert raw["C"].dtype == object  # the failure's premise
    out, cols = big_ints_as_floats(raw)
    assert cols == ["C"] and out["C"].dtype == np.float64 and out["C"].iloc[0] == pytest.approx(1e20)
    assert out["D"].dtype == raw["D"].dtype  # ordinary integer columns stay integers
    unsigned = pd.DataFrame({"u": np.array([2**63 + 5, 3], dtype=np.uint64), "s": ["a", "b"]})
    assert big_ints_as_floats(unsigned)[1] == ["u"]
    assert big_ints_as_floats(pd.DataFrame({"o": [1, "x"], "n": [None, None]}))[1] == []
    # save_runs guards a table that did not come through load_table, and read_runs reads it back
    path = save_runs(raw, tmp_path / "runs.parquet")
    assert read_runs(path)["C"].dtype == np.float64
    df = load_table(_csv(tmp_path))
    assert df.attrs["preprocessing"]["read_as_float"]["columns"] == ["C"]


def test_cli_fits_a_table_with_a_big_integer_column_and_reports_inf(tmp_path: Path):
    out = tmp_path / "out"
    env = {**os.environ, "MPLBACKEND": "Agg", "COLUMNS": "200"}
    args = [str(_csv(tmp_path, inf_row=True)), "--resamples", "0", "--candidates", "", "--out", str(out)]
    command = [sys.executable, "-m", "scaling_analysis", *args]
    proc = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and "OverflowError" not in proc.stderr
    assert read_runs(out / "runs.parquet")["C"].dtype == np.float64
    fj = json.loads((out / "fit.json").read_text())
    step = next(s for s in fj["preprocessing"]["steps"] if s["rule"] == "drop_nonfinite_loss")
    assert step["rows"][0]["value"] == "inf"
    assert "loss=inf" in proc.stdout and "NaN/empty" not in proc.stdout
    assert "loss=inf" in (out / "report.md").read_text()


def test_inf_and_empty_are_told_apart():
    rows = [{"row": 1, "column": "loss", "value": "inf"}, {"row": 2, "column": "loss", "value": None}]
    assert describe_rows(rows, 2) == "row 1: loss=inf, row 2: loss=NaN/empty"


def test_misfitting_table_through_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    table = REFERENCE / "misfitting_openlm_final_losses.csv"
    if not table.exists():
        pytest.skip(f"reference data not found at {table}; CI provides ../shared")
    out = tmp_path / "out"
    args = [str(table), "--law", "chinchilla", "--collapse-min-over", "peak_lr", "--resamples", "0"]
    assert cli.main([*args, "--candidates", "", "--jobs", "1", "--out", str(out)]) == 0, (
        capsys.readouterr().err
    )
    runs = read_runs(out / "runs.parquet")
    assert len(runs) == 81 and runs["C"].dtype == np.float64 and runs["C"].max() > 1e20
    fj = json.loads((out / "fit.json").read_text())
    assert set(fj["preprocessing"]["read_as_float"]["columns"]) == {"C", "C_no_emb", "C_6ND", "C_6ND_no_emb"}
