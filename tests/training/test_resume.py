"""Kill-safe runs: a worker killed with SIGKILL (or preempted with SIGTERM) resumes to the record of an
uninterrupted run; damaged checkpoints are never loaded; a diverging run stops with a record that says why."""

from __future__ import annotations

import csv
import logging
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from omegaconf import OmegaConf
from training_fixtures import resolved_config

from datascale import CONF_DIR
from datascale.artifacts import DataArtifacts
from datascale.orchestration.launch import DISTRIBUTED_ENV, torchrun_command
from datascale.records import RunRecord, read_record
from datascale.training import worker
from datascale.training.checkpoint_files import (
    EXIT_PREEMPTED,
    RESUME_DIR,
    checkpoint_step,
    checksum_path,
    latest_complete,
    resume_checkpoints,
)

U = 2048  # 8 steps per epoch, 48 planned steps, an evaluation every 8 steps
#: A resume checkpoint every 2 steps between evaluations (512 tokens): kills land between many of them.
CHECKPOINTS = {"_target_": "datascale.training.resume.CheckpointSettings", "every_tokens": 512}
#: Fields that must not differ between an interrupted and an uninterrupted run (times and ids excluded).
SCIENCE_FIELDS = (
    "steps", "best_step", "tokens_seen", "epochs", "stop_reason", "best_val_loss", "final_val_loss",
    "test_loss", "val_loss_best", "val_loss_final", "test_loss_by_domain", "test_bpb",
)  # fmt: skip


@pytest.fixture(scope="module")
def artifacts(make_artifacts: Callable[[int], DataArtifacts]) -> DataArtifacts:
    return make_artifacts(U)


def run_config(run_dir: Path, artifacts: DataArtifacts, **overrides: Any) -> Path:
    return resolved_config(run_dir, artifacts, **{"checkpoint": CHECKPOINTS, **overrides})


@pytest.fixture(scope="module")
def reference(artifacts: DataArtifacts, tmp_path_factory: pytest.TempPathFactory) -> tuple[RunRecord, Path]:
    run_dir = tmp_path_factory.mktemp("ref") / "run"
    return worker.run(run_config(run_dir, artifacts)), run_dir


def start_worker(path: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "datascale.training.worker", str(path)]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def wait_for_checkpoint_after(proc: subprocess.Popen, folder: Path, step: int, timeout: float = 120) -> int:
    """Block until a complete resume checkpoint newer than ``step`` exists; its step (-1: worker ended)."""
    deadline = time.time() + timeout
    while proc.poll() is None and time.time() < deadline:
        steps = [s for s, p in resume_checkpoints(folder) if s > step and checksum_path(p).exists()]
        if steps:
            return max(steps)
        time.sleep(0.01)
    return -1


def kill_tree(pid: int) -> None:
    """SIGKILL a process and its children at once (torchrun's ranks have their own process groups)."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    for victim in [pid, *map(int, children)]:
        os.kill(victim, signal.SIGKILL)


def point_at_latest(path: Path) -> Path | None:
    """What the launcher does before a rerun: ``run.resume_from`` = the latest complete checkpoint."""
    latest = latest_complete(path.parent / RESUME_DIR)
    cfg = OmegaConf.load(path)
    OmegaConf.update(cfg, "run.resume_from", None if latest is None else str(latest), merge=False)
    OmegaConf.save(cfg, path)
    return latest


def train_column(run_dir: Path, column: str = "train/loss") -> list[str]:
    with open(run_dir / "metrics.csv") as fh:
        return [row[column] for row in csv.DictReader(fh) if row.get(column)]


def test_sigkill_at_three_points_resumes_to_the_uninterrupted_record(
    reference: tuple[RunRecord, Path], artifacts: DataArtifacts, tmp_path: Path
) -> None:
    """Killed right after the first checkpoint, at a random moment after the next one (training, evaluation
    or a checkpoint write), and after one late in the run: the final record equals the uninterrupted one
    exactly (same float operations in the same order on CPU: tolerance 0)."""
    ref, ref_dir = reference
    path = run_config(tmp_path / "run", artifacts)
    rng, resumed = random.Random(7), 0
    for after_step, delay in ((0, 0.0), (0, rng.uniform(0.0, 0.2)), (36, 0.0)):
        proc = start_worker(path)
        seen = wait_for_checkpoint_after(proc, tmp_path / "run" / RESUME_DIR, max(after_step, resumed))
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait() == -signal.SIGKILL and seen > 0, "the worker ended before it was killed"
        assert not (tmp_path / "run" / "record.json").exists()
        latest = point_at_latest(path)
        assert latest is not None
        resumed = checkpoint_step(latest)
    record = worker.run(path)
    assert record.status == "done" and len(record.resumed_at_steps) == 3
    assert record.resumed_at_steps == sorted(record.resumed_at_steps)
    assert record.resumed_at_steps[-1] == resumed
    for name in SCIENCE_FIELDS:
        assert getattr(record, name) == getattr(ref, name), name
    assert train_column(tmp_path / "run") == train_column(ref_dir)  # one row per step, no replayed duplicates
    assert train_column(tmp_path / "run", "val/loss") == train_column(ref_dir, "val/loss")


def test_sigterm_saves_at_the_next_step_exits_75_and_resumes(
    reference: tuple[RunRecord, Path], artifacts: DataArtifacts, tmp_path: Path
) -> None:
    ref, _ = reference
    # one resume checkpoint per evaluation interval (2048 tokens = 8 steps), saved after its evaluation
    path = run_config(tmp_path / "run", artifacts, **{"checkpoint.every_tokens": 2048})
    folder = tmp_path / "run" / RESUME_DIR
    proc = start_worker(path)
    first = wait_for_checkpoint_after(proc, folder, 0)  # the first evaluation's checkpoint (step 8)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == EXIT_PREEMPTED, err[-2000:]
    assert "worker preempted" in err
    saved = checkpoint_step(latest_complete(folder) or folder)
    # a checkpoint at the first step boundary after the signal: a later one, or (when the signal came before
    # the next step began, as on a loaded machine) the evaluation's own, which is then the latest state
    assert saved >= first
    assert not (tmp_path / "run" / "record.json").exists()  # a preempted run is not a failed one
    point_at_latest(path)
    record = worker.run(path)
    assert record.resumed_at_steps == [saved]
    for name in SCIENCE_FIELDS:
        assert getattr(record, name) == getattr(ref, name), name


def test_damaged_checkpoints_are_skipped_named_and_never_loaded(
    reference: tuple[RunRecord, Path], caplog: pytest.LogCaptureFixture
) -> None:
    _, ref_dir = reference
    folder = ref_dir / RESUME_DIR
    (newest_step, newest), (_, older) = resume_checkpoints(folder)[:2]
    assert latest_complete(folder) == newest
    with open(newest, "r+b") as fh:  # a write cut short
        fh.truncate(newest.stat().st_size // 2)
    with caplog.at_level(logging.WARNING, logger="datascale.training"):
        assert latest_complete(folder) == older
    assert f"skipping damaged resume checkpoint {newest}: checksum mismatch" in caplog.text
    assert not newest.exists() and list(folder.glob(f"{newest.name}.damaged-*"))
    checksum_path(older).unlink()  # killed between the checkpoint and its checksum
    assert latest_complete(folder) is None
    assert newest_step == 48


def test_non_finite_loss_stops_the_run_with_a_failed_record_and_exit_3(
    artifacts: DataArtifacts, tmp_path: Path
) -> None:
    diverging = {"optim.lr": 1.0e6, "training.grad_clip": None, "training.warmup_tokens": 0}
    path = run_config(tmp_path / "run", artifacts, **diverging)
    assert worker.main([str(path)]) == worker.EXIT_DIVERGED
    record = read_record(tmp_path / "run" / "record.json")
    assert record.status == "failed" and record.stop_reason == "non_finite_loss"
    assert 0 < record.steps < record.planned_steps
    assert record.error == f"NonFiniteLossError: non-finite training loss nan at step {record.steps}"


@pytest.mark.slow
@pytest.mark.parametrize("name", ["ddp", "fsdp"])
def test_two_rank_runs_killed_and_resumed_reproduce_the_uninterrupted_record(
    name: str, reference: tuple[RunRecord, Path], artifacts: DataArtifacts, tmp_path: Path
) -> None:
    """2 ranks under torchrun, torchrun and its ranks SIGKILLed after a checkpoint (FSDP: a sharded
    directory, checksummed file by file), resumed under torchrun: within the strategies' tolerance of the
    uninterrupted single-process record (test_strategies: float32 summation order, measured <= 3.5e-7)."""
    ref, _ = reference
    strategy = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "strategy" / f"{name}.yaml"))
    path = run_config(tmp_path / "run", artifacts, **{"strategy": strategy, "trainer.devices": 2})
    env = {k: v for k, v in os.environ.items() if k not in DISTRIBUTED_ENV} | {"OMP_NUM_THREADS": "1"}
    cmd = torchrun_command(path, 2)
    proc = subprocess.Popen(cmd, env=env, stderr=subprocess.DEVNULL)
    assert wait_for_checkpoint_after(proc, tmp_path / "run" / RESUME_DIR, 16, timeout=300) > 0
    kill_tree(proc.pid)
    proc.wait()
    latest = point_at_latest(path)
    assert latest is not None and (latest.is_dir() == (name == "fsdp"))
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    record = read_record(tmp_path / "run" / "record.json")
    assert record.resumed_at_steps == [checkpoint_step(latest)] and record.strategy == name
    assert (record.steps, record.best_step) == (ref.steps, ref.best_step)
    rel = {
        f: abs(getattr(record, f) / getattr(ref, f) - 1)
        for f in ("best_val_loss", "final_val_loss", "test_loss")
    }
    print(f"{name} resumed at {record.resumed_at_steps}: relative differences {rel}")
    assert max(rel.values()) <= 1e-5, rel


def test_a_run_killed_during_its_cooldown_resumes_to_the_uninterrupted_record(
    artifacts: DataArtifacts, tmp_path: Path
) -> None:
    """``schedule=wsd_cooldown``: killed while annealing (no resume checkpoint is written then), the run
    resumes the stable phase from its last checkpoint, anneals again and ends with the uninterrupted record
    and one metrics row per logged step."""
    cooldown = {"schedule": {"_target_": "datascale.training.schedule.WarmupStableCooldown"}}
    ref = worker.run(run_config(tmp_path / "ref", artifacts, **cooldown))
    assert ref.cooldown["from_step"] < ref.best_step
    path = run_config(tmp_path / "run", artifacts, **cooldown)
    proc = start_worker(path)
    log, deadline = tmp_path / "run" / "worker.log", time.time() + 120
    while proc.poll() is None and time.time() < deadline:
        if log.exists() and "cooldown:" in log.read_text():
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, "the worker ended before its cooldown was killed"
    assert not (tmp_path / "run" / "record.json").exists()
    latest = point_at_latest(path)
    assert latest is not None and checkpoint_step(latest) > ref.cooldown["from_step"]
    record = worker.run(path)
    assert record.resumed_at_steps == [checkpoint_step(latest)]
    for name in (*SCIENCE_FIELDS, "tokens_at_best", "schedule_position", "lr_ratio_at_test"):
        assert getattr(record, name) == getattr(ref, name), name
    assert {k: v for k, v in record.cooldown.items() if k != "time_s"} == {
        k: v for k, v in ref.cooldown.items() if k != "time_s"
    }
    assert train_column(tmp_path / "run") == train_column(tmp_path / "ref")
