"""``schedule=wsd_cooldown`` end to end on tiny real data: the stable phase finds the length, the cooldown
anneals to it from an earlier stable checkpoint, and the annealed model is the one tested and recorded."""

from __future__ import annotations

import csv
import math
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from training_fixtures import TINY_TRAINING, resolved_config

from datascale.artifacts import DataArtifacts
from datascale.records import RunRecord
from datascale.training import worker
from datascale.training.schedule import Cooldown, WarmupStableCooldown

U = 2048


@pytest.fixture(scope="module")
def cooled_run(
    make_artifacts: Callable[[int], DataArtifacts], tmp_path_factory: pytest.TempPathFactory
) -> tuple[RunRecord, Path]:
    """Early stopping (high LR, long cap) so the best step is well inside the run."""
    run_dir = tmp_path_factory.mktemp("runs") / "cooled"
    schedule = {"_target_": "datascale.training.schedule.WarmupStableCooldown", "cooldown_fraction": 0.25}
    overrides = {"schedule": schedule, "training.cap_epochs": 30.0, "optim.lr": 0.02}
    return worker.run(resolved_config(run_dir, make_artifacts(U), **overrides)), run_dir


def test_the_annealed_model_has_the_length_early_stopping_chose(cooled_run: tuple[RunRecord, Path]) -> None:
    record, _ = cooled_run
    cooldown = record.cooldown
    batch, interval = TINY_TRAINING["batch_tokens"], 8  # steps between evaluations (one epoch)
    assert record.stop_reason == "early_stopping"
    assert cooldown["anchor"] == "end_at_best" and cooldown["from_step"] % interval == 0
    assert cooldown["from_step"] + cooldown["steps"] == record.best_step  # ends at the chosen length
    latest = (record.best_step - round(0.25 * record.best_step)) // interval * interval
    assert cooldown["from_step"] == max(interval, latest)
    stable_steps = record.best_step + TINY_TRAINING["patience"] * interval  # stopped `patience` evals later
    assert record.steps == stable_steps + cooldown["steps"] and record.tokens_seen == record.steps * batch
    assert record.tokens_at_best == record.best_step * batch
    last = WarmupStableCooldown().cooldown_factor(record.best_step - 1, Cooldown(**_of(cooldown)))
    assert record.schedule_position == 1.0 and record.lr_ratio_at_test == pytest.approx(last)
    assert record.best_val_loss == record.final_val_loss == record.val_curve[-1]["loss"]
    assert cooldown["val_selection_loss_after"] == pytest.approx(record.val_curve[-1]["selection_loss"])
    assert math.isfinite(record.test_loss)
    assert record.best_checkpoint.endswith(f"cooled-step={record.best_step}.ckpt")


def _of(cooldown: dict[str, object]) -> dict[str, int]:
    return {"from_step": int(cooldown["from_step"]), "steps": int(cooldown["steps"])}  # type: ignore[call-overload]


def test_the_cooldown_trains_on_and_decays_the_lr_to_the_floor(cooled_run: tuple[RunRecord, Path]) -> None:
    """metrics.csv: the stable phase's steps at the peak LR, then the cooldown's steps (logged again from its
    start step) with the LR falling as 1 - sqrt(progress); only stable checkpoints a cooldown could still
    start from are kept."""
    record, run_dir = cooled_run
    with open(run_dir / "metrics.csv") as fh:
        rows = [r for r in csv.DictReader(fh) if r.get("train/lr")]
    start, n = record.cooldown["from_step"], record.cooldown["steps"]
    cooldown_lrs = [float(r["train/lr"]) for r in rows[-n:]]
    peak = 0.02
    expected = [peak * (1 - math.sqrt(i / n)) for i in range(n)]
    assert cooldown_lrs == pytest.approx(expected)
    assert len(rows) == record.steps
    assert all(float(r["train/lr"]) == pytest.approx(peak) for r in rows[8:start])
    kept = sorted(int(p.stem.split("=")[1]) for p in (run_dir / "checkpoints").glob("stable-step=*.ckpt"))
    assert kept[0] == start and kept[-1] == record.best_step + TINY_TRAINING["patience"] * 8


def test_the_annealed_checkpoint_differs_from_the_stable_one_at_the_same_step(
    cooled_run: tuple[RunRecord, Path],
) -> None:
    """The cooled checkpoint (the record's ``best_checkpoint``) is another model than the stable one at the
    best step, and the validation before the cooldown is the stable phase's at that step."""
    record, run_dir = cooled_run
    cooled = torch.load(record.best_checkpoint, weights_only=False)["state_dict"]
    stable = torch.load(run_dir / "checkpoints" / f"best-step={record.best_step}.ckpt", weights_only=False)
    assert any(not torch.equal(cooled[k], v) for k, v in stable["state_dict"].items())
    assert record.cooldown["val_selection_loss_before"] == pytest.approx(
        next(c["selection_loss"] for c in record.val_curve if c["step"] == record.best_step)
    )
