"""The Hydra job: config validation before compute, sweep expansion, every study file valid."""

from __future__ import annotations

import os

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from study_cli import launch_study

from datascale import CONF_DIR, SWEEPS_DIR
from datascale.config_errors import ConfigError
from datascale.configs import axis_values
from datascale.orchestration.launch import (
    LaunchError,
    RankTask,
    layout,
    sweep_job_overrides,
    torchrun_command,
    validate_config,
    worker_command,
    worker_env,
)
from datascale.training.strategy import strategy_spec

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
        (
            "source.domains=[poetry]",
            "source.domains='poetry': must be one of ['literature', 'code', 'science'",
        ),
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
    assert worker_command(tmp_path / "resolved.yaml", 2, 1, None) == cmd


def test_a_one_process_run_starts_the_worker_without_torchrun(tmp_path):
    """A world of one has nothing to rendezvous: the worker itself, one interpreter and one torch import."""
    cmd = worker_command(tmp_path / "resolved.yaml", 1, 1, None)
    assert cmd[1:] == ["-m", "datascale.training.worker", str(tmp_path / "resolved.yaml")]
    assert worker_env(1).get("OMP_NUM_THREADS") == os.environ.get("OMP_NUM_THREADS")  # threads: the worker


def test_a_bad_point_stops_the_sweep_before_anything_trains(tmp_path):
    """One invalid size in the grid: the whole study fails in seconds with one line, and no run dir exists."""
    proc = launch_study("smoke", tmp_path / "results", tmp_path / "cache", "subset.unique_tokens=2000,-7")
    assert proc.returncode != 0
    assert "subset.unique_tokens=-7: must be a positive integer" in proc.stderr
    assert not (tmp_path / "results" / "smoke" / "runs").exists()


def test_multi_node_layout_validates_and_needs_one_task_per_rank(tmp_path):
    """num_nodes is a config value; one node's torchrun cannot start other nodes' ranks, so it needs tasks."""
    cfg = compose_root(["strategy=ddp", "trainer.devices=2", "trainer.num_nodes=2"])
    validate_config(cfg)
    assert layout(cfg) == (2, 2)
    with pytest.raises(ConfigError) as err:
        worker_command(tmp_path / "resolved.yaml", 2, 2, None)
    assert "trainer.num_nodes=2" in str(err.value) and "hydra/launcher=slurm" in str(err.value)


def _task(rank: int, world: int, local_world: int) -> RankTask:
    return RankTask(rank, world, rank % local_world, local_world, rank // local_world, "node0", 23456, "77")


def test_one_task_per_rank_runs_that_rank_of_the_worker_with_torch_variables(tmp_path):
    task = _task(3, 4, 2)
    cmd = worker_command(tmp_path / "resolved.yaml", 2, 2, task)
    assert cmd[1:] == ["-m", "datascale.training.worker", str(tmp_path / "resolved.yaml")]
    env = worker_env(2, task)
    assert {k: env[k] for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK")} == {
        "RANK": "3",
        "WORLD_SIZE": "4",
        "LOCAL_RANK": "1",
        "LOCAL_WORLD_SIZE": "2",
        "GROUP_RANK": "1",
    }
    assert (env["MASTER_ADDR"], env["MASTER_PORT"], env["OMP_NUM_THREADS"]) == ("node0", "23456", "1")
    assert env["TORCHELASTIC_RUN_ID"] == "submitit-77"  # Lightning's TorchElastic detection off SLURM


def test_tasks_that_do_not_match_the_layout_fail_with_the_fix(tmp_path):
    with pytest.raises(LaunchError) as err:
        worker_command(tmp_path / "resolved.yaml", 2, 1, _task(0, 4, 4))
    assert "hydra.launcher.tasks_per_node" in str(err.value)


def test_outside_submitit_there_is_no_rank_task(monkeypatch):
    monkeypatch.delenv("SUBMITIT_EXECUTOR", raising=False)
    assert RankTask.from_submitit() is None


def test_launcher_configs_start_one_task_per_rank_or_bounded_parallel_jobs():
    cfg = compose_root(["hydra/launcher=slurm", "trainer.devices=4", "trainer.num_nodes=2"])
    assert (cfg.hydra.launcher.tasks_per_node, cfg.hydra.launcher.nodes) == (4, 2)
    assert cfg.hydra.launcher._target_.endswith("SlurmLauncher") and cfg.hydra.launcher.max_num_timeout > 0
    local = compose_root(["hydra/launcher=slurm_local", "trainer.devices=2"])
    assert local.hydra.launcher.tasks_per_node == 2 and local.hydra.launcher._target_.endswith(
        "LocalLauncher"
    )
    parallel = compose_root(["hydra/launcher=parallel"])
    assert parallel.hydra.launcher.n_jobs == 2 and parallel.hydra.launcher._target_.endswith("JoblibLauncher")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["worker.max_micro_batch_tokens=64"], "worker.max_micro_batch_tokens=64: must hold at least one"),
        (["strategy=fsdp", "trainer.devices=3"], "divisible by the world size 3"),
        (["trainer.devices=2"], "strategy=single runs one process"),
        (["strategy=fsdp", "trainer.precision=16-mixed"], "trainer.precision='16-mixed': strategy=fsdp"),
    ],
)
def test_layout_errors_are_one_line_before_anything_runs(overrides, message):
    with pytest.raises(ConfigError) as err:
        validate_config(compose_root(overrides))
    assert message in str(err.value) and "\n" not in str(err.value)


def test_mlm_brings_its_mask_token_and_clm_keeps_the_tokenizer_unchanged():
    """``objective=mlm`` alone validates (its leaf sets ``tokenizer.mask_token``); clm has no mask token."""
    mlm = compose_root(["objective=mlm"])
    leaves = validate_config(mlm)
    assert (leaves["objective"].name, leaves["tokenizer"].mask_token) == ("mlm", "<|mask|>")
    assert compose_root([]).tokenizer.mask_token is None
    with pytest.raises(ConfigError, match=r"^tokenizer\.mask_token=None: objective=mlm needs a mask token"):
        validate_config(compose_root(["objective=mlm", "tokenizer.mask_token=null"]))


def test_every_strategy_leaf_has_a_spec():
    """What the launcher and the worker read of a strategy comes from its leaf's spec, never its class."""
    specs = {p.stem: strategy_spec(OmegaConf.load(p)) for p in (CONF_DIR / "strategy").glob("*.yaml")}
    assert {name: spec.name for name, spec in specs.items()} == {
        "single": "single_device",
        "ddp": "ddp",
        "fsdp": "fsdp",
    }
    assert [n for n, s in specs.items() if s.single_process] == ["single"]
    assert [n for n, s in specs.items() if s.shards_parameters] == ["fsdp"]
    assert [n for n, s in specs.items() if s.sharded_checkpoints] == ["fsdp"]
    gathered = OmegaConf.merge(
        OmegaConf.load(CONF_DIR / "strategy" / "fsdp.yaml"), {"save_distributed_checkpoint": False}
    )
    assert not strategy_spec(gathered).sharded_checkpoints and strategy_spec(gathered).shards_parameters
    other = strategy_spec({"_target_": "pytorch_lightning.strategies.DeepSpeedStrategy"})
    assert other.name is None and not (other.single_process or other.shards_parameters)
    assert strategy_spec(None).single_process


@pytest.mark.parametrize("name", ["..", "../x", "a/b", ".hidden", "", "a b"])
def test_study_names_cannot_escape_the_results_directory(name: str) -> None:
    with pytest.raises(ConfigError, match=r"^study\.name=.*: must be letters, digits"):
        validate_config(compose_root([f"study.name='{name}'"]))


def test_a_secret_in_the_config_is_refused_before_anything_is_written(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("WANDB_API_KEY", "0123456789abcdef")
    cfg = compose_root(["+logger.wandb.api_key=${oc.env:WANDB_API_KEY}"])
    with pytest.raises(ConfigError) as err:
        validate_config(cfg)
    message = str(err.value)
    assert message.startswith("logger.wandb.api_key='<the value of $WANDB_API_KEY>': must not hold a secret")
    assert "0123456789abcdef" not in message
    validate_config(compose_root([]))  # the key in the environment alone is fine


def test_lr_rule_sets_the_learning_rate_from_the_model_size_and_the_identity_follows_the_value():
    """Kaplan et al. 2020 Eq. D.1 at the ladder sizes; `lr_rule=none` keeps optim.lr; the rule's name is not
    part of a run's identity, the learning rate it gives is."""
    import math

    from datascale.orchestration.launch import resolved_config
    from datascale.run_id import run_identity

    lrs = {}
    for depth in (1, 3):
        cfg = compose_root(["model=depth", f"model.depth={depth}", "lr_rule=kaplan"])
        leaves = validate_config(cfg)
        n = leaves["model"].parameter_counts()["non_embedding"]
        assert cfg.optim.lr == pytest.approx(0.003239 - 0.0001395 * math.log(n))
        lrs[depth] = cfg.optim.lr
    assert lrs[1] > lrs[3]  # larger models, smaller learning rates
    ruled = compose_root(["lr_rule=kaplan"])
    validate_config(ruled)
    same_value = compose_root([f"optim.lr={ruled.optim.lr}"])
    validate_config(same_value)
    assert run_identity(resolved_config(ruled), "x") == run_identity(resolved_config(same_value), "x")
    kept = compose_root(["optim.lr=0.002"])
    validate_config(kept)
    assert kept.optim.lr == 0.002


def test_training_length_as_a_multiple_of_n():
    """`training.tokens_per_param=20`: the planned tokens are 20 x N (non-embedding), whatever U."""
    cfg = compose_root(["model=depth", "model.depth=2", "training.tokens_per_param=20"])
    leaves = validate_config(cfg)
    n = leaves["model"].parameter_counts()["non_embedding"]
    assert cfg.training.min_tokens == cfg.training.max_tokens == 20 * n
    assert leaves["training"].token_cap(leaves["subset"].unique_tokens) == 20 * n
    with pytest.raises(ConfigError, match=r"training\.tokens_per_param=-1"):
        validate_config(compose_root(["training.tokens_per_param=-1"]))
