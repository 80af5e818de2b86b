"""A tiny two-condition study, for real: Hydra multirun over two literature/code weightings at two sizes ->
torchrun workers -> records -> `python -m scaling_analysis` -> per-condition sections and k with an interval.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from datascale import SWEEPS_DIR
from datascale.records import find_records

STUDY = "conditions_smoke"


def test_two_condition_study_reports_conditions_and_an_interval_on_k(tmp_path: Path) -> None:
    env = {**os.environ, "WANDB_MODE": "disabled"}
    launch = subprocess.run(
        [sys.executable, "-m", "datascale.launch", "--config-dir", str(SWEEPS_DIR), "--config-name", STUDY,
         f"paths.results_dir={tmp_path / 'results'}", f"paths.cache_dir={tmp_path / 'cache'}"],
        capture_output=True, text=True, env=env, timeout=400,
    )  # fmt: skip
    assert launch.returncode == 0, launch.stderr[-3000:]
    study_dir = tmp_path / "results" / STUDY
    records = find_records(study_dir)
    assert sorted((r.unique_tokens, r.axes["weights"]["literature"]) for r in records) == [
        (2000, 0.25), (2000, 0.75), (8000, 0.25), (8000, 0.75)
    ]  # fmt: skip
    assert all(r.eval_domains == ["code", "literature"] for r in records)

    analysis = subprocess.run(
        [sys.executable, "-m", "scaling_analysis", str(study_dir), "--resamples", "100"],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert analysis.returncode == 0, analysis.stderr[-3000:]
    report = (study_dir / "report.md").read_text()
    for heading in ("## Conditions", "## Effective data", "## Decision accuracy"):
        assert heading in report, heading
    assert "code=0.75,literature=0.25" in report and "code=0.25,literature=0.75" in report
    fit = json.loads((study_dir / "fit.json").read_text())
    (k_row,) = [r for r in fit["effective_data"]["multipliers"] if not r["reference"]]
    lo, hi = k_row["interval"]
    assert 0 < lo <= hi and k_row["k"] > 0
    assert fit["decision_accuracy"]["rows"][0]["n_pairs"] == 1
    assert "mixing_law" in fit["skipped"], "two weightings cannot fit a three-parameter mixing law"
    for name in ("condition_curves.png", "effective_data_k.png"):
        assert (study_dir / name).stat().st_size > 0
    assert f"k[{k_row['condition']}]" in analysis.stdout
