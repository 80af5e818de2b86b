"""The whole slice, for real: Hydra multirun -> torchrun worker -> records -> fit -> plot -> report.

Real text (built-in corpus), real BPE, real Lightning training, real torchrun processes, W&B offline.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from study_cli import launch_study

from datascale.records import find_records

OUTPUTS = ("runs.parquet", "fit.json", "report.md", "scaling_curve.png")


def run_study(study: str, tmp: Path, *overrides: str, timeout: int) -> subprocess.CompletedProcess:
    env = {"WANDB_MODE": "offline", "WANDB_DIR": str(tmp / "wandb-home")}
    return launch_study(study, tmp / "results", tmp / "cache", *overrides, env=env, timeout=timeout)


def analyze(study_dir: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "scaling_analysis", str(study_dir), *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_two_size_study_end_to_end_and_rerun_trains_nothing(tmp_path):
    first = run_study("smoke", tmp_path, timeout=400)
    assert first.returncode == 0, first.stderr[-3000:]
    study_dir = tmp_path / "results" / "smoke"
    records = find_records(study_dir)
    assert sorted(r.unique_tokens for r in records) == [2000, 8000]
    for record in records:
        run_dir = study_dir / "runs" / record.run_id
        assert record.status == "done" and record.study == "smoke"
        assert record.epochs == pytest.approx(record.tokens_seen / record.unique_tokens)
        assert (run_dir / "resolved.yaml").exists() and (run_dir / "metrics.csv").exists()
        assert list((run_dir / "wandb").glob("offline-run-*")), "one offline W&B run per job"
        assert record.wandb.get("id") == record.run_id
        assert record.launch["study_file"] == "smoke", "the record says how to launch the run again"
        assert f"subset.unique_tokens={record.unique_tokens}" in record.launch["overrides"]
    small, large = sorted(records, key=lambda r: r.unique_tokens)
    assert large.test_loss < small.test_loss, "four times the data must give a lower test loss"
    assert small.subset_hash != large.subset_hash and small.tokenizer_hash == large.tokenizer_hash

    report = analyze(study_dir, "--resamples", "200")
    assert report.returncode == 0, report.stderr[-3000:]
    for name in OUTPUTS:
        assert (study_dir / name).stat().st_size > 0, name
    fit = json.loads((study_dir / "fit.json").read_text())
    assert fit["law"] == "saturating_power_D" and fit["n_points"] == 2
    assert "![" in (study_dir / "report.md").read_text()

    mtimes = {r.run_id: (study_dir / "runs" / r.run_id / "record.json").stat().st_mtime_ns for r in records}
    second = run_study("smoke", tmp_path, timeout=300)
    assert second.returncode == 0, second.stderr[-3000:]
    log = second.stdout + second.stderr
    assert log.count("already done") == 2
    assert " - train " not in log
    assert {
        r.run_id: (study_dir / "runs" / r.run_id / "record.json").stat().st_mtime_ns
        for r in find_records(study_dir)
    } == mtimes


@pytest.mark.slow
def test_default_study_gives_a_falling_scaling_curve(tmp_path):
    """`make scaling-study` in a tmp dir: every size trains, loss falls with data, the four outputs exist."""
    proc = run_study("data_size", tmp_path, timeout=3000)
    assert proc.returncode == 0, proc.stderr[-3000:]
    study_dir = tmp_path / "results" / "data_size"
    records = sorted(find_records(study_dir), key=lambda r: r.unique_tokens)
    assert len({r.unique_tokens for r in records}) >= 6
    losses = [r.test_loss for r in records]
    assert losses[-1] < losses[0] - 0.3
    report = analyze(study_dir, "--resamples", "1000")
    assert report.returncode == 0, report.stderr[-3000:]
    fit = json.loads((study_dir / "fit.json").read_text())
    assert fit["params"]["beta"] > 0
    for name in OUTPUTS:
        assert (study_dir / name).exists()


@pytest.mark.slow
def test_pre_registered_prediction_is_written_before_the_target_starts(tmp_path):
    """Three sizes, the largest a target, two jobs at once (the joblib launcher): the target job waits for the
    non-target runs, the prediction is written (W&B offline run beside it) before the target trains, the
    target's record carries it, and the report scores it."""
    overrides = (
        "subset.unique_tokens=2000,4000,8000", "+analysis.predict.targets=[largest]",
        "+analysis.predict.resamples=50", "+analysis.predict.poll_s=1", "hydra/launcher=parallel",
        "worker.num_threads=1", "logger=wandb_csv",
    )  # fmt: skip
    done = run_study("smoke", tmp_path, *overrides, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    study_dir = tmp_path / "results" / "smoke"
    records = {r.unique_tokens: r for r in find_records(study_dir)}
    prediction = json.loads((study_dir / "prediction.json").read_text())
    target = records[8000].preregistration
    assert prediction["targets"] == [8000] and prediction["inputs"]["sizes"] == [2000, 4000]
    assert target["prediction_file"] == f"predictions/{prediction['inputs']['sha256'][:12]}.json"
    assert all(records[u].created_at < prediction["created_at"] for u in (2000, 4000)), "fitted after them"
    assert prediction["created_at"] < target["started_at"] < records[8000].created_at, "before the target"
    assert not records[2000].preregistration, "only targets carry a prediction"
    assert (study_dir / target["prediction_file"]).with_suffix(".wandb.json").is_file(), "logged to W&B"
    report = analyze(study_dir, "--resamples", "0")
    assert report.returncode == 0, report.stderr[-2000:]
    scored = json.loads((study_dir / "fit.json").read_text())["prediction"]
    assert scored["summary"]["n_scored"] == 1 and scored["summary"]["all_created_before_start"]
