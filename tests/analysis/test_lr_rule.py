"""The learning-rate rule: best lr per size from a swept grid, the power law in N, and its Hydra leaf."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf
from scaling_analysis.steps.lr_rule import best_lr, lr_rule_section, step_lr_rule

SIZES = (1.0e5, 4.0e5, 1.6e6)
GRID = (3.0e-4, 1.0e-3, 3.0e-3, 1.0e-2)


def true_best(n: float) -> float:
    return 2.0e-3 * (n / 4.0e5) ** -0.3


def sweep(noise: float = 0.0, seed: int = 0) -> pd.DataFrame:
    """Validation loss exactly quadratic in log lr around the true best lr of each size (plus noise)."""
    rng = np.random.default_rng(seed)
    rows = []
    for n in SIZES:
        for lr in GRID:
            loss = 4.0 - 0.1 * math.log(n) + 0.05 * math.log(lr / true_best(n)) ** 2 + noise * rng.normal()
            rows.append({"axis_lr": lr, "N_non_embedding": int(n), "U": 16000, "best_val_loss": loss})
    return pd.DataFrame(rows)


def test_the_parabola_finds_the_best_lr_between_grid_points() -> None:
    cell = sweep()[lambda d: d["N_non_embedding"] == int(SIZES[1])]
    best = best_lr(cell)
    assert best["grid_best"] == 3.0e-3 and not best["at_grid_edge"]
    assert best["best"] == pytest.approx(true_best(SIZES[1]), rel=1e-9)


def test_the_rule_recovers_the_exponent_with_an_interval_and_loads_as_the_fitted_leaf(tmp_path: Path) -> None:
    step = step_lr_rule(sweep(noise=0.002), tmp_path, source="synthetic")
    rule = step.fields["lr_rule"]["rule"]
    low, high = rule["exponent_interval"]
    assert low < -0.3 < high and high - low < 0.3 and rule["exponent"] == pytest.approx(-0.3, abs=0.08)
    leaf = instantiate(OmegaConf.load(tmp_path / "lr_rule.yaml"))  # conf/lr_rule/fitted.yaml's target
    for n in SIZES:
        assert leaf.lr(int(n)) == pytest.approx(true_best(n), rel=0.15)
    assert (tmp_path / "lr_rule.png").is_file()
    section = lr_rule_section(step.fields["lr_rule"])
    assert "## Learning-rate rule" in section and "95% interval" in section


def test_a_best_lr_at_the_grid_edge_is_flagged_and_no_sweep_is_skipped(tmp_path: Path) -> None:
    narrow = sweep()[lambda d: d["axis_lr"] >= 3.0e-3]  # the smallest model wants more than the grid has
    cells = {c["N"]: c for c in step_lr_rule(narrow, tmp_path).fields["lr_rule"]["cells"]}
    assert cells[int(SIZES[0])]["at_grid_edge"]
    one_lr = sweep()[lambda d: d["axis_lr"] == 1.0e-3]
    assert "skipped" in step_lr_rule(one_lr, tmp_path).fields["lr_rule"]


def test_writing_back_a_rule_whose_best_lr_is_at_the_grid_edge_is_refused(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from scaling_analysis.cli import write_back_lr_rule

    narrow = sweep()[lambda d: d["axis_lr"] >= 3.0e-3]
    result = SimpleNamespace(fit_json=step_lr_rule(narrow, tmp_path).fields)
    with pytest.raises(ValueError, match=r"edge of the searched grid .*N=100,000: 0.003.*widen the grid"):
        write_back_lr_rule(result, tmp_path, tmp_path / "fitted.yaml")  # type: ignore[arg-type]
    assert not (tmp_path / "fitted.yaml").exists()
    result = SimpleNamespace(fit_json=step_lr_rule(sweep(), tmp_path).fields)
    write_back_lr_rule(result, tmp_path, tmp_path / "fitted.yaml")  # type: ignore[arg-type]
    assert instantiate(OmegaConf.load(tmp_path / "fitted.yaml")).exponent == pytest.approx(-0.3, abs=0.01)
