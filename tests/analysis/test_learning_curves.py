"""Fitting learning curves: every evaluation of every run as a (D, loss) point, with the caveats recorded."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from scaling_analysis import cli
from scaling_analysis.tables.runs import log_spaced
from synthetic_study import write_synthetic_study

from datascale.records import read_record, write_record

E, B, BETA = 2.0, 400.0, 0.4


COOLDOWN = "datascale.training.schedule.WarmupStableCooldown"


def write_curve_study(root: Path, schedule: str) -> None:
    """Three runs whose validation loss follows E + B·D^-β at 6 evaluations each; under ``wsd_cooldown`` a
    seventh point, the annealed model at step 320 (far below the law), ends the curve as in a real record."""
    for path in write_synthetic_study(root / "base", sizes=(100_000, 400_000, 1_600_000), seeds=(0,)):
        template = read_record(path)
        curve = [
            {"step": k, "tokens_seen": k * 2048, "lr": 1e-3, "loss": E + B * (k * 2048) ** -BETA}
            for k in (20, 40, 80, 160, 320, 640)
        ]
        cooldown = {"from_step": 256, "steps": 64} if schedule == COOLDOWN else {}
        if cooldown:
            curve.append({"step": 320, "tokens_seen": 320 * 2048, "lr": 0.0, "loss": 0.5})
        config = {**template.config, "schedule": {"_target_": schedule}}
        record = dataclasses.replace(template, val_curve=curve, config=config, cooldown=cooldown)
        (root / "study" / "runs" / record.run_id).mkdir(parents=True)
        write_record(root / "study" / "runs" / record.run_id, record)


@pytest.mark.parametrize(
    ("schedule", "cosine"),
    [
        ("datascale.training.schedule.WarmupStableDecay", False),
        ("datascale.training.schedule.WarmupCosine", True),
        (COOLDOWN, False),  # the stable-phase points; the annealed last one is not a curve point
    ],
)
def test_from_curves_fits_every_point_and_records_the_caveats(
    tmp_path: Path, schedule: str, cosine: bool
) -> None:
    write_curve_study(tmp_path, schedule)
    study = tmp_path / "study"
    assert (
        cli.main([str(study), "--from-curves", "--resamples", "20", "--jobs", "1", "--candidates", "none"])
        == 0
    )
    fit = json.loads((study / "fit.json").read_text())
    (step,) = [s for s in fit["preprocessing"]["steps"] if s.get("rule") == "learning_curves"]
    assert (step["n_runs"], step["n_points"]) == (3, 18) and "not independent" in step["reason"]
    assert bool(step["cosine_runs"]) is cosine and ("warning" in step) is cosine
    assert fit["params"]["beta"] == pytest.approx(BETA, rel=0.05)  # the curves are exact, so is the fit


def test_dense_curves_are_thinned_to_log_spaced_points() -> None:
    curve = [{"step": k, "tokens_seen": 1000 * k, "loss": 1.0} for k in range(1, 1001)]  # 3 decades
    chosen = [p["tokens_seen"] for p in log_spaced(curve, 4)]
    assert 12 <= len(chosen) <= 14 and chosen[0] == 1000 and chosen[-1] == 1_000_000
    ratios = [chosen[i + 1] / chosen[i] for i in range(len(chosen) - 1)]
    assert all(1.4 < r < 2.1 for r in ratios)  # about 10^(1/4) = 1.78 apart
