"""Studies that survive kills, crashes and each other: run leases held by real processes, a killed Hydra job
whose worker saves and resumes, crashed runs retried up to a limit, diverged runs recorded while the study
goes on, and two study invocations at once that never train one run twice."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from study_cli import launch_study

from datascale.orchestration.supervise import acquire_lease, lease_holder
from datascale.records import previous_attempts, read_record

HOLD = """
import sys, time
from datascale.orchestration.supervise import acquire_lease
lease = acquire_lease(sys.argv[1], float(sys.argv[2]))
print("held" if lease else "refused", flush=True)
time.sleep(300)
"""


def hold_lease(run_dir: Path, lease_s: float) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(run_dir), str(lease_s)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def test_a_lease_is_held_by_a_live_process_and_taken_over_from_a_dead_or_hung_one(tmp_path: Path) -> None:
    """Killed holder: taken at once. Hung holder (SIGSTOP: alive, heartbeat stopped, as a host that lost the
    shared disk): taken after the lease expires, not before."""
    holder = hold_lease(tmp_path, 5)
    try:
        assert acquire_lease(tmp_path, 5) is None  # alive and renewing
        assert f"pid {holder.pid}" in lease_holder(tmp_path)
    finally:
        holder.kill()
        holder.wait()
    lease = acquire_lease(tmp_path, 5)
    assert lease is not None
    lease.release()

    hung = hold_lease(tmp_path, 5)
    try:
        os.kill(hung.pid, signal.SIGSTOP)
        started = time.monotonic()
        assert acquire_lease(tmp_path, 5) is None  # not yet stale
        while (lease := acquire_lease(tmp_path, 5)) is None:
            assert time.monotonic() - started < 30, "a lease that is not renewed must be taken over"
            time.sleep(0.5)
        assert time.monotonic() - started >= 5
        lease.release()
    finally:
        hung.kill()
        hung.wait()


def _status(run_dir: Path) -> dict:
    return json.loads((run_dir / "status.json").read_text())


@pytest.mark.slow
def test_a_crashing_run_is_retried_up_to_the_limit_and_a_diverged_one_is_not(tmp_path: Path) -> None:
    """Two runs of one study: lr 1e6 diverges (recorded, not retried); the other crashes in the worker (a GPU
    asked for on a machine without one: a launcher on a login node cannot know) and is retried once, each
    attempt's reason kept. The study finishes both, lists them, and exits 1."""
    proc = launch_study(
        "smoke", tmp_path / "results", tmp_path / "cache",
        "subset.unique_tokens=2000", "optim.lr=1e6,0.003", "training.grad_clip=null",
        "training.warmup_tokens=0", "study.max_attempts=2", "trainer.accelerator=gpu",
    )  # fmt: skip
    assert proc.returncode != 0
    assert "2 of 2 runs failed" in proc.stderr, proc.stderr[-3000:]
    runs = sorted((tmp_path / "results" / "smoke" / "runs").iterdir())
    statuses = {read_record(r / "record.json").config["optim"]["lr"]: _status(r) for r in runs}
    assert set(statuses) == {1e6, 0.003}
    for status in statuses.values():  # the GPU request fails before any step: both crash identically
        assert [a["outcome"] for a in status["attempts"]] == ["failed", "failed"]
        assert all(a["exit_code"] == 1 for a in status["attempts"])
    assert all(len(previous_attempts(r)) == 1 for r in runs)  # the first attempt's record is kept
    assert "gave up after 2 failed attempts" in proc.stderr


def test_a_diverged_run_is_recorded_once_and_the_study_goes_on(tmp_path: Path) -> None:
    proc = launch_study(
        "smoke", tmp_path / "results", tmp_path / "cache",
        "subset.unique_tokens=2000", "optim.lr=1e6,0.003", "training.grad_clip=null",
        "training.warmup_tokens=0",
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr[-3000:]
    records = {}
    for run_dir in (tmp_path / "results" / "smoke" / "runs").iterdir():
        record = read_record(run_dir / "record.json")
        records[record.config["optim"]["lr"]] = (record, _status(run_dir))
    diverged, diverged_status = records[1e6]
    assert diverged.status == "failed" and diverged.stop_reason == "non_finite_loss"
    assert f"at step {diverged.steps}" in (diverged.error or "")
    assert [a["outcome"] for a in diverged_status["attempts"]] == ["failed"]  # not retried
    assert diverged_status["attempts"][0]["reason"].startswith("diverged: NonFiniteLossError")
    good, _ = records[0.003]
    assert good.status == "done"
    assert "1 of 2 runs failed" in proc.stderr and "diverged" in proc.stderr


@pytest.mark.slow
def test_a_killed_study_resumes_its_run_to_the_uninterrupted_record(tmp_path: Path) -> None:
    """SIGKILL of the Hydra job: its worker gets SIGTERM (parent-death signal), saves and stops; the study
    run again resumes the run from that checkpoint, and its record equals an uninterrupted run's."""
    args = (
        "subset.unique_tokens=8000",
        "training.cap_epochs=30",
        "checkpoint.every_tokens=4096",
    )
    reference = launch_study("smoke", tmp_path / "ref", tmp_path / "cache", *args)
    assert reference.returncode == 0, reference.stderr[-3000:]
    cmd = launch_study_command(tmp_path / "results", tmp_path / "cache", *args)
    job = subprocess.Popen(cmd, env={**os.environ, "WANDB_MODE": "disabled"}, stderr=subprocess.DEVNULL)
    runs = tmp_path / "results" / "smoke" / "runs"
    while job.poll() is None and not list(runs.glob("*/resume/*.sha256.json")):
        time.sleep(0.05)
    job.kill()
    job.wait()
    time.sleep(3)  # the worker saves at its next step and exits
    again = launch_study("smoke", tmp_path / "results", tmp_path / "cache", *args)
    assert again.returncode == 0, again.stderr[-3000:]
    (run_dir,) = runs.iterdir()
    record = read_record(run_dir / "record.json")
    (ref_dir,) = (tmp_path / "ref" / "smoke" / "runs").iterdir()
    expected = read_record(ref_dir / "record.json")
    assert record.resumed_at_steps and record.run_id == expected.run_id
    for name in ("steps", "best_step", "best_val_loss", "test_loss", "val_loss_final", "test_bpb"):
        assert getattr(record, name) == getattr(expected, name), name


def launch_study_command(results: Path, cache: Path, *overrides: str) -> list[str]:
    from datascale import SWEEPS_DIR

    return [
        sys.executable, "-m", "datascale.launch", "--config-dir", str(SWEEPS_DIR), "--config-name", "smoke",
        f"paths.results_dir={results}", f"paths.cache_dir={cache}", *overrides,
    ]  # fmt: skip


def test_two_study_invocations_at_once_never_train_one_run_twice(tmp_path: Path) -> None:
    cmd = launch_study_command(tmp_path / "results", tmp_path / "cache", "training.cap_epochs=20")
    env = {**os.environ, "WANDB_MODE": "disabled"}
    first = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True)
    second = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True)
    outputs = [p.communicate(timeout=900)[1] for p in (first, second)]
    assert first.returncode == 0 and second.returncode == 0, outputs
    runs = list((tmp_path / "results" / "smoke" / "runs").iterdir())
    assert len(runs) == 2
    for run_dir in runs:
        assert read_record(run_dir / "record.json").status == "done"
        assert len(_status(run_dir)["attempts"]) == 1  # trained by exactly one invocation
        assert (run_dir / "worker.log").read_text().count("start run") == 1
    joined = "\n".join(outputs)
    assert joined.count("trained") >= 2 and ("locked" in joined or "skipped" in joined)
