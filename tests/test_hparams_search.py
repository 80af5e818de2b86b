"""Hyperparameter search through Hydra's Optuna sweeper: each trial a normal run, the validation loss back."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

from datascale import SWEEPS_DIR
from datascale.records import find_records


def test_optuna_grid_search_trains_each_trial_and_returns_its_validation_loss(tmp_path: Path) -> None:
    cmd = [
        sys.executable, "-m", "datascale.launch", "--config-dir", str(SWEEPS_DIR), "--config-name",
        "hparams_smoke", f"paths.results_dir={tmp_path / 'results'}", f"paths.cache_dir={tmp_path / 'cache'}",
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={**os.environ})
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = find_records(tmp_path / "results" / "hparams_smoke")
    assert sorted(r.axes["lr"] for r in records) == [0.003, 0.03]
    results = next((tmp_path / "results" / "hparams_smoke" / "hydra").rglob("optimization_results.yaml"))
    best = yaml.safe_load(results.read_text())
    by_lr = {r.axes["lr"]: r.best_val_loss for r in records}
    assert best["best_value"] == min(by_lr.values())  # the objective is the run's best validation loss
    assert best["best_params"]["optim.lr"] == min(by_lr, key=by_lr.get)
