"""Training entry point: ``python -m datascale.training.worker <run_dir>/resolved.yaml``.

Started by the Hydra job as ``torchrun --standalone --nproc_per_node=<strategy.devices> -m
datascale.training.worker <run_dir>/resolved.yaml`` (plain ``python -m`` works too for one process). It reads the
fully resolved config, loads the run's DataArtifacts (no tokenisation), trains with early stopping on the macro
validation loss, tests the best-validation checkpoint and writes ``<run_dir>/record.json`` on global rank 0.
It is not a Hydra app, so Lightning sees torchrun's environment and never re-executes anything.

resolved.yaml keys read: ``study.name``, ``study.axes``, ``seed``, ``run.{id, dir, data_artifacts, axes}``,
``model``, ``optim``, ``schedule``, ``training``, ``trainer``, ``strategy``, ``logger``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import re
import shutil
import subprocess
import sys
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint, RichProgressBar, TQDMProgressBar
from pytorch_lightning.callbacks.early_stopping import EarlyStoppingReason

from datascale.config_errors import ConfigError
from datascale.data.prepare import DataArtifacts
from datascale.model import GPTConfig, count_parameters
from datascale.records import RECORD_FILENAME, RunRecord, write_record
from datascale.training.datamodule import TokenDataModule
from datascale.training.module import GPTLightningModule
from datascale.training.protocol import TrainingProtocol
from datascale.training.schedule import WarmupCosine
from datascale.training.strategy import StrategyConfig
from datascale.training.tracking import build_loggers, define_token_axis, finish_wandb, wandb_info

log = logging.getLogger("datascale.training")

LOG_FORMAT = "%(asctime)s %(levelname)s [rank %(rank)s] %(name)s: %(message)s"


# ---- small helpers (torch-free) ---------------------------------------------------------------------------
def dist_env() -> tuple[int, int, int]:
    """(global rank, world size, processes on this node) from torchrun's environment; (0, 1, 1) without it."""
    return (
        int(os.environ.get("RANK", 0)),
        int(os.environ.get("WORLD_SIZE", 1)),
        int(os.environ.get("LOCAL_WORLD_SIZE", 1)),
    )


class _RankFilter(logging.Filter):
    def __init__(self, rank: int) -> None:
        super().__init__()
        self.rank = rank

    def filter(self, record: logging.LogRecord) -> bool:
        record.rank = self.rank
        return True


_HANDLERS: list[tuple[logging.Logger, logging.Handler]] = []


def setup_logging(run_dir: Path, rank: int) -> None:
    """worker.log (rank 0; other ranks get worker.rank<r>.log) + stderr, for ours and Lightning's messages.

    Replaces what an earlier call installed, so several runs in one process (tests) do not log twice.
    """
    teardown_logging()
    run_dir.mkdir(parents=True, exist_ok=True)
    name = "worker.log" if rank == 0 else f"worker.rank{rank}.log"
    formatter = logging.Formatter(LOG_FORMAT, datefmt="%Y-%m-%d %H:%M:%S")
    file_handler = logging.FileHandler(run_dir / name)
    console = logging.StreamHandler(sys.stderr)
    for handler in (file_handler, console):
        handler.setFormatter(formatter)
        handler.addFilter(_RankFilter(rank))
    ours = logging.getLogger("datascale")
    ours.setLevel(logging.INFO)
    ours.propagate = False
    targets = [(ours, file_handler), (ours, console)]
    # Lightning prints to the console itself; its messages and warnings also go to worker.log
    targets += [
        (logging.getLogger(n), file_handler) for n in ("pytorch_lightning", "lightning_fabric", "py.warnings")
    ]
    for logger, handler in targets:
        logger.addHandler(handler)
        _HANDLERS.append((logger, handler))
    logging.captureWarnings(True)
    # expected: the run dir already holds resolved.yaml etc. when the CSV logger starts
    warnings.filterwarnings("ignore", message=r".*Experiment logs directory .* exists and is not empty.*")
    warnings.filterwarnings("ignore", message=r".*isinstance.treespec, LeafSpec.*")


def teardown_logging() -> None:
    for logger, handler in _HANDLERS:
        logger.removeHandler(handler)
    for handler in {h for _, h in _HANDLERS}:
        handler.close()
    _HANDLERS.clear()
    logging.captureWarnings(False)


def code_version() -> str:
    """``git rev-parse HEAD`` (+``+dirty`` with uncommitted tracked changes), else the package version."""
    from datascale import PROJECT_ROOT, __version__

    try:
        head = subprocess.run(
            ["git", "-C", str(PROJECT_ROOT), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        status = subprocess.run(
            [
                "git",
                "--no-optional-locks",
                "-C",
                str(PROJECT_ROOT),
                "status",
                "--porcelain",
                "--untracked-files=no",
            ],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
        return head + ("+dirty" if status.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return f"datascale-{__version__}"


def axis_values(cfg: DictConfig) -> dict[str, Any]:
    """``run.axes`` as written by the launcher, else each ``study.axes`` key's value by its last name."""
    axes = OmegaConf.select(cfg, "run.axes", default=None)
    if axes is not None:
        return dict(OmegaConf.to_container(axes, resolve=True))  # type: ignore[arg-type]
    return {str(k).split(".")[-1]: OmegaConf.select(cfg, str(k)) for k in (cfg.study.get("axes") or [])}


def instantiate_leaf(cfg: DictConfig, group: str) -> Any:
    """``hydra.utils.instantiate(cfg[group])`` with failures turned into a one-line ConfigError."""
    from hydra.utils import instantiate

    if group not in cfg:
        raise ConfigError(group, None, "missing config group in resolved.yaml")
    try:
        return instantiate(cfg[group])
    except ConfigError as err:
        raise err.prefixed(group) from None
    except Exception as exc:
        cause = exc.__cause__ if isinstance(exc.__cause__, ConfigError) else None
        if cause is not None:
            raise cause.prefixed(group) from None
        raise ConfigError(group, "<config>", str(exc).splitlines()[0]) from exc


def train_domains(corpus_manifest: str | os.PathLike[str], fallback: list[str]) -> list[str]:
    """Domains of the training pool from the corpus manifest (``domains`` list or mapping), else ``fallback``."""

    try:
        with open(corpus_manifest) as fh:
            manifest = json.load(fh)
    except (OSError, ValueError):
        return fallback
    domains = manifest.get("train_domains") or manifest.get("domains")
    if isinstance(domains, dict):
        return sorted(domains)
    if isinstance(domains, list):
        return sorted(d if isinstance(d, str) else str(d.get("name", d)) for d in domains)
    return fallback


def failed_record(known: dict[str, Any], error: str) -> RunRecord:
    """A ``failed`` record: every field we learned before the failure, type-appropriate blanks for the rest."""
    blanks = {"int": 0, "float": math.nan, "str": "", "bool": False}
    values: dict[str, Any] = {}
    for f in dataclasses.fields(RunRecord):
        if f.name in known:
            values[f.name] = known[f.name]
        elif f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING:
            continue
        else:
            kind = str(f.type)
            values[f.name] = (
                {} if kind.startswith("dict") else [] if kind.startswith("list") else blanks.get(kind)
            )
    values.update(status="failed", error=error)
    return RunRecord(**values)


# ---- the run -----------------------------------------------------------------------------------------------
def run(resolved_path: Path, started: float | None = None) -> RunRecord:
    """Train, test and record one run. Returns the record (written on rank 0)."""
    started = time.time() if started is None else started
    cfg = OmegaConf.load(resolved_path)
    assert isinstance(cfg, DictConfig)
    run_dir = Path(cfg.run.dir)
    rank, world, _ = dist_env()
    setup_logging(run_dir, rank)
    known: dict[str, Any] = {
        "run_id": str(cfg.run.id),
        "study": str(cfg.study.name),
        "seed": int(cfg.seed),
        "axes": axis_values(cfg),
        "config": OmegaConf.to_container(cfg, resolve=True),
        "world_size": world,
    }
    exit_code = 1
    record: RunRecord | None = None
    try:
        record = _train(cfg, run_dir, started, known)
        exit_code = 0
        return record
    except BaseException as exc:
        log.exception("run %s failed", cfg.run.id)
        if rank == 0:
            known.update(
                created_at=_now(),
                code_version=known.get("code_version") or code_version(),
                wall_time_s=time.time() - started,
            )
            try:
                write_record(run_dir, failed_record(known, f"{type(exc).__name__}: {exc}".splitlines()[0]))
            except Exception:
                log.exception("could not write the failed record")
        raise
    finally:  # always close the W&B run, with the exit code that says whether the run worked
        try:
            finish_wandb(
                known.get("_wandb_logger"),
                exit_code,
                record=record.to_dict() if record else None,
                record_path=run_dir / RECORD_FILENAME if record else None,
                artifacts=known.get("_artifacts"),
                log_artifacts=bool(OmegaConf.select(cfg, "logger.wandb.log_artifacts", default=True)),
            )
        finally:
            teardown_logging()


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _set_threads(cfg: DictConfig, local_world: int) -> int:
    configured = OmegaConf.select(cfg, "trainer.num_threads", default=None)
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    threads = int(configured) if configured else max(1, cores // max(1, local_world))
    torch.set_num_threads(threads)
    return threads


def _resolve_accelerator_precision(trainer_cfg: dict[str, Any]) -> tuple[str, str]:
    accelerator = str(trainer_cfg.get("accelerator", "auto"))
    if accelerator in ("auto", "gpu"):
        accelerator = "cuda" if torch.cuda.is_available() else "cpu"
    precision = str(trainer_cfg.get("precision", "auto"))
    if precision == "auto":
        precision = "bf16-mixed" if accelerator == "cuda" and torch.cuda.is_bf16_supported() else "32-true"
    return accelerator, precision


#: trainer config keys the worker reads itself (everything else goes to pl.Trainer as is)
WORKER_TRAINER_KEYS = (
    "accelerator",
    "precision",
    "progress_bar",
    "progress_refresh_rate",
    "num_threads",
    "matmul_precision",
)


def _train(cfg: DictConfig, run_dir: Path, started: float, known: dict[str, Any]) -> RunRecord:
    """Everything learned on the way goes into ``known`` (for a failed record and the W&B finish)."""
    rank, world, local_world = dist_env()
    known["code_version"] = code_version()
    threads = _set_threads(cfg, local_world)

    # ---- config leaves (validated: one-line ConfigErrors) ----
    model_cfg = instantiate_leaf(cfg, "model")
    protocol = instantiate_leaf(cfg, "training")
    schedule = instantiate_leaf(cfg, "schedule")
    strategy = instantiate_leaf(cfg, "strategy")
    optimizer = instantiate_leaf(cfg, "optim")
    for group, obj, kind in (
        ("model", model_cfg, GPTConfig),
        ("training", protocol, TrainingProtocol),
        ("schedule", schedule, WarmupCosine),
        ("strategy", strategy, StrategyConfig),
    ):
        if not isinstance(obj, kind):
            raise ConfigError(f"{group}._target_", type(obj).__name__, f"must build a {kind.__name__}")
    if strategy.world_size != world and "RANK" in os.environ:
        raise ConfigError(
            "strategy.devices",
            strategy.devices,
            f"devices x num_nodes must equal the torchrun world size {world}",
        )

    # ---- data ----
    artifacts = DataArtifacts.load(Path(cfg.run.data_artifacts))
    known["_artifacts"] = artifacts
    known.update(
        corpus_hash=artifacts.corpus_hash,
        tokenizer_hash=artifacts.tokenizer_hash,
        subset_hash=artifacts.subset_hash,
        unique_tokens=artifacts.unique_tokens,
    )
    if model_cfg.vocab_size < artifacts.vocab_size:
        raise ConfigError(
            "model.vocab_size",
            model_cfg.vocab_size,
            f"must be >= the tokenizer's vocabulary size {artifacts.vocab_size}",
        )
    protocol.validate(model_cfg.seq_len, world, artifacts.unique_tokens)
    pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
    datamodule = TokenDataModule.from_artifacts(
        artifacts, model_cfg.seq_len, protocol, int(cfg.seed), vocab_size=model_cfg.vocab_size
    )
    unique = datamodule.unique_tokens
    plan = protocol.plan(unique, model_cfg.seq_len)
    known.update(
        eval_domains=datamodule.domains,
        train_domains=train_domains(artifacts.corpus_manifest, datamodule.domains),
        planned_steps=plan["planned_steps"],
    )

    # ---- model ----
    module = GPTLightningModule(
        model_cfg,
        optimizer,
        schedule,
        plan["planned_steps"],
        plan["warmup_steps"],
        protocol.batch_tokens,
        unique,
        datamodule.domains,
    )
    params = count_parameters(module.model)
    known.update(params_total=params["total"], params_non_embedding=params["non_embedding"])

    # ---- trainer ----
    trainer_cfg: dict[str, Any] = OmegaConf.to_container(cfg.trainer, resolve=True)  # type: ignore[assignment]
    accelerator, precision = _resolve_accelerator_precision(trainer_cfg)
    if accelerator == "cuda" and trainer_cfg.get("matmul_precision"):
        torch.set_float32_matmul_precision(str(trainer_cfg["matmul_precision"]))
    known.update(accelerator=accelerator, precision=precision, strategy=strategy.name)
    resolved_config = known["config"]
    axes = known["axes"]
    loggers, wandb_logger = build_loggers(
        cfg.get("logger") or {}, run_dir, str(cfg.run.id), str(cfg.study.name), axes, resolved_config
    )
    known["_wandb_logger"] = wandb_logger
    known["wandb"] = wandb_info(wandb_logger, run_dir)
    if rank == 0:  # no resume yet: a re-run starts from scratch, so stale checkpoints must not linger
        shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
    early_stop = EarlyStopping(
        monitor="val/loss",
        mode="min",
        patience=protocol.patience,
        min_delta=protocol.min_delta,
        check_finite=True,
    )
    checkpoint = ModelCheckpoint(
        dirpath=run_dir / "checkpoints",
        filename="best-{step}",
        monitor="val/loss",
        mode="min",
        save_top_k=1,
        save_last=False,
    )
    throughput = TrainThroughput()
    callbacks: list[pl.Callback] = [early_stop, checkpoint, throughput]
    enable_bar = bool(trainer_cfg.get("enable_progress_bar", True))
    if enable_bar:
        callbacks.append(
            progress_bar(
                str(trainer_cfg.get("progress_bar", "tqdm")),
                int(trainer_cfg.get("progress_refresh_rate", 20)),
            )
        )
    passthrough = {k: v for k, v in trainer_cfg.items() if k not in WORKER_TRAINER_KEYS}
    trainer = pl.Trainer(
        accelerator=accelerator,
        precision=precision,
        strategy=strategy.name,
        devices=strategy.devices,
        num_nodes=strategy.num_nodes,
        max_steps=plan["planned_steps"],
        max_epochs=-1,
        val_check_interval=plan["eval_interval_steps"],
        check_val_every_n_epoch=None,
        gradient_clip_val=protocol.grad_clip,
        default_root_dir=str(run_dir),
        logger=loggers,
        callbacks=callbacks,
        enable_checkpointing=True,
        use_distributed_sampler=False,
        enable_model_summary=False,
        **{"num_sanity_val_steps": 0, **passthrough},
    )
    define_token_axis(wandb_logger)
    log.info(
        "start run %s study=%s axes=%s | params %s (non-embedding %s) | U=%s tokens, batch %s tokens, "
        "planned %s steps = %s tokens (%.1f epochs), eval every %s steps, warmup %s steps, patience %s | "
        "%s x%s %s, %s threads/process, precision %s",
        cfg.run.id,
        cfg.study.name,
        axes,
        f"{params['total']:,}",
        f"{params['non_embedding']:,}",
        f"{unique:,}",
        protocol.batch_tokens,
        plan["planned_steps"],
        f"{plan['planned_tokens']:,}",
        plan["planned_epochs"],
        plan["eval_interval_steps"],
        plan["warmup_steps"],
        protocol.patience,
        accelerator,
        world,
        strategy.name,
        threads,
        precision,
    )

    # ---- fit, then test the best checkpoint ----
    fit_started = time.time()
    trainer.fit(module, datamodule=datamodule)
    train_time = time.time() - fit_started
    if trainer.interrupted:
        raise KeyboardInterrupt("training was interrupted")
    steps = int(trainer.global_step)
    if early_stop.stopping_reason == EarlyStoppingReason.PATIENCE_EXHAUSTED:
        stop_reason, converged = "early_stopping", True
    elif early_stop.stopping_reason == EarlyStoppingReason.NON_FINITE_METRIC:
        raise FloatingPointError(f"validation loss became non-finite at step {steps}")
    elif steps >= plan["planned_steps"]:
        stop_reason, converged = "token_cap", False
    else:
        raise RuntimeError(
            f"training stopped at step {steps} of {plan['planned_steps']} for no known reason "
            f"({early_stop.stopping_reason})"
        )
    best_path = checkpoint.best_model_path
    match = re.search(r"step=(\d+)", Path(best_path).name)
    if not best_path or match is None:
        raise RuntimeError(f"no best checkpoint found (best_model_path={best_path!r})")
    best_step = int(match.group(1))
    history = {h["step"]: h for h in module.eval_history}
    best, final = history[best_step], module.eval_history[-1]
    trainer.test(module, datamodule=datamodule, ckpt_path="best", verbose=False)
    test = module.test_results
    assert test is not None

    tokens_seen = steps * protocol.batch_tokens
    tokens_at_best = best_step * protocol.batch_tokens
    test_bpb = test["bpb_by_domain"]
    record = RunRecord(
        run_id=known["run_id"],
        study=known["study"],
        status="done",
        axes=axes,
        seed=known["seed"],
        created_at=_now(),
        code_version=known["code_version"],
        config=resolved_config,
        corpus_hash=artifacts.corpus_hash,
        tokenizer_hash=artifacts.tokenizer_hash,
        subset_hash=artifacts.subset_hash,
        train_domains=known["train_domains"],
        eval_domains=datamodule.domains,
        params_total=params["total"],
        params_non_embedding=params["non_embedding"],
        unique_tokens=unique,
        tokens_seen=tokens_seen,
        epochs=tokens_seen / unique,
        steps=steps,
        planned_steps=plan["planned_steps"],
        best_step=best_step,
        tokens_at_best=tokens_at_best,
        epochs_at_best=tokens_at_best / unique,
        converged=converged,
        stop_reason=stop_reason,
        best_val_loss=best["loss"],
        final_val_loss=final["loss"],
        test_loss=test["loss"],
        val_loss_best=best["loss_by_domain"],
        val_loss_final=final["loss_by_domain"],
        test_loss_by_domain=test["loss_by_domain"],
        val_bpb_best=best["bpb_by_domain"],
        test_bpb=test_bpb,
        test_bpb_mean=sum(test_bpb.values()) / len(test_bpb),
        wall_time_s=time.time() - started,
        train_time_s=train_time,
        tokens_per_s=tokens_seen / train_time,
        world_size=trainer.world_size,
        strategy=str(getattr(trainer.strategy, "strategy_name", strategy.name)),
        accelerator=accelerator,
        precision=str(trainer.precision),
        wandb=known["wandb"],
    )
    if trainer.is_global_zero:
        write_record(run_dir, record)
    log.info(
        "end run %s: best val %.4f at step %d (%.1f epochs), test %.4f (bpb %.4f), final val %.4f | "
        "%s after %d steps = %.1f epochs | fit %.0f s, %.0f tokens/s (train steps only %.0f), wall %.0f s",
        record.run_id,
        record.best_val_loss,
        best_step,
        record.epochs_at_best,
        record.test_loss,
        record.test_bpb_mean,
        record.final_val_loss,
        stop_reason,
        steps,
        record.epochs,
        train_time,
        record.tokens_per_s,
        throughput.tokens_per_s(protocol.batch_tokens),
        record.wall_time_s,
    )
    return record


# ---- callbacks ---------------------------------------------------------------------------------------------
def progress_bar(kind: str, refresh_rate: int) -> Any:
    """A progress bar whose total is max_steps (the stream is infinite, so Lightning's own total is unknown)."""
    if kind == "rich":
        return RichProgressBar(refresh_rate=refresh_rate)
    if kind != "tqdm":
        raise ConfigError("trainer.progress_bar", kind, "must be tqdm or rich")

    class StepProgressBar(TQDMProgressBar):
        @property
        def total_train_batches(self) -> int | float:
            return self.trainer.max_steps

    return StepProgressBar(refresh_rate=refresh_rate)


class TrainThroughput(pl.Callback):
    """Time spent in training batches only (evaluation excluded), for tokens/s of the training step."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.batches = 0
        self._t0 = 0.0

    def on_train_batch_start(self, *args: Any) -> None:
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, *args: Any) -> None:
        self.seconds += time.perf_counter() - self._t0
        self.batches += 1

    def tokens_per_s(self, batch_tokens: int) -> float:
        return self.batches * batch_tokens / self.seconds if self.seconds else math.nan


def main(argv: list[str] | None = None) -> int:
    started = time.time()
    parser = argparse.ArgumentParser(
        prog="python -m datascale.training.worker", description=__doc__.splitlines()[0]
    )
    parser.add_argument("resolved", type=Path, help="<run_dir>/resolved.yaml written by the launcher")
    args = parser.parse_args(argv)
    try:
        run(args.resolved, started)
    except ConfigError as err:
        print(f"config error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # the traceback is in worker.log when the run got that far
        print(f"worker failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
