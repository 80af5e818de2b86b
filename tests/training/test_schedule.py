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
