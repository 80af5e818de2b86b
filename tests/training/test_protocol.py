"""TrainingProtocol: token -> step arithmetic and one-line ConfigErrors."""

from __future__ import annotations

import dataclasses

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from datascale import CONF_DIR
from datascale.config_errors import ConfigError
from datascale.training.protocol import TrainingProtocol


def test_plan_for_a_small_subset_uses_the_minimum_eval_interval() -> None:
    p = TrainingProtocol()  # batch 2048, eval each epoch but >= 16384 tokens apart, cap 40 epochs
    u = 6000
    assert p.eval_interval_steps(u) == 8  # 16384 / 2048, not ceil(6000 / 2048) = 3
    assert p.token_cap(u) == 240_000
    assert p.planned_steps(u) == 120  # ceil(240000 / 2048) = 118 -> next multiple of 8
    assert p.warmup_steps(u) == 12  # min(65536/2048 = 32, 10% of 120)
    assert p.plan(u, 128)["planned_epochs"] == pytest.approx(120 * 2048 / 6000)


def test_plan_for_a_large_subset_rounds_up_to_whole_eval_intervals() -> None:
    p = TrainingProtocol()
    u = 100_000
    assert p.eval_interval_steps(u) == 49  # ceil(100000 / 2048)
    assert p.planned_steps(u) == 40 * 49  # ceil(4e6 / 2048) = 1954 -> next multiple of 49
    assert p.planned_steps(u) % p.eval_interval_steps(u) == 0
    assert p.warmup_steps(u) == 32


def test_token_cap_bounds_and_max_eval_interval() -> None:
    p = TrainingProtocol(min_tokens=1_000_000, max_tokens=2_000_000, max_eval_interval_tokens=65536)
    assert p.token_cap(1000) == 1_000_000
    assert p.token_cap(10**6) == 2_000_000
    assert p.eval_interval_steps(10**6) == 32  # 1 epoch would be 489 steps; capped at 65536 tokens


def test_validate_against_model_world_and_subset() -> None:
    p = TrainingProtocol(batch_tokens=2048)
    p.validate(seq_len=128, world_size=2, unique_tokens=256)
    with pytest.raises(
        ConfigError, match=r"training\.batch_tokens=2048: must be a multiple of model\.seq_len=96"
    ):
        p.validate(seq_len=96)
    with pytest.raises(ConfigError, match="divisible by the world size 3"):
        p.validate(seq_len=128, world_size=3)
    with pytest.raises(ConfigError, match=r"subset\.unique_tokens=255"):
        p.validate(seq_len=128, unique_tokens=255)


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"batch_tokens": 0}, "batch_tokens"),
        ({"patience": 0}, "patience"),
        ({"cap_epochs": -1}, "cap_epochs"),
        ({"min_tokens": 10, "max_tokens": 5}, "max_tokens"),
        ({"min_eval_interval_tokens": 100, "max_eval_interval_tokens": 50}, "max_eval_interval_tokens"),
        ({"warmup_max_fraction": 2.0}, "warmup_max_fraction"),
        ({"grad_clip": 0.0}, "grad_clip"),
        ({"eval_tokens_per_domain": 0}, "eval_tokens_per_domain"),
    ],
)
def test_bad_values_raise_config_error(kw: dict, field: str) -> None:
    with pytest.raises(ConfigError) as err:
        TrainingProtocol(**kw)
    assert err.value.field == field


def test_yaml_defaults_equal_dataclass_defaults() -> None:
    """conf/training/early_stop.yaml and the dataclass must not drift apart."""
    from_yaml = instantiate(OmegaConf.load(CONF_DIR / "training" / "early_stop.yaml"))
    assert dataclasses.asdict(from_yaml) == dataclasses.asdict(TrainingProtocol())


def test_config_leaves_import_without_torch() -> None:
    """The Hydra job instantiates these leaves to validate a sweep and must not import torch (design.md)."""
    import subprocess
    import sys

    code = (
        "import sys, datascale.model_config, datascale.training.protocol, datascale.training.schedule, "
        "datascale.training.strategy, datascale.training.settings, datascale.training.objective, "
        "datascale.training.checkpoint_files, datascale.configs, datascale.artifacts, datascale.storage, "
        "datascale.orchestration.launch, datascale.orchestration.plan, datascale.orchestration.supervise, "
        "datascale.orchestration.overrides, datascale.orchestration.parent_guard, datascale.launch; "
        "sys.exit(int('torch' in sys.modules))"
    )
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0


def test_strategy_leaves_build_lightning_strategies() -> None:
    from pytorch_lightning.strategies import DDPStrategy, SingleDeviceStrategy

    single = OmegaConf.load(CONF_DIR / "strategy" / "single.yaml")
    single.accelerator = "cpu"  # normally ${trainer.accelerator}
    built = instantiate(single)
    assert isinstance(built, SingleDeviceStrategy) and built.root_device.type == "cpu"
    ddp = instantiate(OmegaConf.load(CONF_DIR / "strategy" / "ddp.yaml"))
    assert isinstance(ddp, DDPStrategy) and not isinstance(ddp, SingleDeviceStrategy)


@pytest.mark.parametrize(
    ("world", "bound", "expected"),
    [
        (1, None, (16, 1)),  # 2048 tokens / 128 = 16 sequences per step
        (2, None, (8, 1)),
        (1, 512, (4, 4)),  # at most 4 sequences per forward pass
        (2, 512, (4, 2)),
        (1, 384, (2, 8)),  # 3 would not divide 16: the fewest equal micro-batches that fit
        (4, 100_000, (4, 1)),
    ],
)
def test_micro_batch_and_accumulation_keep_the_global_batch(
    world: int, bound: int | None, expected: tuple[int, int]
) -> None:
    micro, accumulation = TrainingProtocol(batch_tokens=2048).micro_batch(128, world, bound)
    assert (micro, accumulation) == expected
    assert micro * accumulation * world * 128 == 2048
    assert bound is None or micro * 128 <= bound


def test_micro_batch_bound_below_one_sequence_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"worker\.max_micro_batch_tokens=64"):
        TrainingProtocol(batch_tokens=2048).micro_batch(128, 1, 64)
