"""The Hydra job: validate the config, prepare the data, and launch training as a ``torchrun`` subprocess.

Lightning's ``ddp`` inside a Hydra multirun re-executes the whole sweep in every rank (upstream bug), so a
Hydra job never hosts training ranks. It resolves the config once, derives the run id from it and the data
manifest, skips runs that are already done, writes ``resolved.yaml`` and runs
``torchrun -m datascale.training.worker resolved.yaml``. The same path serves one process, DDP and FSDP.

Usage::

    python -m datascale.launch subset.unique_tokens=32000 seed=1          # one run
    python -m datascale.launch --config-dir sweeps --config-name data_size  # a study (multirun)
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import hydra
from filelock import FileLock, Timeout
from hydra.core.global_hydra import GlobalHydra
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from datascale import CONF_DIR
from datascale.config_errors import ConfigError, require, require_positive_int
from datascale.configs import axis_values, instantiate_group
from datascale.data.atomic import atomic_write_json
from datascale.records import RECORD_FILENAME, is_done, read_record
from datascale.run_id import run_identity

log = logging.getLogger("datascale.launch")

#: Config groups whose (torch-free) leaves are instantiated, and so validated, before any compute is spent.
#: ``trainer``, ``strategy``, ``optim`` build torch objects: the launcher checks their values, the worker
#: builds them.
VALIDATED_GROUPS = ("source", "split", "tokenizer", "subset", "model", "schedule", "training", "worker")
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
#: The strategy leaf that runs one process only.
SINGLE_DEVICE_TARGET = "datascale.training.strategy.single_device"


class LaunchError(RuntimeError):
    """A run could not be trained; the message says where its log is."""


def validate_config(cfg: DictConfig) -> dict[str, Any]:
    """Instantiate every torch-free leaf and check the rest; raise a one-line :class:`ConfigError` on bad
    input.

    Returns the instantiated leaves.
    """
    leaves = {group: instantiate_group(cfg, group) for group in VALIDATED_GROUPS}
    devices, num_nodes = layout(cfg)
    leaves["training"].validate(
        seq_len=leaves["model"].seq_len,
        world_size=devices * num_nodes,
        unique_tokens=leaves["subset"].unique_tokens,
    )
    _check_optimizer(cfg.optim)
    _check_strategy(cfg, devices * num_nodes)
    _check_study(cfg)
    return leaves


def layout(cfg: DictConfig) -> tuple[int, int]:
    """(ranks per node, nodes) from the Trainer arguments, checked."""
    devices = OmegaConf.select(cfg, "trainer.devices", default=1)
    num_nodes = OmegaConf.select(cfg, "trainer.num_nodes", default=1)
    require_positive_int("trainer.devices", devices)
    require_positive_int("trainer.num_nodes", num_nodes)
    require(
        num_nodes == 1,
        "trainer.num_nodes",
        num_nodes,
        "must be 1: multi-node launch (SLURM, num_nodes) is not supported yet",
    )
    return int(devices), int(num_nodes)


def _check_strategy(cfg: DictConfig, world_size: int) -> None:
    target = OmegaConf.select(cfg, "strategy._target_", default=None)
    require(
        isinstance(target, str) and bool(target), "strategy._target_", target, "must name a strategy class"
    )
    require(
        not (target == SINGLE_DEVICE_TARGET and world_size > 1),
        "trainer.devices",
        world_size,
        "strategy=single runs one process: set trainer.devices=1, or use strategy=ddp",
    )


def _check_study(cfg: DictConfig) -> None:
    study = cfg.study.name
    if not isinstance(study, str) or not study or "/" in study:
        raise ConfigError("study.name", study, "must be a non-empty name without '/'")
    for axis in cfg.study.axes:
        if OmegaConf.select(cfg, axis, default=None) is None:
            raise ConfigError("study.axes", axis, "every axis must be a dotted key of the config")


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


def worker_env(nproc_per_node: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in DISTRIBUTED_ENV}
    env["TOKENIZERS_PARALLELISM"] = "false"
    env.setdefault("WANDB_START_METHOD", "thread")
    if nproc_per_node > 1:
        env["OMP_NUM_THREADS"] = "1"
    return env


def run_job(cfg: DictConfig) -> dict[str, Any]:
    """One study point: returns a short summary (status, run id, run dir)."""
    from datascale.data.prepare import prepare_from_config  # data stage; imported late to keep --help fast

    validate_config(cfg)
    artifacts = prepare_from_config(cfg)
    resolved: dict[str, Any] = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)  # type: ignore[assignment]
    resolved.pop("hydra", None)
    run_id = run_identity(resolved, artifacts.subset_hash)
    run_dir = Path(cfg.paths.results_dir) / cfg.study.name / "runs" / run_id
    summary: dict[str, Any] = {"run_id": run_id, "run_dir": str(run_dir), "axes": axis_values(cfg)}
    if is_done(run_dir):
        log.info("skip %s %s: already done (%s)", run_id, summary["axes"], run_dir / RECORD_FILENAME)
        return summary | {"status": "skipped"}

    run_dir.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(run_dir / ".lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        log.warning("skip %s: another process is training it (lock %s)", run_id, lock.lock_file)
        return summary | {"status": "locked"}
    try:
        if is_done(run_dir):  # finished while we waited for the lock
            return summary | {"status": "skipped"}
        artifacts_path = run_dir / "data_artifacts.json"
        artifacts.save(artifacts_path)
        resolved["run"] = {
            "id": run_id,
            "dir": str(run_dir),
            "data_artifacts": str(artifacts_path),
            "axes": summary["axes"],
        }
        resolved_path = run_dir / "resolved.yaml"
        OmegaConf.save(OmegaConf.create(resolved), resolved_path)
        devices, _ = layout(cfg)
        cmd = torchrun_command(resolved_path, devices)
        log.info("train %s %s -> %s", run_id, summary["axes"], run_dir)
        started = time.time()
        proc = subprocess.run(cmd, env=worker_env(devices), check=False)
        elapsed = time.time() - started
        if proc.returncode != 0 or not is_done(run_dir):
            reason = f"worker exited with code {proc.returncode}; see {run_dir / 'worker.log'}"
            atomic_write_json(
                run_dir / "status.json",
                {
                    "status": "failed",
                    "reason": reason,
                    "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                },
            )
            raise LaunchError(f"run {run_id} {summary['axes']} failed: {reason}")
        record = read_record(run_dir / RECORD_FILENAME)
        log.info(
            "done %s in %.0f s: best val %.4f, test %.4f, %.1f epochs, %s",
            run_id,
            elapsed,
            record.best_val_loss,
            record.test_loss,
            record.epochs,
            record.stop_reason,
        )
        return summary | {"status": "trained", "test_loss": record.test_loss}
    finally:
        lock.release()


def sweep_job_overrides(config: DictConfig) -> list[list[str]]:
    """Expand a multirun config into each job's overrides, exactly as Hydra's basic sweeper does."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    params = config.hydra.sweeper.get("params") or {}
    arguments = [f"{key}={value}" for key, value in params.items()] + list(config.hydra.overrides.task)
    parser = OverridesParser.create()
    batches = BasicSweeper.split_arguments(parser.parse_overrides(arguments), None)
    return [list(job) for batch in batches for job in batch]


class StudyCallback(Callback):
    """Check every point of a sweep (config and data budget) before the first one trains; summarise at the
    end."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from datascale.data.prepare import prepare_from_config

        loader = GlobalHydra.instance().config_loader()
        jobs = sweep_job_overrides(config)
        log.info("study %s: checking %d runs before training", config.study.name, len(jobs))
        for overrides in jobs:
            job_cfg = loader.load_sweep_config(config, overrides)
            try:
                validate_config(job_cfg)
                prepare_from_config(job_cfg)  # cached; also verifies that the study's subsets nest
            except ConfigError as err:
                raise SystemExit(f"config error in run [{' '.join(overrides)}]: {err}") from None

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from rich.console import Console
        from rich.table import Table

        from datascale.records import find_records

        study_dir = Path(config.paths.results_dir) / config.study.name
        records = find_records(study_dir, status=None)
        table = Table(title=f"study {config.study.name}: {len(records)} finished runs in {study_dir}")
        for column in ("run id", "axes", "U", "epochs", "best val", "test", "stop"):
            table.add_column(column)
        for r in sorted(records, key=lambda r: (r.unique_tokens, r.seed)):
            table.add_row(
                r.run_id,
                " ".join(f"{k}={v}" for k, v in r.axes.items()),
                f"{r.unique_tokens:,}",
                f"{r.epochs:.1f}",
                f"{r.best_val_loss:.4f}",
                f"{r.test_loss:.4f}",
                r.stop_reason,
            )
        Console(stderr=True).print(table)


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def _hydra_main(cfg: DictConfig) -> dict[str, Any]:
    try:
        return run_job(cfg)
    except ConfigError as err:
        log.error("config error: %s", err)
        raise SystemExit(f"config error: {err}") from None


def main() -> None:
    """Console entry point (``datascale``)."""
    _hydra_main()


if __name__ == "__main__":
    main()
