"""The Hydra job: config validation before compute, sweep expansion, every study file valid."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from hydra import compose, initialize_config_dir

from datascale import CONF_DIR, SWEEPS_DIR
from datascale.config_errors import ConfigError
from datascale.configs import axis_values
from datascale.launch import sweep_job_overrides, torchrun_command, validate_config, worker_env

STUDIES = sorted(p.stem for p in SWEEPS_DIR.glob("*.yaml"))


def compose_root(overrides: list[str], config_name: str = "config"):
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose(config_name, overrides=overrides, return_hydra_config=True)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("subset.unique_tokens=-5", "subset.unique_tokens=-5: must be a positive integer"),
        ("model.n_layer=abc", "model.n_layer='abc'"),
        ("model.n_head=3", "model.d_model=128: must be divisible by n_head=3"),
        ("tokenizer.vocab_size=0", "tokenizer.vocab_size=0"),
        ("source.domains=[poetry]", "must be one of ['literature', 'code', 'science']"),
        ("study.axes=[nope.x]", "study.axes='nope.x'"),
        ("optim.lr=-1", "optim.lr=-1"),
        ("training.batch_tokens=100", "training.batch_tokens=100"),
    ],
)
def test_bad_values_fail_with_one_line_naming_field_and_value(override, message):
    cfg = compose_root([override])
    with pytest.raises(ConfigError) as err:
        validate_config(cfg)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_default_config_validates():
    leaves = validate_config(compose_root([]))
    assert leaves["subset"].unique_tokens > 0


@pytest.mark.parametrize("study", STUDIES)
def test_every_study_file_composes_and_every_point_validates(study):
    cfg = _compose_study(study, [])
    assert cfg.study.name == study
    assert cfg.hydra.mode.name == "MULTIRUN"
    jobs = sweep_job_overrides(cfg)
    assert len(jobs) >= 2
    for overrides in jobs:
        validate_config(_compose_study(study, overrides))


def _compose_study(study: str, overrides: list[str]):
    """Compose sweeps/<study>.yaml with conf/ on the search path, as `--config-dir sweeps` does."""
    with initialize_config_dir(str(SWEEPS_DIR), version_base="1.3"):
        return compose(
            study, overrides=[*overrides, f"hydra.searchpath=[file://{CONF_DIR}]"], return_hydra_config=True
        )


def test_default_study_spans_six_sizes_over_one_and_a_half_decades():
    cfg = _compose_study("data_size", [])
    sizes = sorted(
        {int(dict(o.split("=") for o in job)["subset.unique_tokens"]) for job in sweep_job_overrides(cfg)}
    )
    assert len(sizes) >= 6
    assert sizes[-1] / sizes[0] >= 10**1.5


def test_axis_values_name_each_swept_key():
    cfg = _compose_study("data_size", ["subset.unique_tokens=8000", "seed=3"])
    assert axis_values(cfg) == {"unique_tokens": 8000, "seed": 3}


def test_worker_environment_drops_an_enclosing_distributed_job(monkeypatch, tmp_path):
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("MASTER_PORT", "1234")
    env = worker_env(2)
    assert "LOCAL_RANK" not in env and "MASTER_PORT" not in env
    assert env["OMP_NUM_THREADS"] == "1"
    cmd = torchrun_command(tmp_path / "resolved.yaml", 2)
    assert cmd[1:4] == ["-m", "torch.distributed.run", "--standalone"]
    assert "--nproc_per_node=2" in cmd
    assert cmd[-3:] == ["-m", "datascale.training.worker", str(tmp_path / "resolved.yaml")]


def test_a_bad_point_stops_the_sweep_before_anything_trains(tmp_path):
    """One invalid size in the grid: the whole study fails in seconds with one line, and no run dir exists."""
    env = {**os.environ, "WANDB_MODE": "disabled"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "datascale.launch",
            "--config-dir",
            str(SWEEPS_DIR),
            "--config-name",
            "smoke",
            "subset.unique_tokens=2000,-7",
            f"paths.results_dir={tmp_path / 'results'}",
            f"paths.cache_dir={tmp_path / 'cache'}",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode != 0
    assert "subset.unique_tokens=-7: must be a positive integer" in proc.stderr
    assert not (tmp_path / "results" / "smoke" / "runs").exists()
