"""Training entry point: ``python -m datascale.training.worker <run_dir>/resolved.yaml``.

Started by the Hydra job as ``torchrun --standalone --nproc_per_node=<trainer.devices> -m
datascale.training.worker <run_dir>/resolved.yaml`` (plain ``python -m`` works too for one process). It reads
the fully resolved config, loads the run's DataArtifacts (no tokenisation), trains with early stopping on the
macro validation loss, tests the best-validation checkpoint and writes ``<run_dir>/record.json`` on global
rank 0. It is not a Hydra app, so Lightning sees torchrun's environment and never re-executes anything.

resolved.yaml keys read: ``study.name``, ``study.axes``, ``seed``, ``run.{id, dir, data_artifacts, axes}``,
``model``, ``optim``, ``schedule``, ``training``, ``trainer``, ``strategy``, ``worker``, ``logger``; optional
(older configs lack them): ``objective`` (clm default), ``tokenizer.mask_token``, ``downstream.enabled``,
``finetune`` (the downstream evaluation after testing).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import os
import resource
import shutil
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.accelerators import CUDAAccelerator
from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint
from pytorch_lightning.callbacks.early_stopping import EarlyStoppingReason
from pytorch_lightning.loggers import Logger, WandbLogger
from pytorch_lightning.plugins.environments import SLURMEnvironment, TorchElasticEnvironment
from pytorch_lightning.strategies import Strategy
from pytorch_lightning.utilities.exceptions import SIGTERMException

from datascale.artifacts import DataArtifacts
from datascale.config_errors import ConfigError
from datascale.configs import axis_values, instantiate_group
from datascale.model import GPTConfig, count_parameters
from datascale.packing import usable_cores
from datascale.provenance import code_version
from datascale.records import RECORD_FILENAME, RunRecord, write_record
from datascale.storage import atomic_write_json
from datascale.training.callbacks import (
    NonFiniteLossError,
    PhaseClock,
    StopOnNonFiniteLoss,
    ThreadGovernor,
    TrainThroughput,
    progress_bar,
)
from datascale.training.checkpoint_files import (
    EXIT_PREEMPTED,
    PREEMPTED_FILENAME,
    RESUME_DIR,
    checkpoint_step,
)
from datascale.training.checkpoints import consolidate
from datascale.training.clock import launch_times, worker_start
from datascale.training.cooldown import (
    StableCheckpoints,
    checkpoint_step_of,
    cool_down,
    stable_path,
    stable_steps,
)
from datascale.training.datamodule import TokenDataModule
from datascale.training.mlm import objective_module, objective_of
from datascale.training.module import SELECTION_METRIC, GPTLightningModule
from datascale.training.protocol import TrainingProtocol
from datascale.training.resume import Preempted, PreemptionFlag, ResumeCheckpoint
from datascale.training.run_logging import setup_logging, teardown_logging
from datascale.training.schedule import Cooldown, WarmupCosine, WarmupStableCooldown
from datascale.training.settings import CheckpointSettings, WorkerSettings
from datascale.training.strategy import StrategySpec, strategy_spec
from datascale.training.throughput import device_peak, machine_cache_dir, mfu, training_flops_per_token
from datascale.training.tracking import (
    WandbStart,
    build_loggers,
    finish_wandb,
    merge_metrics,
    set_aside_metrics,
    wandb_info,
)

log = logging.getLogger("datascale.training")

#: Worker exit statuses the launcher tells apart (besides 0, 1 and EXIT_PREEMPTED): neither is retried, the
#: same config fails the same way again.
EXIT_CONFIG_ERROR = 2
EXIT_DIVERGED = 3


def dist_env() -> tuple[int, int, int]:
    """(global rank, world size, processes on this node) from torchrun's environment; (0, 1, 1) without it."""
    return (
        int(os.environ.get("RANK", 0)),
        int(os.environ.get("WORLD_SIZE", 1)),
        int(os.environ.get("LOCAL_WORLD_SIZE", 1)),
    )


@dataclass
class RunContext:
    """One run as the worker sees it: where it is, which rank we are, and the record fields learned so far."""

    cfg: DictConfig
    run_dir: Path
    started: float
    """When the worker command started (the launcher's spawn time, else this process's start)."""
    rank: int
    world: int
    local_world: int
    learned: dict[str, Any] = field(default_factory=dict)
    """Record fields known so far; a failed run's record is made from them."""
    artifacts: DataArtifacts | None = None
    loggers: list[Logger] = field(default_factory=list)
    wandb_logger: WandbLogger | None = None
    wandb_start: WandbStart | None = None
    resume_from: Path | None = None
    """The complete resume checkpoint the launcher chose (``run.resume_from``), or None: a fresh start."""
    preemption: PreemptionFlag = field(default_factory=PreemptionFlag)
    governor: ThreadGovernor | None = None
    """Adapts the torch threads to the machine's load (``worker.adaptive_threads``), or None."""
    job_started: float | None = None
    """When the Hydra job began this attempt (before validation and data preparation); None by hand."""
    clock: PhaseClock = field(default_factory=PhaseClock)

    @classmethod
    def from_config(cls, cfg: DictConfig, started: float, job_started: float | None = None) -> RunContext:
        rank, world, local_world = dist_env()
        ctx = cls(cfg, Path(cfg.run.dir), started, rank, world, local_world, job_started=job_started)
        resume_from = OmegaConf.select(cfg, "run.resume_from", default=None)
        ctx.resume_from = Path(resume_from) if resume_from else None
        ctx.learned.update(
            run_id=str(cfg.run.id),
            study=str(cfg.study.name),
            seed=int(cfg.seed),
            axes=axis_values(cfg),
            config=OmegaConf.to_container(cfg, resolve=True),
            world_size=world,
            launch=OmegaConf.to_container(cfg.run.launch) if OmegaConf.select(cfg, "run.launch") else {},
            preregistration=OmegaConf.to_container(cfg.run.preregistration)
            if OmegaConf.select(cfg, "run.preregistration")
            else {},
        )
        return ctx


@dataclass
class Leaves:
    """The config groups the worker builds (each one validated: one-line ConfigErrors)."""

    model: GPTConfig
    protocol: TrainingProtocol
    schedule: WarmupCosine
    settings: WorkerSettings
    optimizer: Any
    """A partial of the torch optimizer (``optim`` group)."""
    checkpoint: CheckpointSettings
    """Resume-checkpoint cadence (``checkpoint`` group; defaults for configs from before it existed)."""
    strategy: StrategySpec
    """What the ``strategy`` leaf means for the run (the leaf itself is built with the Trainer)."""

    @classmethod
    def build(cls, cfg: DictConfig) -> Leaves:
        has_checkpoint = "checkpoint" in cfg
        return cls(
            model=instantiate_group(cfg, "model", GPTConfig),
            protocol=instantiate_group(cfg, "training", TrainingProtocol),
            schedule=instantiate_group(cfg, "schedule", WarmupCosine),
            settings=instantiate_group(cfg, "worker", WorkerSettings),
            optimizer=instantiate_group(cfg, "optim"),
            checkpoint=instantiate_group(cfg, "checkpoint") if has_checkpoint else CheckpointSettings(),
            strategy=strategy_spec(cfg.get("strategy")),
        )


@dataclass
class Fitted:
    """What training produced, read off the trainer and its callbacks."""

    steps: int
    stop_reason: str
    converged: bool
    best_step: int
    best_eval: dict[str, Any]
    final_eval: dict[str, Any]
    test: dict[str, Any]
    train_time_s: float
    curve: list[dict[str, Any]] = field(default_factory=list)
    """Every evaluation: step, tokens_seen, lr, macro validation loss (the record's ``val_curve``)."""
    history: list[dict[str, Any]] = field(default_factory=list)
    """Every validation's full result (``GPTLightningModule.eval_history``)."""
    eval_subset: dict[str, Any] | None = None
    """The validation windows chosen for the precision target (``EvalSubset.to_dict``), or None."""
    eval_se_target: float | None = None
    tested_step: int = 0
    """Updates the reported (tested) model had: the best checkpoint's, plus its cooldown's."""
    tested_checkpoint: str = ""
    """The tested model's checkpoint: the best one, or the annealed one after a cooldown."""
    cooldown: dict[str, Any] = field(default_factory=dict)
    """The cooldown (``schedule=wsd_cooldown``): from_step, steps, time and the validation before/after."""
    schedule_position: float = 0.0
    """How much of the LR decay the tested model has had (0: none, at the peak; 1: fully decayed)."""
    lr_ratio_at_test: float = 1.0
    """The LR multiplier of the tested model's last update (1 = peak)."""


# ---- the run -----------------------------------------------------------------------------------------------
def run(resolved_path: Path, started: float | None = None, job_started: float | None = None) -> RunRecord:
    """Train, test and record one run. Returns the record (written on rank 0)."""
    cfg = OmegaConf.load(resolved_path)
    assert isinstance(cfg, DictConfig)
    ctx = RunContext.from_config(cfg, time.time() if started is None else started, job_started)
    setup_logging(ctx.run_dir, ctx.rank)
    ctx.preemption.install()
    exit_code, record = 1, None
    try:
        record = train(ctx)
        exit_code = 0
        return record
    except (Preempted, SIGTERMException) as exc:  # not a failure: the run resumes when started again
        log.warning("run %s preempted: %s", cfg.run.id, exc)
        exit_code = EXIT_PREEMPTED
        if ctx.rank == 0:  # the launcher reads it (torchrun reports any failing rank as exit status 1)
            atomic_write_json(ctx.run_dir / PREEMPTED_FILENAME, {"reason": str(exc) or "SIGTERM"})
        raise Preempted(str(exc) or "SIGTERM") from None
    except BaseException as exc:
        log.exception("run %s failed", cfg.run.id)
        if isinstance(exc, NonFiniteLossError):
            ctx.learned.update(steps=exc.step, stop_reason="non_finite_loss")
        write_failed_record(ctx, exc)
        raise
    finally:  # always close the W&B run, with the exit code that says whether the run worked
        try:
            if ctx.wandb_start is not None:
                ctx.wandb_start.join()  # a failure before fit: the run may still be starting
            finish_wandb(
                ctx.wandb_logger,
                exit_code,
                record=record.to_dict() if record else None,
                record_path=ctx.run_dir / RECORD_FILENAME if record else None,
                artifacts=ctx.artifacts,
                log_artifacts=bool(OmegaConf.select(cfg, "logger.wandb.log_artifacts", default=True)),
            )
        finally:
            ctx.preemption.restore()
            teardown_logging()


def train(ctx: RunContext) -> RunRecord:
    """The steps of a run: leaves, data, model, trainer, fit, test, record."""
    ctx.learned["code_version"] = code_version()
    leaves = Leaves.build(ctx.cfg)
    threads = set_threads(leaves.settings, ctx.local_world)
    ctx.learned.update(threads=threads, cores=usable_cores())
    start_tracking(ctx)
    datamodule, plan = build_data(ctx, leaves)
    module = build_module(ctx, leaves, datamodule, plan)
    trainer, early_stop, checkpoint, throughput = build_trainer(ctx, leaves, plan)
    log_start(ctx, leaves, module, plan, threads, trainer)
    stable = fit(trainer, module, datamodule, early_stop, checkpoint, plan["planned_steps"], ctx)
    if leaves.schedule.cools_down:
        stable = anneal(ctx, leaves, plan, throughput, module, datamodule, stable)
    trainer = stable.trainer
    fitted = test(trainer, module, datamodule, stable, leaves.schedule, plan)
    ctx.learned.update(performance(ctx, leaves, trainer, fitted, throughput))
    best = single_file_checkpoint(trainer, fitted.tested_checkpoint, leaves.strategy)
    ctx.learned["best_checkpoint"] = best
    assert ctx.artifacts is not None  # downstream evaluation of the best checkpoint (downstream=suite only)
    ctx.learned["downstream"] = downstream(ctx, module, trainer)
    record = make_record(ctx, leaves, datamodule, trainer, fitted)
    if trainer.is_global_zero:
        merge_metrics(ctx.run_dir)
        write_record(ctx.run_dir, record)
    log_end(record, fitted)
    return record


def downstream(ctx: RunContext, module: GPTLightningModule, trainer: pl.Trainer) -> dict[str, Any]:
    """The downstream suite on the best checkpoint (``downstream=suite``); its modules (and the datasets
    library they bring) are imported only then: a second of every run's start-up otherwise."""
    if "downstream" not in ctx.cfg or not OmegaConf.select(ctx.cfg, "downstream.enabled", default=True):
        return {}
    from datascale.training.downstream_eval import run_downstream

    assert ctx.artifacts is not None
    return run_downstream(ctx.cfg, module.model, ctx.artifacts, ctx.run_dir, trainer)


def performance(
    ctx: RunContext, leaves: Leaves, trainer: pl.Trainer, fitted: Fitted, throughput: TrainThroughput
) -> dict[str, Any]:
    """Record fields of speed: tokens/s of the training steps, model FLOPs per token, MFU, peak memory."""
    model = leaves.model
    step_tokens_per_s = throughput.rate(fitted.steps * leaves.protocol.batch_tokens)
    flops_per_token = training_flops_per_token(model.n_layer, model.d_model, model.vocab_size, model.seq_len)
    accelerator = accelerator_name(trainer)
    governor = ctx.governor
    per_rank = step_tokens_per_s * flops_per_token / trainer.world_size
    device_name, peak_per_device, source = device_peak(
        accelerator,
        str(trainer.precision),
        leaves.settings.matmul_precision,
        int(ctx.learned["threads"]),  # the run's own threads (a governor may have changed them since)
        machine_cache_dir(),  # measured once per machine (a run in a fresh project cache does not re-measure)
        # steps faster than the cached peak prove it low (unless a governor changed the threads)
        observed=per_rank if math.isfinite(per_rank) and not (governor and governor.changes) else 0.0,
    )
    if governor and governor.changes:  # the peak of the cores the run held on average (per-thread peaks add)
        peak_per_device *= governor.mean_threads / int(ctx.learned["threads"])
        source += f", scaled to the run's {governor.mean_threads:.2f} mean threads (worker.adaptive_threads)"
    peak = peak_per_device * trainer.world_size
    return evaluation_cost(ctx, fitted, flops_per_token) | {
        "threads_mean": governor.mean_threads if governor else float(ctx.learned["threads"]),
        "thread_changes": [list(c) for c in governor.changes] if governor else [],
        "step_time_s": throughput.seconds,
        "num_nodes": int(trainer.num_nodes),
        "device_name": device_name,
        "step_tokens_per_s": _finite(step_tokens_per_s),
        "model_flops_per_token": float(flops_per_token),
        "achieved_flops_per_s": _finite(step_tokens_per_s * flops_per_token),
        "peak_flops_per_s": _finite(peak),
        "peak_flops_source": source,
        "mfu": _finite(mfu(step_tokens_per_s, flops_per_token, peak)),
        "peak_memory_mib": peak_memory_by_rank(trainer, accelerator),
    }


def evaluation_cost(ctx: RunContext, fitted: Fitted, flops_per_token: float) -> dict[str, Any]:
    """Record fields of what evaluation cost (time, forward FLOPs: a third of a training token's, over every
    position of every window scored) and the precision it bought (``datascale.training.precision``)."""
    passes = [*fitted.history, fitted.test]
    positions = sum(int(h.get("positions") or 0) for h in passes)
    return {
        "eval_time_s": ctx.clock.eval_s,
        "checkpoint_time_s": ctx.clock.checkpoint_s,
        "eval_tokens": positions,
        "eval_flops": positions * flops_per_token / 3,
        "eval_precision": eval_precision(fitted),
    }


def eval_precision(fitted: Fitted) -> dict[str, Any]:
    """What the validation windows were and how precise each evaluation was (``eval_precision`` field)."""
    subset = fitted.eval_subset
    deltas = sorted(h["delta_se"] for h in fitted.history if h.get("delta_se") is not None)
    after = [h for h in fitted.history if subset is not None and h["step"] > subset["chosen_at_step"]]
    last = (after or fitted.history)[-1]
    return {
        "target": fitted.eval_se_target,
        "subset": subset,
        "val_tokens_by_domain": last["tokens_by_domain"],
        "delta_se_median": deltas[len(deltas) // 2] if deltas else None,
        "best_loss_se": fitted.best_eval.get("loss_se"),
        "test_loss_se": fitted.test.get("loss_se"),
    }


def _finite(value: float) -> float | None:
    """None for what could not be measured (a record compares equal to itself after a JSON round trip)."""
    return value if math.isfinite(value) else None


def peak_memory_by_rank(trainer: pl.Trainer, accelerator: str) -> list[float]:
    """Each rank's peak memory in MiB (CUDA: max allocated; CPU: max RSS), gathered to every rank."""
    if accelerator == "cuda":
        mib = torch.cuda.max_memory_allocated(trainer.strategy.root_device) / 2**20
    else:
        mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    mine = torch.tensor([mib], dtype=torch.float64, device=trainer.strategy.root_device)
    gathered = trainer.strategy.all_gather(mine) if trainer.world_size > 1 else mine
    return [round(float(v), 1) for v in gathered.flatten().tolist()]


def single_file_checkpoint(trainer: pl.Trainer, best_path: str, strategy: StrategySpec) -> str:
    """The best checkpoint as one file for analysis: a sharded directory (FSDP) is consolidated (rank 0)."""
    if not strategy.sharded_checkpoints:
        return best_path
    out = Path(best_path).with_name(Path(best_path).stem + ".consolidated.ckpt")
    if trainer.is_global_zero:
        consolidate(Path(best_path), out)
    return str(out)


def set_threads(settings: WorkerSettings, local_world: int) -> int:
    """torch threads per process: configured, else this node's cores shared among its ranks."""
    threads = settings.num_threads or max(1, usable_cores() // max(1, local_world))
    torch.set_num_threads(threads)
    return threads


def build_data(ctx: RunContext, leaves: Leaves) -> tuple[TokenDataModule, dict[str, Any]]:
    """The run's DataArtifacts (prepared by the launcher) as a datamodule, and the token plan of the run."""
    artifacts = DataArtifacts.load(Path(ctx.cfg.run.data_artifacts))
    ctx.artifacts = artifacts
    ctx.learned.update(
        corpus_hash=artifacts.corpus_hash,
        tokenizer_hash=artifacts.tokenizer_hash,
        subset_hash=artifacts.subset_hash,
        unique_tokens=artifacts.unique_tokens,
    )
    model, protocol = leaves.model, leaves.protocol
    if model.vocab_size < artifacts.vocab_size:
        raise ConfigError(
            "model.vocab_size",
            model.vocab_size,
            f"must be >= the tokenizer's vocabulary size {artifacts.vocab_size}",
        )
    protocol.validate(model.seq_len, ctx.world, artifacts.unique_tokens)
    micro, accumulation = protocol.micro_batch(
        model.seq_len, ctx.world, leaves.settings.max_micro_batch_tokens
    )
    pl.seed_everything(int(ctx.cfg.seed), workers=True, verbose=False)
    datamodule = TokenDataModule.from_artifacts(
        artifacts,
        model.seq_len,
        protocol,
        int(ctx.cfg.seed),
        vocab_size=model.vocab_size,
        accumulation=accumulation,
        max_forward_tokens=leaves.settings.max_micro_batch_tokens,
    )
    plan = protocol.plan(datamodule.unique_tokens, model.seq_len)
    plan.update(micro_batch_sequences=micro, accumulation=accumulation)
    ctx.learned.update(
        eval_domains=datamodule.domains,
        train_domains=artifacts.train_domains,
        pool_transforms=artifacts.pool_transforms,
        subset_domains=artifacts.subset_domains,
        reference_losses=artifacts.reference_losses,
        selection_domains=protocol.selection_domains(datamodule.domains, list(artifacts.subset_domains)),
        planned_steps=plan["planned_steps"],
        micro_batch_sequences=micro,
        grad_accumulation=accumulation,
        compiled=leaves.settings.compile,
    )
    return datamodule, plan


def build_module(
    ctx: RunContext, leaves: Leaves, datamodule: TokenDataModule, plan: dict[str, Any]
) -> GPTLightningModule:
    assert ctx.artifacts is not None
    module_class, objective_kwargs = objective_module(
        ctx.cfg, ctx.artifacts.tokenizer_path, ctx.artifacts.vocab_size
    )
    module = module_class(
        leaves.model,
        leaves.optimizer,
        leaves.schedule,
        plan["planned_steps"],
        plan["warmup_steps"],
        leaves.protocol.batch_tokens,
        datamodule.unique_tokens,
        datamodule.domains,
        accumulation=plan["accumulation"],
        compile_blocks=leaves.settings.compile,
        selection_domains=ctx.learned["selection_domains"],
        shard_parameters=leaves.strategy.shards_parameters,
        eval_se_target=leaves.protocol.eval_se_target if objective_of(ctx.cfg).causal else None,
        **objective_kwargs,
    )
    params = count_parameters(module.model)
    ctx.learned.update(params_total=params["total"], params_non_embedding=params["non_embedding"])
    objective = objective_of(ctx.cfg)
    ctx.learned.update(objective=objective.name, loss_unit=objective.loss_unit)
    return module


def build_trainer(
    ctx: RunContext, leaves: Leaves, plan: dict[str, Any]
) -> tuple[pl.Trainer, EarlyStopping, ModelCheckpoint, TrainThroughput]:
    """The stable phase's Trainer: early stopping, the best checkpoint, resume checkpoints, our clocks."""
    protocol = leaves.protocol
    early_stop = EarlyStopping(
        monitor=SELECTION_METRIC, mode="min", patience=protocol.patience, min_delta=protocol.min_delta
    )
    checkpoint = ModelCheckpoint(
        dirpath=ctx.run_dir / "checkpoints", filename="best-{step}", monitor=SELECTION_METRIC, save_top_k=1
    )
    throughput = TrainThroughput()
    resume = ResumeCheckpoint(
        ctx.run_dir / RESUME_DIR,
        leaves.checkpoint,
        protocol.batch_tokens,
        plan["eval_interval_steps"],
        ctx.preemption,
        ctx.clock,
    )
    ctx.governor = thread_governor(ctx, leaves.settings, str(ctx.cfg.trainer.get("accelerator", "auto")))
    callbacks: list[pl.Callback] = [early_stop, checkpoint, throughput, ctx.clock, resume]
    schedule = leaves.schedule
    if isinstance(schedule, WarmupStableCooldown) and schedule.anchor == "end_at_best":
        callbacks.append(StableCheckpoints(ctx.run_dir / "checkpoints", schedule, checkpoint))
    interval = plan["eval_interval_steps"]
    trainer = new_trainer(ctx, leaves, callbacks, plan["planned_steps"], interval, plan, True)
    return trainer, early_stop, checkpoint, throughput


def new_trainer(
    ctx: RunContext,
    leaves: Leaves,
    callbacks: list[pl.Callback],
    max_steps: int,
    eval_interval_steps: int,
    plan: dict[str, Any],
    checkpointing: bool,
) -> pl.Trainer:
    """A Trainer from the ``trainer`` partial and a fresh ``strategy`` leaf, with ``callbacks`` plus the
    non-finite stop, the thread governor and the progress bar (the stable phase's and the cooldown's)."""
    cfg = ctx.cfg
    strategy = instantiate_group(cfg, "strategy", Strategy)
    make_trainer = instantiate_group(cfg, "trainer")
    if torch.cuda.is_available() and str(cfg.trainer.accelerator) in ("auto", "gpu", "cuda"):
        torch.set_float32_matmul_precision(leaves.settings.matmul_precision)
    callbacks = [*callbacks, StopOnNonFiniteLoss()]
    if ctx.governor is not None:
        callbacks.append(ctx.governor)
    if bool(cfg.trainer.get("enable_progress_bar", True)):
        settings = leaves.settings
        callbacks.append(progress_bar(settings.progress_bar, settings.progress_refresh_rate))
    trainer = make_trainer(
        strategy=strategy,
        max_steps=max_steps,  # optimizer steps
        max_epochs=-1,
        accumulate_grad_batches=plan["accumulation"],
        val_check_interval=eval_interval_steps * plan["accumulation"],  # counted in micro-batches
        check_val_every_n_epoch=None,
        num_sanity_val_steps=0,
        gradient_clip_val=leaves.protocol.grad_clip,
        default_root_dir=str(ctx.run_dir),
        logger=ctx.loggers,
        callbacks=callbacks,
        enable_checkpointing=checkpointing,
        use_distributed_sampler=False,
        enable_model_summary=False,
        plugins=cluster_plugins(),
    )
    check_world_size(trainer, ctx.world)
    ctx.clock.attach(trainer)
    return trainer


def thread_governor(ctx: RunContext, settings: WorkerSettings, accelerator: str) -> ThreadGovernor | None:
    """With ``worker.adaptive_threads`` on a CPU: threads up to this node's cores per rank while the machine
    is otherwise idle, back to ``worker.num_threads`` when it is not (``ThreadGovernor``)."""
    most = max(1, usable_cores() // max(1, ctx.local_world))
    base = int(ctx.learned["threads"])
    on_cpu = accelerator == "cpu" or not torch.cuda.is_available()
    if not (settings.adaptive_threads and on_cpu and most > base):
        return None
    return ThreadGovernor(base, most)


def start_tracking(ctx: RunContext) -> None:
    """The run directory, then the loggers; the W&B run starts in a thread (``wandb.init`` takes about a
    second, offline too), overlapping data, model and Trainer set-up and the first steps (a log call before
    it is up waits for it: ``StartedWandbLogger``)."""
    prepare_run_dir(ctx)
    ctx.loggers, ctx.wandb_logger = build_loggers(
        ctx.cfg.get("logger") or {},
        ctx.run_dir,
        ctx.learned["run_id"],
        ctx.learned["study"],
        ctx.learned["axes"],
        ctx.learned["config"],
    )
    ctx.learned["wandb"] = wandb_info(ctx.wandb_logger, ctx.run_dir)
    ctx.wandb_start = WandbStart(ctx.wandb_logger)


def prepare_run_dir(ctx: RunContext) -> None:
    """A fresh start removes earlier attempts' best checkpoints; a resume keeps them (its restored state
    points at them). Either way an earlier ``metrics.csv`` is kept (the CSV logger would delete it)."""
    if ctx.rank != 0:
        return
    if ctx.resume_from is None:
        shutil.rmtree(ctx.run_dir / "checkpoints", ignore_errors=True)
        set_aside_metrics(ctx.run_dir, None)
    else:
        set_aside_metrics(ctx.run_dir, checkpoint_step(ctx.resume_from))
        log.info("resuming from %s (step %d)", ctx.resume_from, checkpoint_step(ctx.resume_from))


def cluster_plugins() -> list[Any]:
    """Under SLURM with one task per rank, Lightning's SLURM environment without its auto-requeue: submitit
    (the Hydra launcher) is the one component that requeues a job, so two handlers never race on a signal.
    torchrun inside a SLURM task (fewer tasks than ranks) keeps torchrun's environment."""
    if not SLURMEnvironment.detect():
        return []
    if os.environ.get("SLURM_NTASKS") == os.environ.get("WORLD_SIZE", "1"):
        return [SLURMEnvironment(auto_requeue=False)]
    return [TorchElasticEnvironment()]


def check_world_size(trainer: pl.Trainer, world: int) -> None:
    if "RANK" in os.environ and trainer.world_size != world:
        raise ConfigError(
            "trainer.devices",
            trainer.num_devices,
            f"devices x num_nodes must equal the torchrun world size {world}",
        )


@dataclass
class Stable:
    """The stable phase (training until early stopping or the token cap), and the model to test: its best
    checkpoint, or after :func:`anneal` the annealed model of the cooldown's ``trainer``."""

    trainer: pl.Trainer
    steps: int
    stop_reason: str
    converged: bool
    best_step: int
    history: list[dict[str, Any]]
    train_time_s: float
    tested_checkpoint: str
    tested_eval: dict[str, Any]
    tested_step: int
    cooldown: dict[str, Any] = field(default_factory=dict)
    annealing: Cooldown | None = None


def fit(
    trainer: pl.Trainer,
    module: GPTLightningModule,
    datamodule: TokenDataModule,
    early_stop: EarlyStopping,
    checkpoint: ModelCheckpoint,
    planned_steps: int,
    ctx: RunContext,
) -> Stable:
    """Train (from the resume checkpoint, if any) until early stopping or the token cap. Checkpoints are
    loaded with ``weights_only=True``: nothing is unpickled."""
    fit_started = time.time()
    trainer.fit(module, datamodule=datamodule, ckpt_path=ctx.resume_from, weights_only=True)
    train_time = time.time() - fit_started
    if ctx.wandb_start is not None:
        ctx.wandb_start.wait()  # up long since; re-raises a failed start
    ctx.learned["resumed_at_steps"] = list(module.resumed_at_steps)
    if ctx.resume_from is not None and datamodule.stream_start_step != checkpoint_step(ctx.resume_from):
        raise RuntimeError(
            f"the training stream started at step {datamodule.stream_start_step}, the checkpoint is at"
            f" step {checkpoint_step(ctx.resume_from)}"
        )
    if trainer.interrupted:
        raise KeyboardInterrupt("training was interrupted")
    steps = int(trainer.global_step)
    stop_reason, converged = why_stopped(early_stop.stopping_reason, steps, planned_steps)
    best_step = best_checkpoint_step(checkpoint.best_model_path)
    history = list(module.eval_history)
    best_eval = next(h for h in history if h["step"] == best_step)
    return Stable(
        trainer, steps, stop_reason, converged, best_step, history, train_time,
        tested_checkpoint=checkpoint.best_model_path, tested_eval=best_eval, tested_step=best_step,
    )  # fmt: skip


def anneal(
    ctx: RunContext,
    leaves: Leaves,
    plan: dict[str, Any],
    throughput: TrainThroughput,
    module: GPTLightningModule,
    datamodule: TokenDataModule,
    stable: Stable,
) -> Stable:
    """The cooldown from the best checkpoint (``schedule=wsd_cooldown``): the annealed model is tested."""
    schedule = leaves.schedule
    assert isinstance(schedule, WarmupStableCooldown)
    folder = ctx.run_dir / "checkpoints"
    cooldown = schedule.cooldown_for(stable.best_step, stable_steps(folder))
    at_best = cooldown.from_step == stable.best_step
    start = stable.tested_checkpoint if at_best else str(stable_path(folder, cooldown.from_step))

    def make_trainer(c: Cooldown) -> pl.Trainer:
        return new_trainer(ctx, leaves, [throughput, ctx.clock], c.end_step, c.end_step + 1, plan, False)

    cooled = cool_down(make_trainer, module, datamodule, start, cooldown, folder)
    summary = {
        "from_step": cooldown.from_step,
        "steps": cooldown.steps,
        "anchor": schedule.anchor,
        "shape": schedule.shape,
        "time_s": cooled.seconds,
        "val_selection_loss_before": stable.tested_eval["selection_loss"],
        "val_selection_loss_after": cooled.evaluation["selection_loss"],
    }
    return dataclasses.replace(
        stable,
        trainer=cooled.trainer,
        steps=stable.steps + cooldown.steps,
        train_time_s=stable.train_time_s + cooled.seconds,
        history=[*stable.history, cooled.evaluation],
        tested_checkpoint=cooled.checkpoint,
        tested_eval=cooled.evaluation,
        tested_step=cooldown.end_step,
        cooldown=summary,
        annealing=cooldown,
    )


def test(
    trainer: pl.Trainer,
    module: GPTLightningModule,
    datamodule: TokenDataModule,
    stable: Stable,
    schedule: WarmupCosine,
    plan: dict[str, Any],
) -> Fitted:
    """Test the reported model: the best checkpoint (loaded), or the annealed model (in memory)."""
    ckpt_path = None if stable.annealing else stable.tested_checkpoint
    trainer.test(module, datamodule=datamodule, ckpt_path=ckpt_path, verbose=False, weights_only=True)
    assert module.test_results is not None
    warmup, planned = plan["warmup_steps"], plan["planned_steps"]
    last_update = stable.tested_step - 1
    if stable.annealing is not None:
        position, lr_ratio = 1.0, schedule.cooldown_factor(last_update, stable.annealing)
    else:
        position = schedule.decay_progress(stable.tested_step, warmup, planned)
        lr_ratio = schedule.factor(last_update, warmup, planned)
    return Fitted(
        steps=stable.steps,
        stop_reason=stable.stop_reason,
        converged=stable.converged,
        best_step=stable.best_step,
        best_eval=stable.tested_eval,
        final_eval=stable.history[-1],
        test=module.test_results,
        train_time_s=stable.train_time_s,
        curve=[{k: h.get(k) for k in CURVE_KEYS} for h in stable.history],
        history=stable.history,
        eval_subset=None if module.eval_subset is None else module.eval_subset.to_dict(),
        eval_se_target=module.eval_se_target,
        tested_step=stable.tested_step,
        tested_checkpoint=stable.tested_checkpoint,
        cooldown=stable.cooldown,
        schedule_position=position,
        lr_ratio_at_test=lr_ratio,
    )


#: What the record's ``val_curve`` keeps of each evaluation.
CURVE_KEYS = ("step", "tokens_seen", "lr", "loss", "selection_loss", "loss_se", "delta_se")


def why_stopped(reason: EarlyStoppingReason, steps: int, planned_steps: int) -> tuple[str, bool]:
    """(stop_reason, converged): early stopping converged, the token cap did not; anything else fails."""
    if reason == EarlyStoppingReason.PATIENCE_EXHAUSTED:
        return "early_stopping", True
    if reason == EarlyStoppingReason.NON_FINITE_METRIC:
        raise NonFiniteLossError(steps, math.nan, "validation loss")
    if steps >= planned_steps:
        return "token_cap", False
    raise RuntimeError(f"training stopped at step {steps} of {planned_steps} for no known reason ({reason})")


def best_checkpoint_step(best_path: str) -> int:
    if not best_path:
        raise RuntimeError("no best checkpoint found (best_model_path is empty)")
    return checkpoint_step_of(best_path)


# ---- the record --------------------------------------------------------------------------------------------
def make_record(
    ctx: RunContext,
    leaves: Leaves,
    datamodule: TokenDataModule,
    trainer: pl.Trainer,
    fitted: Fitted,
) -> RunRecord:
    known, unique, protocol = ctx.learned, datamodule.unique_tokens, leaves.protocol
    tokens_seen = fitted.steps * protocol.batch_tokens
    tokens_at_best = fitted.tested_step * protocol.batch_tokens
    best, final, test = fitted.best_eval, fitted.final_eval, fitted.test
    return RunRecord(
        **{k: known[k] for k in ("run_id", "study", "axes", "seed", "code_version", "config")},
        **{k: known[k] for k in ("corpus_hash", "tokenizer_hash", "subset_hash", "train_domains", "wandb")},
        **{k: known[k] for k in ("params_total", "params_non_embedding", "planned_steps", "eval_domains")},
        selection_domains=known["selection_domains"],
        launch=known.get("launch") or {},
        preregistration=known.get("preregistration") or {},
        pool_transforms=known["pool_transforms"],
        subset_domains=known["subset_domains"],
        status="done",
        created_at=_now(),
        unique_tokens=unique,
        tokens_seen=tokens_seen,
        epochs=tokens_seen / unique,
        steps=fitted.steps,
        best_step=fitted.best_step,
        tokens_at_best=tokens_at_best,
        epochs_at_best=tokens_at_best / unique,
        converged=fitted.converged,
        stop_reason=fitted.stop_reason,
        best_val_loss=best["loss"],
        final_val_loss=final["loss"],
        test_loss=test["loss"],
        val_loss_best=best["loss_by_domain"],
        val_loss_final=final["loss_by_domain"],
        test_loss_by_domain=test["loss_by_domain"],
        val_bpb_best=best["bpb_by_domain"],
        val_curve=fitted.curve,
        test_bpb=test["bpb_by_domain"],
        test_bpb_mean=sum(test["bpb_by_domain"].values()) / len(test["bpb_by_domain"]),
        wall_time_s=time.time() - ctx.started,
        **overheads(ctx),
        train_time_s=fitted.train_time_s,
        tokens_per_s=tokens_seen / fitted.train_time_s,
        world_size=trainer.world_size,
        strategy=strategy_name(leaves.strategy, trainer),
        accelerator=accelerator_name(trainer),
        precision=str(trainer.precision),
        **{k: known[k] for k in PERFORMANCE_FIELDS},
        **{k: known[k] for k in ("objective", "loss_unit", "downstream", "resumed_at_steps") if k in known},
        reference_losses=known.get("reference_losses") or {},
        cooldown=fitted.cooldown,
        schedule_position=fitted.schedule_position,
        lr_ratio_at_test=fitted.lr_ratio_at_test,
    )


def overheads(ctx: RunContext) -> dict[str, Any]:
    """Start-up (worker command start to the first step), the Hydra job's set-up before it, and teardown
    (the last step's end to now, the record, without the evaluation and checkpoint writes in between)."""
    clock, now = ctx.clock, time.time()
    first, last = clock.first_step_at, clock.last_step_end
    evaluating, saving = clock.since_last_step()
    return {
        "startup_s": None if first is None else first - ctx.started,
        "worker_start": worker_start(),
        "startup_cpu_s": clock.first_step_cpu,
        "job_setup_s": None if ctx.job_started is None else ctx.started - ctx.job_started,
        "teardown_s": None if last is None else now - last - evaluating - saving,
    }


#: Record fields of the layout and speed block, learned by ``build_data`` and ``performance``.
PERFORMANCE_FIELDS = (
    "num_nodes",
    "micro_batch_sequences",
    "grad_accumulation",
    "compiled",
    "device_name",
    "step_tokens_per_s",
    "model_flops_per_token",
    "achieved_flops_per_s",
    "peak_flops_per_s",
    "peak_flops_source",
    "mfu",
    "peak_memory_mib",
    "best_checkpoint",
    "threads",
    "threads_mean",
    "thread_changes",
    "cores",
    "step_time_s",
    "eval_time_s",
    "checkpoint_time_s",
    "eval_tokens",
    "eval_flops",
    "eval_precision",
)


def strategy_name(spec: StrategySpec, trainer: pl.Trainer) -> str:
    """The record's name of the strategy (``single_device``, ``ddp``, ``fsdp``); for a Lightning strategy
    the project does not list, Lightning's registry name of the one in use (else its class name)."""
    return spec.name or str(getattr(trainer.strategy, "strategy_name", type(trainer.strategy).__name__))


def accelerator_name(trainer: pl.Trainer) -> str:
    return "cuda" if isinstance(trainer.accelerator, CUDAAccelerator) else "cpu"


def failed_record(known: dict[str, Any], error: str) -> RunRecord:
    """A ``failed`` record: every field learned before the failure, type-appropriate blanks for the rest."""
    blanks = {"int": 0, "float": math.nan, "str": "", "bool": False}
    values: dict[str, Any] = {}
    for f in dataclasses.fields(RunRecord):
        if f.name in known:
            values[f.name] = known[f.name]
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            kind = str(f.type)
            values[f.name] = (
                {} if kind.startswith("dict") else [] if kind.startswith("list") else blanks.get(kind)
            )
    values.update(status="failed", error=error)
    return RunRecord(**values)


def write_failed_record(ctx: RunContext, exc: BaseException) -> None:
    """On rank 0, a ``failed`` record with the one-line reason (never over a ``done`` one)."""
    if ctx.rank != 0:
        return
    ctx.learned.update(
        created_at=_now(),
        code_version=ctx.learned.get("code_version") or code_version(),
        wall_time_s=time.time() - ctx.started,
    )
    try:
        write_record(ctx.run_dir, failed_record(ctx.learned, f"{type(exc).__name__}: {exc}".splitlines()[0]))
    except Exception:
        log.exception("could not write the failed record")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# ---- logs ------------------------------------------------------------------------------------------------
def log_start(
    ctx: RunContext,
    leaves: Leaves,
    module: GPTLightningModule,
    plan: dict[str, Any],
    threads: int,
    trainer: pl.Trainer,
) -> None:
    known = ctx.learned
    log.info(
        "start run %s study=%s axes=%s | params %s (non-embedding %s) | U=%s tokens, batch %s tokens, "
        "planned %s steps = %s tokens (%.1f epochs), eval every %s steps, warmup %s steps, patience %s | "
        "%s x%s %s, %s threads/process, precision %s, micro-batch %s sequences x %s accumulation, "
        "cluster environment %s",
        known["run_id"],
        known["study"],
        known["axes"],
        f"{known['params_total']:,}",
        f"{known['params_non_embedding']:,}",
        f"{module.unique_tokens:,}",
        leaves.protocol.batch_tokens,
        plan["planned_steps"],
        f"{plan['planned_tokens']:,}",
        plan["planned_epochs"],
        plan["eval_interval_steps"],
        plan["warmup_steps"],
        leaves.protocol.patience,
        accelerator_name(trainer),
        ctx.world,
        strategy_name(leaves.strategy, trainer),
        threads,
        trainer.precision,
        plan["micro_batch_sequences"],
        plan["accumulation"],
        type(getattr(trainer.strategy, "cluster_environment", None)).__name__,
    )


def log_end(record: RunRecord, fitted: Fitted) -> None:
    log.info(
        "end run %s: best val %.4f at step %d (%.1f epochs), test %.4f (bpb %.4f), final val %.4f | "
        "%s after %d steps = %.1f epochs | fit %.0f s, %.0f tokens/s (train steps only %s, MFU %s), "
        "peak memory %s MiB, wall %.0f s",
        record.run_id,
        record.best_val_loss,
        fitted.best_step,
        record.epochs_at_best,
        record.test_loss,
        record.test_bpb_mean,
        record.final_val_loss,
        fitted.stop_reason,
        fitted.steps,
        record.epochs,
        fitted.train_time_s,
        record.tokens_per_s,
        "n/a" if record.step_tokens_per_s is None else f"{record.step_tokens_per_s:.0f}",
        "n/a" if record.mfu is None else f"{100 * record.mfu:.1f}%",
        record.peak_memory_mib,
        record.wall_time_s,
    )


def main(argv: list[str] | None = None) -> int:
    job_started, started = launch_times()
    parser = argparse.ArgumentParser(
        prog="python -m datascale.training.worker", description=(__doc__ or "").splitlines()[0]
    )
    parser.add_argument("resolved", type=Path, help="<run_dir>/resolved.yaml written by the launcher")
    args = parser.parse_args(argv)
    try:
        run(args.resolved, started, job_started)
    except ConfigError as err:
        print(f"config error: {err}", file=sys.stderr)
        return EXIT_CONFIG_ERROR
    except Preempted as exc:
        print(f"worker preempted: {exc}", file=sys.stderr)
        return EXIT_PREEMPTED
    except FloatingPointError as exc:
        print(f"worker stopped: {exc}", file=sys.stderr)
        return EXIT_DIVERGED
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # the traceback is in worker.log when the run got that far
        print(f"worker failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


def exit_now(code: int) -> None:
    """End the worker process without the interpreter's teardown (module destructors and atexit hooks of
    torch and Lightning: about 2 s per run here); the record, logs, W&B and the streams are closed first."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    exit_now(main())
