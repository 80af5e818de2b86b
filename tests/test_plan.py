"""The planner: a dry run of a study that costs every run, finds done ones and refuses impossible plans."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from datascale.config_errors import ConfigError
from datascale.data.prepare import prepare_from_config
from datascale.data.token_cache import TokenCache
from datascale.model_config import GPTConfig
from datascale.orchestration.plan import (
    LAUNCH_SECONDS,
    PlannedRun,
    compose_study,
    gpu_flops_per_s,
    plan_study,
    seconds,
)
from datascale.training.throughput import training_flops_per_token


def _paths(tmp: Path) -> list[str]:
    return [f"paths.results_dir={tmp / 'results'}", f"paths.cache_dir={tmp / 'cache'}"]


def test_smoke_plan_costs_every_run(tmp_path: Path) -> None:
    cfg, runs = plan_study("smoke", _paths(tmp_path))
    assert [r.unique_tokens for r in runs] == [2000, 8000] and not any(r.done for r in runs)
    model = GPTConfig.from_preset("gpt_tiny", vocab_size=512)
    # the token cap of the smoke protocol: 8 epochs of U, rounded up to whole evaluations of 2048-token steps
    assert [r.planned_tokens for r in runs] == [16_384, 65_536]
    per_token = 6 * (12 * 32 * 32 + 32 * 512) + 12 * 1 * 128 * 32  # by hand: matmul weights, attention
    assert per_token == training_flops_per_token(1, 32, 512, 128)
    # the cap plus at most a cooldown of 0.2 x the cap (schedule=wsd_cooldown, the default)
    assert cfg.schedule.cooldown_fraction == 0.2
    assert [r.flops for r in runs] == pytest.approx([per_token * 16_384 * 1.2, per_token * 65_536 * 1.2])
    # a forward pass is a third of a training token; 1 evaluation per epoch of U (at least 8 steps) + the test
    evaluations = [r.planned_tokens // 16_384 for r in runs]
    assert evaluations == [1, 4]
    forward = per_token / 3
    val = (runs[1].eval_flops - runs[0].eval_flops) / (3 * forward)  # val tokens of one evaluation
    test = runs[0].eval_flops / forward - val  # test tokens, evaluated once
    assert val == round(val) and test == round(test), "whole tokens: forward FLOPs x tokens evaluated"
    # every domain's whole val set (no cap: training.eval_tokens_per_domain is null), every window: an upper
    # bound under training.eval_se_target
    assert cfg.training.eval_tokens_per_domain is None
    artifacts = prepare_from_config(compose_study("smoke", [*_paths(tmp_path), "subset.unique_tokens=2000"]))
    caches = artifacts.eval_caches.values()
    assert val == sum(len(TokenCache.open(Path(c["val"])).tokens) for c in caches) and test > 0
    assert runs[0].params_non_embedding == model.parameter_counts()["non_embedding"] == 12_384
    assert len({r.run_id for r in runs}) == 2 and cfg.study.name == "smoke"


def test_a_command_line_sweep_replaces_the_study_files(tmp_path: Path) -> None:
    _, runs = plan_study("smoke", [*_paths(tmp_path), "subset.unique_tokens=2000,4000", "seed=3"])
    assert [(r.unique_tokens, r.axes["seed"]) for r in runs] == [(2000, 3), (4000, 3)]
    assert runs[1].overrides == ["subset.unique_tokens=4000"]


def test_time_estimates_scale_with_flops_and_ranks() -> None:
    run = PlannedRun([], "id", {}, 1, 1, 100, 1000, 1000, flops=2e12, world_size=2, done=False)
    assert seconds(run, 1e11) == pytest.approx(10 + LAUNCH_SECONDS)  # 2e12 / (1e11 x 2 ranks)
    assert gpu_flops_per_s("H100") == pytest.approx(989.4e12 * 0.3)
    with pytest.raises(ConfigError, match=r"^--gpu='TPU9': must name one of \["):
        gpu_flops_per_s("TPU9")


def test_impossible_plan_fails_in_one_line_before_training(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^run \[subset\.unique_tokens=2000 seed=0\] .*batch_tokens=1000"):
        plan_study("smoke", [*_paths(tmp_path), "training.batch_tokens=1000"])
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "datascale.orchestration.plan",
            "smoke",
            *_paths(tmp_path),
            "subset.unique_tokens=99999999",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "unique_tokens" in lines[0] and "training pool" in lines[0], proc.stderr
    assert not (tmp_path / "results").exists()  # nothing ran
