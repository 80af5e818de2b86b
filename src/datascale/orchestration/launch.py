"""The Hydra job: validate the config, prepare the data, and launch training as a worker subprocess.

Lightning's ``ddp`` inside a Hydra multirun re-executes the whole sweep in every rank (upstream bug), so a
Hydra job never hosts training ranks. It resolves the config once, derives the run id from it and the data
manifest, skips runs that are already done, writes ``resolved.yaml`` and runs the worker on it: a one-process
run as ``python -m datascale.training.worker resolved.yaml`` (a world of one needs no rendezvous: torchrun's
agent cost a second interpreter with torch and a polling process per run), several ranks on one node under
``torchrun -m datascale.training.worker resolved.yaml``. One worker serves one process, DDP and FSDP.

Usage (console script ``datascale``; ``python -m datascale.launch`` is the same)::

    datascale subset.unique_tokens=32000 seed=1          # one run
    datascale --config-dir sweeps --config-name data_size  # a study (multirun)
"""

from __future__ import annotations

import logging
import math
import os
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hydra
from hydra.core.global_hydra import GlobalHydra
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from datascale import CONF_DIR
from datascale.config_errors import ConfigError, require, require_positive_int
from datascale.configs import axis_values, instantiate_group
from datascale.ladder_rules import apply_lr_rule, apply_tokens_per_param
from datascale.orchestration.overrides import check_overrides
from datascale.orchestration.preload import warm
from datascale.orchestration.preregister import PreregistrationError, await_prediction, write_plan
from datascale.orchestration.supervise import (
    ForwardedSignals,
    acquire_lease,
    failures,
    lease_holder,
    outcome_of,
    read_attempts,
    record_attempt,
    resume_point,
    run_preloaded,
    run_worker,
)
from datascale.records import RECORD_FILENAME, is_done, read_record
from datascale.run_id import run_identity
from datascale.secrets import check_no_secrets
from datascale.training.checkpoint_files import EXIT_PREEMPTED
from datascale.training.clock import JOB_STARTED_ENV, SPAWNED_ENV
from datascale.training.objective import check_objective
from datascale.training.strategy import strategy_spec

log = logging.getLogger("datascale.launch")

#: Config groups whose (torch-free) leaves are instantiated, and so validated, before any compute is spent.
#: ``trainer``, ``strategy``, ``optim`` build torch objects: the launcher checks their values, the worker
#: builds them.
VALIDATED_GROUPS = (
    "source", "split", "tokenizer", "subset", "model", "objective", "schedule", "training", "worker",
    "finetune", "checkpoint",
)  # fmt: skip
#: Environment variables of an enclosing distributed job that must not leak into the torchrun we start.
DISTRIBUTED_ENV = (
    "LOCAL_RANK",
    "RANK",
    "WORLD_SIZE",
    "LOCAL_WORLD_SIZE",
    "GROUP_RANK",
    "ROLE_RANK",
    "MASTER_ADDR",
    "MASTER_PORT",
    "TORCHELASTIC_RUN_ID",
)
#: A study name is a single directory name: no path separators, no `..`, no hidden directory.
STUDY_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*")


class LaunchError(RuntimeError):
    """A run could not be trained; the message says where its log is."""


def validate_config(cfg: DictConfig) -> dict[str, Any]:
    """Instantiate every torch-free leaf and check the rest; raise a one-line :class:`ConfigError` on bad
    input.

    Returns the instantiated leaves.
    """
    leaves = {group: instantiate_group(cfg, group) for group in VALIDATED_GROUPS}
    n_params = leaves["model"].parameter_counts()["non_embedding"]
    apply_lr_rule(cfg, n_params)  # before optim is checked
    if apply_tokens_per_param(cfg, n_params) is not None:  # the token cap as a multiple of N
        leaves["training"] = instantiate_group(cfg, "training")
    devices, num_nodes = layout(cfg)
    leaves["training"].validate(
        seq_len=leaves["model"].seq_len,
        world_size=devices * num_nodes,
        unique_tokens=leaves["subset"].unique_tokens,
    )
    leaves["training"].micro_batch(
        leaves["model"].seq_len, devices * num_nodes, leaves["worker"].max_micro_batch_tokens
    )
    check_objective(leaves["objective"], leaves["tokenizer"])
    _check_optimizer(cfg.optim)
    _check_strategy(cfg, devices * num_nodes)
    _check_study(cfg)
    check_no_secrets(resolved_config(cfg))
    return leaves


def validate_and_prepare(cfg: DictConfig, progress: bool = True) -> tuple[dict[str, Any], Any]:
    """Validate a study point and prepare (or reuse) its data: every check that can run before training.

    Returns the instantiated leaves and the :class:`~datascale.artifacts.DataArtifacts`.
    """
    from datascale.data.prepare import prepare_from_config  # data stage; imported late to keep --help fast

    leaves = validate_config(cfg)
    artifacts = prepare_from_config(cfg, progress=progress)
    vocab = leaves["model"].vocab_size
    require(
        vocab >= artifacts.vocab_size,
        "model.vocab_size",
        vocab,
        f"must be >= the tokenizer's vocabulary size {artifacts.vocab_size}",
    )
    return leaves, artifacts


def layout(cfg: DictConfig) -> tuple[int, int]:
    """(ranks per node, nodes) from the Trainer arguments, checked.

    More than one node needs a launcher that starts one task per rank on every node (``hydra/launcher=slurm``:
    submitit with ``tasks_per_node = trainer.devices`` and ``nodes = trainer.num_nodes``); :func:`run_job`
    checks that the tasks it runs in match this layout.
    """
    devices = OmegaConf.select(cfg, "trainer.devices", default=1)
    num_nodes = OmegaConf.select(cfg, "trainer.num_nodes", default=1)
    require_positive_int("trainer.devices", devices)
    require_positive_int("trainer.num_nodes", num_nodes)
    return int(devices), int(num_nodes)


def _check_strategy(cfg: DictConfig, world_size: int) -> None:
    """The strategy leaf names a class, and the layout and precision are ones its spec supports."""
    target = OmegaConf.select(cfg, "strategy._target_", default=None)
    require(
        isinstance(target, str) and bool(target), "strategy._target_", target, "must name a strategy class"
    )
    spec = strategy_spec(cfg.strategy)
    chosen = f"strategy={spec.option or target}"
    require(
        not (spec.single_process and world_size > 1),
        "trainer.devices",
        world_size,
        f"{chosen} runs one process: set trainer.devices=1, or use strategy=ddp or strategy=fsdp",
    )
    precision = str(OmegaConf.select(cfg, "trainer.precision", default="32-true"))
    require(
        spec.precisions is None or precision in spec.precisions,
        "trainer.precision",
        precision,
        f"{chosen} supports {list(spec.precisions or ())}",
    )


def _check_study(cfg: DictConfig) -> None:
    study = cfg.study.name
    require(
        isinstance(study, str) and STUDY_NAME.fullmatch(study) is not None,
        "study.name",
        study,
        "must be letters, digits, '_', '-' or '.' (not first): it names a directory under paths.results_dir",
    )
    for axis in cfg.study.axes:
        if OmegaConf.select(cfg, axis, default=None) is None:
            raise ConfigError("study.axes", axis, "every axis must be a dotted key of the config")
    require_positive_int("study.max_attempts", cfg.study.get("max_attempts", 3))
    lease = cfg.study.get("lock_lease_s", 120)
    require(
        isinstance(lease, int | float) and not isinstance(lease, bool) and lease >= 5,
        "study.lock_lease_s",
        lease,
        "must be a number of seconds >= 5 (heartbeats renew it every third of it)",
    )


def _check_optimizer(optim: DictConfig) -> None:
    """The optimizer leaf is a torch class (no dataclass to validate), so its values are checked here."""
    lr = optim.get("lr")
    require(isinstance(lr, int | float) and lr > 0, "optim.lr", lr, "must be a positive number")
    weight_decay = optim.get("weight_decay", 0.0)
    require(
        isinstance(weight_decay, int | float) and weight_decay >= 0,
        "optim.weight_decay",
        weight_decay,
        "must be a number >= 0",
    )
    betas = list(optim.get("betas", [0.9, 0.999]))
    require(
        len(betas) == 2 and all(isinstance(b, int | float) and 0 <= b < 1 for b in betas),
        "optim.betas",
        betas,
        "must be two numbers in [0, 1)",
    )


def torchrun_command(resolved_path: Path, nproc_per_node: int) -> list[str]:
    """One node, ``nproc_per_node`` ranks, a free rendezvous port (so parallel jobs never collide)."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc_per_node}",
        "-m",
        "datascale.training.worker",
        str(resolved_path),
    ]


def worker_env(nproc_per_node: int, task: RankTask | None = None) -> dict[str, str]:
    """This process's environment without an enclosing job's rank variables, plus this task's rank if the
    launcher started one task per rank (so the worker joins the job's process group, not a new one)."""
    env = {k: v for k, v in os.environ.items() if k not in DISTRIBUTED_ENV}
    env["TOKENIZERS_PARALLELISM"] = "false"
    env.setdefault("WANDB_START_METHOD", "thread")
    if nproc_per_node > 1:
        env["OMP_NUM_THREADS"] = "1"
    if task is not None:
        env.update(task.torch_env())
    return env


@dataclass(frozen=True)
class RankTask:
    """One rank of a job whose launcher (submitit: SLURM or local) started one task per rank."""

    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    node_rank: int
    master_addr: str
    master_port: int
    job_id: str

    @classmethod
    def from_submitit(cls) -> RankTask | None:
        """This task's rank from submitit's job environment; None outside a multi-task submitit job."""
        if not os.environ.get("SUBMITIT_EXECUTOR"):
            return None
        from submitit import JobEnvironment
        from submitit.helpers import TorchDistributedEnvironment

        job = JobEnvironment()
        if job.num_tasks <= 1:
            return None
        dist = TorchDistributedEnvironment()  # rank-0 host and a port derived from the job id
        return cls(
            dist.rank,
            dist.world_size,
            dist.local_rank,
            dist.local_world_size,
            job.node,
            dist.master_addr,
            dist.master_port,
            str(job.job_id),
        )

    def torch_env(self) -> dict[str, str]:
        """torchrun's variables, so Lightning finds the ranks (TorchElastic, or SLURM's own on a cluster)."""
        return {
            "RANK": str(self.rank),
            "WORLD_SIZE": str(self.world_size),
            "LOCAL_RANK": str(self.local_rank),
            "LOCAL_WORLD_SIZE": str(self.local_world_size),
            "GROUP_RANK": str(self.node_rank),
            "MASTER_ADDR": self.master_addr,
            "MASTER_PORT": str(self.master_port),
            "TORCHELASTIC_RUN_ID": f"submitit-{self.job_id}",
        }


WORKER_MODULE = "datascale.training.worker"
#: Device nodes of a GPU driver (NVIDIA, AMD): a machine with them keeps fresh worker interpreters.
GPU_DEVICE_NODES = ("/dev/nvidiactl", "/dev/kfd")


def direct_command(resolved_path: Path) -> list[str]:
    """The worker itself in this interpreter: one rank (a world of one, or a task of a task-per-rank job)."""
    return [sys.executable, "-m", WORKER_MODULE, str(resolved_path)]


def forks_preloaded(cfg: DictConfig, task: RankTask | None) -> bool:
    """True when the run's worker is forked from the preloaded parent (``datascale.orchestration.preload``):
    one process on a CPU, started by this job, ``worker.preload`` on. torchrun, a task per rank and GPUs
    (``trainer.accelerator`` cuda/gpu, or auto where a GPU driver is present) start a fresh interpreter."""
    devices, num_nodes = layout(cfg)
    if task is not None or devices * num_nodes != 1:
        return False
    if not OmegaConf.select(cfg, "worker.preload", default=True):
        return False
    accelerator = str(OmegaConf.select(cfg, "trainer.accelerator", default="auto"))
    return accelerator == "cpu" or (
        accelerator == "auto" and not any(Path(p).exists() for p in GPU_DEVICE_NODES)
    )


def worker_command(resolved_path: Path, devices: int, num_nodes: int, task: RankTask | None) -> list[str]:
    """The worker directly for one process (no torchrun: nothing to rendezvous), torchrun for several ranks
    on one node, or (one task per rank) this rank's worker; the layout must match the tasks."""
    if task is None:
        require(
            num_nodes == 1,
            "trainer.num_nodes",
            num_nodes,
            "needs one task per rank on every node: hydra/launcher=slurm (tasks_per_node=devices, nodes)",
        )
        return direct_command(resolved_path) if devices == 1 else torchrun_command(resolved_path, devices)
    if task.world_size != devices * num_nodes or task.local_world_size != devices:
        raise LaunchError(
            f"the launcher started {task.world_size} tasks ({task.local_world_size} per node) but "
            f"trainer.devices={devices} x trainer.num_nodes={num_nodes}: set hydra.launcher.tasks_per_node"
            " = trainer.devices and hydra.launcher.nodes = trainer.num_nodes"
        )
    return direct_command(resolved_path)


def resolved_config(cfg: DictConfig) -> dict[str, Any]:
    """The config as the worker will read it (resolved, without Hydra's own node)."""
    job = OmegaConf.masked_copy(cfg, [str(k) for k in cfg if k != "hydra"])  # a composed cfg may hold `hydra`
    resolved: dict[str, Any] = OmegaConf.to_container(job, resolve=True, throw_on_missing=True)  # type: ignore[assignment]
    return resolved


def run_dir_of(cfg: DictConfig, subset_hash: str) -> tuple[str, Path]:
    """(run id, run directory) of a composed study point: the hash of its resolved config and data."""
    run_id = run_identity(resolved_config(cfg), subset_hash)
    return run_id, Path(cfg.paths.results_dir) / cfg.study.name / "runs" / run_id


@dataclass
class Job:
    """One study point being trained by this Hydra job."""

    cfg: DictConfig
    run_dir: Path
    resolved: dict[str, Any]
    """The resolved config; ``run`` (id, dir, data artifacts, axes, resume_from) is added per attempt."""
    artifacts: Any
    summary: dict[str, Any]
    """run id, run dir and axes: what the study table shows."""
    task: RankTask | None
    """This task's rank when the launcher started one task per rank (submitit), else None (torchrun)."""
    started: float
    """When this job began the current attempt (the first: before validation and data preparation)."""
    preregistration: dict[str, Any] = field(default_factory=dict)
    """A target run's pre-registered prediction (``preregister.await_prediction``), else empty."""


def run_job(cfg: DictConfig) -> dict[str, Any]:
    """One study point: returns a short summary (status, run id, run dir, and why for a run not trained).

    Statuses: ``trained``, ``skipped`` (done before), ``locked`` (another process trains it), ``failed``
    (with the reason; the study goes on), ``preempted`` (saved; resumes when the study runs again).
    """
    started = time.time()
    _, artifacts = validate_and_prepare(cfg)
    resolved = resolved_config(cfg)
    run_id, run_dir = run_dir_of(cfg, artifacts.subset_hash)
    summary: dict[str, Any] = {"run_id": run_id, "run_dir": str(run_dir), "axes": axis_values(cfg)}
    if is_done(run_dir):
        log.info("skip %s %s: already done (%s)", run_id, summary["axes"], run_dir / RECORD_FILENAME)
        return summary | {"status": "skipped"}

    run_dir.mkdir(parents=True, exist_ok=True)
    try:  # a target of a pre-registered prediction starts only once the prediction is written
        preregistration = await_prediction(cfg, run_dir)
    except PreregistrationError as err:
        log.error("run %s not started: %s", run_id, err)
        return summary | {"status": "failed", "reason": str(err)}
    task = RankTask.from_submitit()
    if forks_preloaded(cfg, task):  # the forkserver imports the worker meanwhile (the prediction's wait too)
        warm()
    if preregistration:  # the wait for the prediction is not this run's start-up
        started = time.time()
    job = Job(cfg, run_dir, resolved, artifacts, summary, task, started, preregistration)
    if task is not None and task.rank > 0:  # one task per rank: rank 0 owns the lease and the record
        return summary | _train_rank(job)
    lease = acquire_lease(run_dir, float(cfg.study.get("lock_lease_s", 120)))
    if lease is None:
        holder = lease_holder(run_dir)
        log.warning("skip %s: another process is training it (%s)", run_id, holder)
        return summary | {"status": "locked", "reason": f"held by {holder}"}
    try:
        if is_done(run_dir):  # finished by another process just before we took the lease
            return summary | {"status": "skipped"}
        return summary | _attempts(job)
    finally:
        lease.release()


def _attempts(job: Job) -> dict[str, Any]:
    """Run the worker until the run is done, preempted, failed for good, or out of attempts."""
    limit, run_id = int(job.cfg.study.get("max_attempts", 3)), job.summary["run_id"]
    attempts = read_attempts(job.run_dir)
    while failures(attempts) < limit:
        started = time.time()
        returncode, signals = _run_worker(job)
        outcome = outcome_of(job.run_dir, returncode, signals.received, started)
        record_attempt(job.run_dir, attempts, outcome | attempt_times(job.run_dir, started))
        job.started = time.time()  # a next attempt's set-up counts from here
        if outcome["outcome"] == "done":
            return _trained(job.run_dir, time.time() - started)
        if outcome["outcome"] == "preempted":
            log.warning("run %s preempted: its resume checkpoint is saved", run_id)
            signals.hand_on()  # submitit requeues the job; without a handler this process ends here
            return {"status": "preempted", "reason": outcome["reason"]}
        log.warning("run %s attempt %d failed: %s", run_id, len(attempts), outcome["reason"])
        if not outcome["retry"]:
            return {"status": "failed", "reason": outcome["reason"]}
    last = attempts[-1]["reason"] if attempts else "none"
    reason = f"gave up after {failures(attempts)} failed attempts (study.max_attempts={limit}); last: {last}"
    log.error("run %s %s", run_id, reason)
    return {"status": "failed", "reason": reason}


def attempt_times(run_dir: Path, started: float) -> dict[str, float]:
    """The attempt's seconds, and (when it wrote a record) the seconds its worker took to exit after the
    record: W&B's finish and the interpreter's teardown, which no record can hold."""
    now, path = time.time(), Path(run_dir) / RECORD_FILENAME
    times = {"seconds": round(now - started, 1)}
    if path.exists() and path.stat().st_mtime >= started:
        times["exit_after_record_s"] = round(now - path.stat().st_mtime, 2)
    return times


def _trained(run_dir: Path, elapsed: float) -> dict[str, Any]:
    record = read_record(run_dir / RECORD_FILENAME)
    log.info(
        "done %s in %.0f s: best val %.4f, test %.4f, %.1f epochs, %s%s",
        record.run_id,
        elapsed,
        record.best_val_loss,
        record.test_loss,
        record.epochs,
        record.stop_reason,
        f", resumed at steps {record.resumed_at_steps}" if record.resumed_at_steps else "",
    )
    return {"status": "trained", "test_loss": record.test_loss}


def _run_worker(job: Job) -> tuple[int, ForwardedSignals]:
    """Write the run's files and run its worker (torchrun, or this task's rank) to the end, resuming from
    the latest complete checkpoint; (exit status, the signals this job received meanwhile)."""
    run_dir, task = job.run_dir, job.task
    artifacts_path = run_dir / "data_artifacts.json"
    job.artifacts.save(artifacts_path)
    resume = resume_point(run_dir, 0 if task is None else task.rank)
    job.resolved["run"] = {
        "id": job.summary["run_id"],
        "dir": str(run_dir),
        "data_artifacts": str(artifacts_path),
        "axes": job.summary["axes"],
        "resume_from": resume,
        "launch": launch_context(),
        "preregistration": job.preregistration,
    }
    resolved_path = run_dir / "resolved.yaml"
    tmp = resolved_path.with_name(f"resolved.{os.getpid()}.tmp")  # every rank may write it: same content
    OmegaConf.save(OmegaConf.create(job.resolved), tmp)
    os.replace(tmp, resolved_path)
    devices, num_nodes = layout(job.cfg)
    cmd = worker_command(resolved_path, devices, num_nodes, task)
    where = "" if task is None else f" as rank {task.rank}/{task.world_size}"
    resuming = f" (resuming from {resume})" if resume else ""
    log.info("train %s %s%s -> %s%s", job.summary["run_id"], job.summary["axes"], where, run_dir, resuming)
    env = worker_env(devices, task) | {JOB_STARTED_ENV: repr(job.started), SPAWNED_ENV: repr(time.time())}
    if forks_preloaded(job.cfg, task):
        return run_preloaded(WORKER_MODULE, [str(resolved_path)], env)
    return run_worker(cmd, env)


def _train_rank(job: Job) -> dict[str, Any]:
    """A rank > 0 of a one-task-per-rank job: train with rank 0, which writes the record."""
    assert job.task is not None
    returncode, signals = _run_worker(job)
    if signals.received is not None or returncode == EXIT_PREEMPTED:
        signals.hand_on()
        return {"status": "preempted"}
    if returncode != 0:
        rank = job.task.rank
        raise LaunchError(
            f"run {job.summary['run_id']} rank {rank} failed: worker exited with code {returncode};"
            f" see {job.run_dir / f'worker.rank{rank}.log'}"
        )
    return {"status": "trained"}


def sweep_job_overrides(config: DictConfig, extra: Sequence[str] = ()) -> list[list[str]]:
    """Expand a multirun config into each job's overrides, exactly as its sweeper launches them
    (:func:`datascale.orchestration.sweeper.expand_design`: Hydra's basic sweeper, or the design sweeper's
    union of grids in its order): the study file's sweep, then the command line's overrides (``extra``: sweeps
    the compose API cannot take), a later value of a key replacing an earlier one.

    A search space (``interval(a, b)``, Optuna's sweeper) is checked at its two ends: every value a search
    can draw lies between points that were validated.
    """
    from datascale.orchestration.sweeper import expand_design

    arguments = [*config.hydra.overrides.task, *extra]
    return expand_design(config.hydra.sweeper, arguments, search_ends=True)


class StudyCallback(Callback):
    """Check every point of a sweep (config and data budget) before the first one trains; at the end, list
    every run with its status (trained, skipped, failed with why, locked, preempted) and exit 1 if any failed.
    """

    def __init__(self) -> None:
        self.jobs: list[dict[str, Any]] = []  # job summaries, when the launcher runs jobs in this process

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        sequential = "BasicLauncher" in str(OmegaConf.select(config, "hydra.launcher._target_", default=""))
        if sequential and forks_preloaded(config, None):  # the jobs run here: import while checking them
            warm()
        loader = GlobalHydra.instance().config_loader()
        try:
            jobs = sweep_job_overrides(config)
        except ConfigError as err:
            raise SystemExit(f"config error in the sweep: {err}") from None
        log.info("study %s: checking %d runs before training", config.study.name, len(jobs))
        points = []  # (unique tokens, run id) in sweep order: the pre-registration plan
        for overrides in jobs:
            job_cfg = loader.load_sweep_config(config, overrides)
            try:
                _, artifacts = validate_and_prepare(job_cfg)  # data cached; verifies the subsets nest
            except ConfigError as err:
                raise SystemExit(f"config error in run [{' '.join(overrides)}]: {err}") from None
            points.append((int(job_cfg.subset.unique_tokens), run_dir_of(job_cfg, artifacts.subset_hash)[0]))
        try:
            write_plan(config, points, sequential)
        except ConfigError as err:
            raise SystemExit(f"config error: {err}") from None

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        from hydra.core.utils import JobStatus

        if job_return.status == JobStatus.COMPLETED and isinstance(job_return.return_value, dict):
            self.jobs.append(job_return.return_value)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        study_dir = Path(config.paths.results_dir) / config.study.name
        rows = self.jobs or scan_study_runs(study_dir)  # jobs in other processes: read the run directories
        print_study_table(config.study.name, study_dir, rows)
        failed = [r for r in rows if r["status"] == "failed"]
        if failed:
            raise SystemExit(
                f"study {config.study.name}: {len(failed)} of {len(rows)} runs failed (see the table above)"
            )


def scan_study_runs(study_dir: Path) -> list[dict[str, Any]]:
    """Every run directory of a study as a summary row: done (record), or the status of its last attempt."""
    rows = []
    for run_dir in sorted((Path(study_dir) / "runs").glob("*/")):
        row: dict[str, Any] = {"run_id": run_dir.name, "run_dir": str(run_dir), "axes": {}}
        attempts = read_attempts(run_dir)
        if is_done(run_dir):
            record = read_record(run_dir / RECORD_FILENAME)
            row |= {"status": "done", "axes": record.axes, "test_loss": record.test_loss}
        elif attempts:
            row |= {"status": attempts[-1]["outcome"], "reason": attempts[-1].get("reason", "")}
        else:
            row |= {"status": "not started"}
        rows.append(row)
    return rows


def print_study_table(name: str, study_dir: Path, rows: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    counts = {s: sum(r["status"] == s for r in rows) for s in sorted({r["status"] for r in rows})}
    table = Table(title=f"study {name}: {len(rows)} runs in {study_dir} ({counts})")
    for column in ("run id", "axes", "status", "test", "why"):
        table.add_column(column)
    for r in rows:
        test = r.get("test_loss")
        table.add_row(
            r["run_id"],
            " ".join(f"{k}={v}" for k, v in r.get("axes", {}).items()),
            r["status"],
            "" if test is None else f"{test:.4f}",
            r.get("reason", ""),
        )
    Console(stderr=True, width=200).print(table)


def search_objective(summary: dict[str, Any]) -> float:
    """What a hyperparameter search minimises: the run's best validation loss (test stays unseen); +inf for
    a trial without a finished record (failed, diverged, locked), so the search goes on without it."""
    path = Path(summary["run_dir"]) / RECORD_FILENAME
    if not is_done(path.parent):
        log.warning(
            "trial %s has no finished record (%s): objective +inf", summary["run_id"], summary["status"]
        )
        return math.inf
    return float(read_record(path).best_val_loss)


def launch_context() -> dict[str, Any]:
    """How this Hydra job was started: its config file (``sweeps/<study_file>.yaml``, or None for
    conf/config.yaml) and its overrides, so a run (or a neighbour of it) can be launched again exactly."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return {}
    hydra_cfg = HydraConfig.get()
    name = hydra_cfg.job.config_name
    return {
        "study_file": None if name == "config" else str(name),
        "overrides": [str(o) for o in hydra_cfg.overrides.task],
    }


def _in_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def _under_search() -> bool:
    """True when Hydra's sweeper is a search (Optuna) that needs a number back from each job."""
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.initialized() and "optuna" in str(HydraConfig.get().sweeper.get("_target_", ""))


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def _hydra_main(cfg: DictConfig) -> dict[str, Any] | float:
    try:
        summary = run_job(cfg)
        if _under_search():
            return search_objective(summary)
        if not _in_multirun() and summary["status"] in ("failed", "preempted", "locked"):
            raise SystemExit(f"run {summary['run_id']} {summary['status']}: {summary.get('reason', '')}")
        return summary
    except ConfigError as err:
        log.error("config error: %s", err)
        raise SystemExit(f"config error: {err}") from None


def main() -> None:
    """Console entry point (``datascale``): misspelt keys and options fail in one line before Hydra starts."""
    try:
        check_overrides(sys.argv[1:])
    except ConfigError as err:
        raise SystemExit(f"config error: {err}") from None
    except Exception:  # anything else about the command line: Hydra reports it in its own words
        log.debug("override pre-check skipped", exc_info=True)
    _hydra_main()


if __name__ == "__main__":
    main()
