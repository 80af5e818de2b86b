"""Warmup + cosine LR: exact values at the boundaries, and through a real optimizer."""

from __future__ import annotations

import itertools

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from datascale import CONF_DIR
from datascale.config_errors import ConfigError
from datascale.training.schedule import WarmupCosine


def test_factor_at_boundaries() -> None:
    s = WarmupCosine(min_lr_ratio=0.1)
    warmup, total = 10, 110
    assert s.factor(0, warmup, total) == pytest.approx(0.1)  # first update: 1/warmup
    assert s.factor(9, warmup, total) == pytest.approx(1.0)  # warmup ends at the peak
    assert s.factor(10, warmup, total) == pytest.approx(1.0)  # cosine starts at the peak
    mid = 10 + (110 - 1 - 10) / 2
    assert s.factor(mid, warmup, total) == pytest.approx(0.55)  # halfway: (1 + min) / 2
    assert s.factor(109, warmup, total) == pytest.approx(0.1)  # last planned update: the floor
    assert s.factor(500, warmup, total) == pytest.approx(0.1)  # past the plan: stays at the floor
    values = [s.factor(i, warmup, total) for i in range(10, 110)]
    assert all(a >= b for a, b in itertools.pairwise(values))  # monotone decay


def test_no_warmup_starts_at_peak() -> None:
    assert WarmupCosine(0.0).factor(0, 0, 50) == pytest.approx(1.0)
    assert WarmupCosine(0.0).factor(49, 0, 50) == pytest.approx(0.0)


def test_scheduler_drives_optimizer_lr() -> None:
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([param], lr=1e-2)
    sched = WarmupCosine(0.1).build(opt, warmup_steps=4, total_steps=20)
    lrs = []
    for _ in range(20):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert (
        lrs[0] == pytest.approx(2.5e-3) and lrs[3] == pytest.approx(1e-2) and lrs[19] == pytest.approx(1e-3)
    )


def test_validation_and_yaml() -> None:
    with pytest.raises(ConfigError):
        WarmupCosine(min_lr_ratio=1.5)
    with pytest.raises(ConfigError):
        WarmupCosine().build(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1), 30, 20)
    assert instantiate(OmegaConf.load(CONF_DIR / "schedule" / "warmup_cosine.yaml")) == WarmupCosine(0.1)


def test_wsd_holds_the_peak_until_the_decay_and_ends_at_the_floor() -> None:
    from datascale.training.schedule import WarmupStableDecay

    wsd = WarmupStableDecay(min_lr_ratio=0.1, decay_fraction=0.2)
    factors = [wsd.factor(s, 10, 100) for s in range(100)]
    assert factors[9] == 1.0 and all(f == 1.0 for f in factors[10:80])  # stable phase
    assert factors[80] < 1.0 and factors[-1] == pytest.approx(0.1)  # linear decay over the last 20 steps
    decay = factors[80:]
    assert all(decay[i] >= decay[i + 1] for i in range(len(decay) - 1))


def test_wsd_cooldown_holds_the_peak_then_anneals_from_its_start() -> None:
    """Stable phase: warmup then the peak, whatever the planned steps; the cooldown's first update is at the
    peak and its LR falls as 1 - sqrt(progress) to the floor, through a real optimizer."""
    from datascale.training.schedule import Cooldown, WarmupStableCooldown

    s = WarmupStableCooldown()
    assert [s.factor(i, 4, 20) for i in (0, 3, 4, 19, 500)] == [0.25, 1.0, 1.0, 1.0, 1.0]
    cooldown = Cooldown(from_step=40, steps=16)
    assert s.cooldown_factor(40, cooldown) == 1.0
    assert s.cooldown_factor(44, cooldown) == pytest.approx(1 - 0.5)  # sqrt(4/16)
    assert s.cooldown_factor(56, cooldown) == 0.0
    linear = WarmupStableCooldown(shape="linear", min_lr_ratio=0.1)
    assert linear.cooldown_factor(48, cooldown) == pytest.approx(1 - 0.9 * 0.5)
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([param], lr=1e-2)
    sched = s.build(opt, warmup_steps=2, total_steps=100, cooldown=Cooldown(from_step=6, steps=4))
    lrs = []
    for _ in range(10):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    expected = [5e-3, 1e-2, 1e-2, 1e-2, 1e-2, 1e-2, 1e-2, 1e-2 * (1 - 0.5), 1e-2 * (1 - 0.5**0.5)]
    assert lrs[:9] == pytest.approx(expected) and lrs[9] == pytest.approx(1e-2 * (1 - 0.75**0.5))


def test_the_cooldown_ends_at_the_best_step_from_the_latest_checkpoint_before_its_start() -> None:
    from datascale.training.schedule import Cooldown, WarmupStableCooldown

    s = WarmupStableCooldown(cooldown_fraction=0.2)
    saved = [8, 16, 24, 32, 40, 48, 56]
    assert s.cooldown_for(48, saved) == Cooldown(from_step=32, steps=16)  # 48 - round(9.6) = 38 -> 32
    assert s.cooldown_for(40, saved) == Cooldown(from_step=32, steps=8)  # 40 - 8 = 32 exactly
    assert s.cooldown_for(16, saved) == Cooldown(from_step=8, steps=8)  # 16 - 4 < 8: the earliest one
    assert s.cooldown_for(8, saved) == Cooldown(from_step=8, steps=4)  # nothing before the best: from it
    at_best = WarmupStableCooldown(anchor="start_at_best")
    assert at_best.cooldown_for(48, saved) == Cooldown(from_step=48, steps=10)
    assert s.decay_progress(30, 4, 100) == 0.0 and not WarmupCosine.cools_down and s.cools_down


@pytest.mark.parametrize(
    ("field", "value"),
    [("cooldown_fraction", 0.0), ("cooldown_fraction", 1.5), ("shape", "cosine"), ("anchor", "middle")],
)
def test_wsd_cooldown_names_a_bad_field(field: str, value: object) -> None:
    from datascale.training.schedule import WarmupStableCooldown

    with pytest.raises(ConfigError, match=f"schedule.{field}"):
        WarmupStableCooldown(**{field: value})  # type: ignore[arg-type]


def test_decay_progress_of_the_planned_schedules() -> None:
    """The record's ``schedule_position``: how much of the decay a checkpoint after ``steps`` updates had."""
    from datascale.training.schedule import WarmupStableDecay

    assert WarmupCosine().decay_progress(10, 10, 110) == 0.0
    assert WarmupCosine().decay_progress(60, 10, 111) == pytest.approx(0.49)
    assert WarmupCosine().decay_progress(200, 10, 110) == 1.0
    assert WarmupStableDecay(decay_fraction=0.2).decay_progress(90, 10, 100) == pytest.approx(0.5)
    assert WarmupStableDecay(decay_fraction=0.2).decay_progress(50, 10, 100) == 0.0
    assert instantiate(OmegaConf.load(CONF_DIR / "schedule" / "wsd_cooldown.yaml")).cools_down
