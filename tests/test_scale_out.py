"""Scale-out on existing launchers, for real: a tiny study through submitit's local executor (one task per
rank, as on SLURM), bounded parallel runs through the joblib launcher, a real single-node SLURM cluster, and
the same study records from ``single``, ``ddp`` and ``fsdp`` at 2 ranks.

Tolerance for "the same records": every loss within ``TOLERANCE`` (relative) of the single-process run, with
identical steps, best step and tokens seen (tests/training/test_strategies.py measures the differences).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest
import slurm_cluster
from study_cli import launch_study

from datascale import SWEEPS_DIR
from datascale.records import RunRecord, find_records

TOLERANCE = 1e-5
LOSSES = ("best_val_loss", "final_val_loss", "test_loss")
RunRecords = dict[int, RunRecord]


def run_study(results: Path, cache: Path, *overrides: str, env: dict[str, str] | None = None) -> RunRecords:
    """The smoke study through ``python -m datascale.launch``; its records by unique tokens."""
    proc = launch_study("smoke", results, cache, *overrides, env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return {r.unique_tokens: r for r in find_records(results / "smoke")}


def assert_same_records(records: RunRecords, reference: RunRecords) -> None:
    assert records.keys() == reference.keys()
    for size, ref in reference.items():
        record = records[size]
        assert (record.steps, record.best_step, record.tokens_seen) == (
            ref.steps,
            ref.best_step,
            ref.tokens_seen,
        )
        for field in LOSSES:
            assert getattr(record, field) == pytest.approx(getattr(ref, field), rel=TOLERANCE), (size, field)


def test_submitit_local_trains_a_two_rank_study_with_one_task_per_rank(tmp_path: Path) -> None:
    records = run_study(
        tmp_path / "results",
        tmp_path / "cache",
        "hydra/launcher=slurm_local",
        "trainer.devices=2",
        "strategy=ddp",
        "subset.unique_tokens=2000",
    )
    record = records[2000]
    assert (record.status, record.world_size, record.strategy) == ("done", 2, "ddp")
    assert len(record.peak_memory_mib) == 2 and record.mfu is not None and record.mfu > 0
    run_dir = tmp_path / "results" / "smoke" / "runs" / record.run_id
    assert (run_dir / "worker.rank1.log").exists()  # rank 1 ran in the second submitit task
    task_logs = sorted(p.name for p in (tmp_path / "results" / "smoke" / "hydra").rglob("*_log.out"))
    assert [name.split("_")[1] for name in task_logs] == ["0", "1"]  # one job, two tasks


@pytest.fixture(scope="module")
def single_study(tmp_path_factory: pytest.TempPathFactory) -> tuple[RunRecords, Path]:
    root = tmp_path_factory.mktemp("scale_out")
    return run_study(root / "single", root / "cache"), root / "cache"


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_rank_study_gives_the_single_process_records(
    single_study: tuple[RunRecords, Path], strategy: str, tmp_path: Path
) -> None:
    reference, cache = single_study
    records = run_study(tmp_path / "results", cache, f"strategy={strategy}", "trainer.devices=2")
    assert {r.strategy for r in records.values()} == {strategy}
    assert_same_records(records, reference)


def _interval(record: RunRecord) -> tuple[float, float]:
    end = datetime.fromisoformat(record.created_at).timestamp()
    return end - record.wall_time_s, end


@pytest.mark.slow
def test_parallel_launcher_runs_two_single_thread_jobs_at_a_time(
    single_study: tuple[RunRecords, Path], tmp_path: Path
) -> None:
    reference, cache = single_study
    records = run_study(tmp_path / "results", cache, "hydra/launcher=parallel", "worker.num_threads=1")
    assert_same_records(records, reference)
    # both runs of the study were training at the same time (created_at has 1 s resolution)
    (start_a, end_a), (start_b, end_b) = (_interval(r) for r in records.values())
    assert min(end_a, end_b) - max(start_a, start_b) > 1.0


@pytest.fixture
def slurm(tmp_path: Path):
    cluster = slurm_cluster.start(tmp_path)
    if isinstance(cluster, str):
        pytest.skip(f"no single-node SLURM here: {cluster}")
    yield cluster
    cluster.stop()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("layout", "environment"),
    [
        (["strategy=ddp"], "SLURMEnvironment"),  # one SLURM task per rank
        (
            ["strategy=fsdp", "hydra.launcher.tasks_per_node=1"],
            "TorchElasticEnvironment",
        ),  # torchrun in a task
    ],
)
def test_real_slurm_trains_a_two_rank_study_point(
    slurm: slurm_cluster.SlurmCluster,
    single_study: tuple[RunRecords, Path],
    layout: list[str],
    environment: str,
    tmp_path: Path,
) -> None:
    """sbatch through hydra-submitit-launcher; 2 ranks on the node, as 2 SLURM tasks or torchrun in one."""
    reference, cache = single_study
    records = run_study(
        tmp_path / "results",
        cache,
        "hydra/launcher=slurm",
        "hydra.launcher.timeout_min=10",
        "trainer.devices=2",
        "subset.unique_tokens=2000",
        *layout,
        env=slurm.env(),
    )
    assert records[2000].world_size == 2
    assert_same_records(records, {2000: reference[2000]})
    log = (tmp_path / "results" / "smoke" / "runs" / records[2000].run_id / "worker.log").read_text()
    assert f"cluster environment {environment}" in log  # on SLURM tasks: Lightning's, its auto-requeue off


@pytest.mark.slow
def test_real_slurm_preemption_saves_requeues_and_resumes(
    slurm: slurm_cluster.SlurmCluster, tmp_path: Path
) -> None:
    """submitit's preemption signal (SIGUSR2, sent before a time limit) to a running job: the Hydra job
    passes it to the worker as SIGTERM, the worker saves at its next step, submitit requeues the job (the one
    component that requeues), and the requeued job resumes the run to a done record."""
    env = {**os.environ, "WANDB_MODE": "disabled", **slurm.env()}
    cmd = [
        sys.executable, "-m", "datascale.launch", "--config-dir", str(SWEEPS_DIR), "--config-name", "smoke",
        f"paths.results_dir={tmp_path / 'results'}", f"paths.cache_dir={tmp_path / 'cache'}",
        "hydra/launcher=slurm", "hydra.launcher.timeout_min=10", "subset.unique_tokens=8000",
        "training.cap_epochs=60", "checkpoint.every_tokens=2048",
    ]  # fmt: skip
    study = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    runs = tmp_path / "results" / "smoke" / "runs"
    deadline = time.time() + 300
    while study.poll() is None and not list(runs.glob("*/resume/*.sha256.json")):
        assert time.time() < deadline, "no checkpoint within 5 minutes"
        time.sleep(0.2)
    jobs = subprocess.run(
        ["squeue", "-h", "-o", "%i"], env=env, capture_output=True, text=True
    ).stdout.split()
    assert len(jobs) == 1, jobs
    subprocess.run(["scancel", "--signal=USR2", jobs[0]], env=env, check=True)
    output, _ = study.communicate(timeout=600)
    assert study.returncode == 0, output[-4000:]
    (run_dir,) = runs.iterdir()
    record = RunRecord.from_dict(__import__("json").loads((run_dir / "record.json").read_text()))
    assert record.status == "done" and record.resumed_at_steps, output[-4000:]
    outcomes = [
        a["outcome"] for a in __import__("json").loads((run_dir / "status.json").read_text())["attempts"]
    ]
    assert outcomes == ["preempted", "done"]


@pytest.mark.slow
def test_real_slurm_pre_registers_the_target_before_it_starts(
    slurm: slurm_cluster.SlurmCluster, tmp_path: Path
) -> None:
    """The three sizes of the smoke study as one sbatch array, the largest a target: the target's job waits
    on the cluster for the other two runs, the prediction is written before it trains, and its record holds
    the prediction's file, sha256 and both times."""
    import json

    records = run_study(
        tmp_path / "results", tmp_path / "cache",
        "hydra/launcher=slurm", "hydra.launcher.timeout_min=10", "subset.unique_tokens=2000,4000,8000",
        "+analysis.predict.targets=[largest]", "+analysis.predict.resamples=50", "+analysis.predict.poll_s=1",
        env={**os.environ, "WANDB_MODE": "disabled", **slurm.env()},
    )  # fmt: skip
    study_dir = tmp_path / "results" / "smoke"
    prediction = json.loads((study_dir / "prediction.json").read_text())
    target = records[8000].preregistration
    assert prediction["targets"] == [8000] and prediction["inputs"]["sizes"] == [2000, 4000]
    assert target["prediction_file"] == f"predictions/{prediction['inputs']['sha256'][:12]}.json"
    assert all(records[u].created_at < prediction["created_at"] for u in (2000, 4000))
    assert prediction["created_at"] < target["started_at"] < records[8000].created_at
    # three sbatch array tasks; the one that pre-registered is a SLURM job of its own
    logs = sorted(study_dir.glob("hydra/*/.submitit/*_*/*_log.out"))
    assert len(logs) == 3
    assert sum("pre-registering the prediction at U=[8000]" in p.read_text() for p in logs) == 1
