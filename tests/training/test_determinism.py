"""Determinism: the same config and seed give identical records on CPU across two fresh processes, and a
worker forked from the preloaded parent (``datascale.orchestration.preload``) writes a fresh one's record."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from training_fixtures import resolved_config

from datascale.artifacts import DataArtifacts
from datascale.records import RunRecord, read_record

#: Fields that may differ between two identical runs: clocks, speed, memory, and where files went.
VARYING = {
    "created_at", "wall_time_s", "train_time_s", "tokens_per_s", "step_tokens_per_s", "achieved_flops_per_s",
    "mfu", "peak_flops_per_s", "peak_flops_source", "peak_memory_mib", "best_checkpoint", "wandb", "run_id",
    "config", "code_version",
    # where the wall clock went: measured times, not results
    "startup_s", "startup_cpu_s", "job_setup_s", "teardown_s", "step_time_s", "eval_time_s",
    "checkpoint_time_s", "worker_start",
}  # fmt: skip


def _same_results(a: RunRecord, b: RunRecord) -> None:
    compared = [f.name for f in dataclasses.fields(RunRecord) if f.name not in VARYING]
    assert {k: getattr(a, k) for k in compared} == {k: getattr(b, k) for k in compared}
    assert a.test_loss == b.test_loss and a.val_loss_best == b.val_loss_best  # bit for bit, not approximately


def _run(path: Path) -> RunRecord:
    proc = subprocess.run(
        [sys.executable, "-m", "datascale.training.worker", str(path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return read_record(path.parent / "record.json")


def test_two_fresh_processes_write_identical_records(
    make_artifacts: Callable[[int], DataArtifacts], tmp_path: Path
) -> None:
    artifacts = make_artifacts(2048)
    a, b = (
        _run(resolved_config(tmp_path / name, artifacts, **{"training.cap_epochs": 3.0})) for name in "ab"
    )
    _same_results(a, b)
    assert {k: v for k, v in a.config.items() if k != "run"} == {
        k: v for k, v in b.config.items() if k != "run"
    }


def test_a_forked_worker_writes_the_record_of_a_fresh_interpreter(
    make_artifacts: Callable[[int], DataArtifacts], tmp_path: Path
) -> None:
    """The launcher's path for one-process CPU runs (forked from a forkserver that imported torch, Lightning
    and W&B, its 2 intra-op threads started after the fork) against ``python -m datascale.training.worker``:
    the same record, every loss bit for bit; the record says how each started."""
    from datascale.orchestration.supervise import run_preloaded

    artifacts = make_artifacts(2048)
    fresh = _run(resolved_config(tmp_path / "fresh", artifacts, **{"training.cap_epochs": 3.0}))
    path = resolved_config(tmp_path / "forked", artifacts, **{"training.cap_epochs": 3.0})
    returncode, signals = run_preloaded("datascale.training.worker", [str(path)], dict(os.environ))
    assert returncode == 0 and signals.received is None
    forked = read_record(path.parent / "record.json")
    _same_results(fresh, forked)
    assert (fresh.worker_start, forked.worker_start) == ("exec", "fork")
    assert forked.threads == fresh.threads == len(os.sched_getaffinity(0))
