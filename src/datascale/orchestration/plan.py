"""Plan a study before spending compute: ``datascale-plan <study> [overrides ...]`` (``make plan``).

For every point of ``sweeps/<study>.yaml`` it validates the config, prepares (or reuses) the data exactly as
the launcher would, so an impossible plan (a size larger than the pool, a batch that does not fit, a bad
mixture) fails here with the launcher's one-line error, and derives the run id to tell which runs are done.
Per run and in total it prints N, U, the planned tokens D (the token cap: early stopping usually ends
sooner, so times are upper bounds), epochs, training FLOPs, and the time on this machine and on a named GPU.
Nothing is trained.

Time here = (training FLOPs + evaluation FLOPs: forward passes over the capped val sets at every planned
evaluation and over the test sets once) / (this CPU's measured matmul peak x the MFU of the finished runs in
``paths.results_dir``, or :data:`ASSUMED_CPU_MFU` without any) + :data:`LAUNCH_SECONDS` per run. On a GPU:
its datasheet bf16 peak x :data:`ASSUMED_GPU_MFU`.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

from datascale import CONF_DIR, SWEEPS_DIR
from datascale.artifacts import DataArtifacts
from datascale.config_errors import ConfigError
from datascale.configs import axis_values
from datascale.data.token_cache import TokenCache
from datascale.orchestration.launch import layout, run_dir_of, sweep_job_overrides, validate_and_prepare
from datascale.records import find_records, is_done
from datascale.training.protocol import TrainingProtocol
from datascale.training.throughput import (
    GPU_PEAK_FLOPS,
    cached_cpu_peak,
    machine_cache_dir,
    table_peak,
    training_flops_per_token,
)

#: MFU assumed on this CPU when no finished run says better (the default model measures 0.45-0.8 here).
ASSUMED_CPU_MFU = 0.6
#: MFU assumed on a GPU for these small models (large models reach 0.4-0.5; small ones less).
ASSUMED_GPU_MFU = 0.3
#: Per-run overhead outside training (Hydra job, worker start-up: imports and set-up, test, exit), seconds:
#: 7.4-8.1 s measured on the project's 2-core machine (docs/studies.md, measurement 18).
LAUNCH_SECONDS = 8.0


@dataclass
class PlannedRun:
    """One study point as planned: what it trains on, what it costs, and whether it is already done."""

    overrides: list[str]
    run_id: str
    axes: dict[str, Any]
    params_non_embedding: int
    params_total: int
    unique_tokens: int
    pool_tokens: int
    planned_tokens: int
    flops: float
    world_size: int
    done: bool
    eval_flops: float = 0.0
    """Forward FLOPs of every planned validation (the capped val sets of all eval domains) and the test."""

    @property
    def epochs(self) -> float:
        return self.planned_tokens / self.unique_tokens


def compose_study(study: str, overrides: Sequence[str]) -> DictConfig:
    """``sweeps/<study>.yaml`` with conf/ on the search path, as ``--config-dir sweeps`` composes it."""
    if not (SWEEPS_DIR / f"{study}.yaml").exists():
        names = sorted(p.stem for p in SWEEPS_DIR.glob("*.yaml"))
        raise ConfigError("study", study, f"must be one of {names} (files in sweeps/)")
    with initialize_config_dir(str(SWEEPS_DIR), version_base="1.3"):
        return compose(
            study, overrides=[*overrides, f"hydra.searchpath=[file://{CONF_DIR}]"], return_hydra_config=True
        )


def is_sweep(override: str) -> bool:
    """True for a command-line sweep (``key=a,b``, ``key=range(...)``): Hydra's compose API refuses those."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return OverridesParser.create().parse_override(override).is_sweep_override()


def plan_point(cfg: DictConfig, overrides: list[str]) -> PlannedRun:
    """Validate, prepare the data (cached) and cost one study point."""
    leaves, artifacts = validate_and_prepare(cfg, progress=False)
    run_id, run_dir = run_dir_of(cfg, artifacts.subset_hash)
    model, protocol = leaves["model"], leaves["training"]
    devices, nodes = layout(cfg)
    counts = model.parameter_counts()
    planned = protocol.planned_tokens(artifacts.unique_tokens)
    per_token = training_flops_per_token(model.n_layer, model.d_model, model.vocab_size, model.seq_len)
    pool_tokens = sum(int(d["pool_tokens"]) for d in artifacts.subset_domains.values())
    return PlannedRun(
        overrides=overrides,
        run_id=run_id,
        axes=axis_values(cfg),
        params_non_embedding=counts["non_embedding"],
        params_total=counts["total"],
        unique_tokens=artifacts.unique_tokens,
        pool_tokens=pool_tokens,
        planned_tokens=planned,
        flops=float(per_token) * planned * (1.0 + cooldown_share(leaves["schedule"])),
        world_size=devices * nodes,
        done=is_done(run_dir),
        eval_flops=evaluation_flops(protocol, artifacts, float(per_token)),
    )


def cooldown_share(schedule: Any) -> float:
    """At most this share of the cap trains again in a cooldown (``schedule=wsd_cooldown``), else 0."""
    return float(schedule.cooldown_fraction) if getattr(schedule, "cools_down", False) else 0.0


def plan_study(study: str, overrides: Sequence[str] = ()) -> tuple[DictConfig, list[PlannedRun]]:
    """Every point of a study, planned (raises ConfigError naming the run for an impossible one)."""
    sweeps = [o for o in overrides if is_sweep(o)]  # e.g. subset.unique_tokens=1000,2000
    root = compose_study(study, [o for o in overrides if o not in sweeps])
    runs = []
    for job in sweep_job_overrides(root, sweeps):  # each job's overrides include the ones given here
        point = [o for o in job if o not in overrides]
        try:
            runs.append(plan_point(compose_study(study, job), point))
        except ConfigError as err:
            raise ConfigError(f"run [{' '.join(point)}] {err.field}", err.value, err.allowed) from None
    return root, runs


@dataclass
class CpuRate:
    """Expected achieved FLOP/s here: the measured matmul peak x the MFU finished runs of a size reached."""

    peak: float
    mfu_by_params: dict[int, float]

    def flops_per_s(self, params_total: int) -> float:
        return self.peak * self.mfu_by_params.get(params_total, ASSUMED_CPU_MFU)

    def describe(self) -> str:
        measured = f", measured MFU of {len(self.mfu_by_params)} model sizes" if self.mfu_by_params else ""
        return f"matmul peak {self.peak / 1e9:.0f} GFLOP/s x MFU (assumed {ASSUMED_CPU_MFU}{measured})"


def cpu_rate(results_dir: Path, threads: int, cache_dir: Path) -> CpuRate:
    """This CPU's peak (measured once, cached) and the median MFU of finished CPU runs per model size."""
    by_size: dict[int, list[float]] = {}
    for r in find_records(results_dir) if results_dir.exists() else []:
        mfu = getattr(r, "mfu", math.nan)
        if r.accelerator == "cpu" and isinstance(mfu, float) and math.isfinite(mfu):
            by_size.setdefault(r.params_total, []).append(mfu)
    medians = {n: statistics.median(v) for n, v in by_size.items()}
    return CpuRate(cached_cpu_peak(cache_dir, threads), medians)


def gpu_flops_per_s(gpu: str) -> float:
    """Expected achieved bf16 FLOP/s of one named GPU (its datasheet peak x :data:`ASSUMED_GPU_MFU`)."""
    peak = table_peak(gpu, "bf16")
    if peak is None:
        names = [p.replace("\\b", "").replace(".*", " ") for p, _ in GPU_PEAK_FLOPS]
        raise ConfigError("--gpu", gpu, f"must name one of {names}")
    return peak * ASSUMED_GPU_MFU


def seconds(run: PlannedRun, flops_per_s: float | CpuRate) -> float:
    rate = flops_per_s.flops_per_s(run.params_total) if isinstance(flops_per_s, CpuRate) else flops_per_s
    return (run.flops + run.eval_flops) / (rate * run.world_size) + LAUNCH_SECONDS


def evaluation_flops(protocol: TrainingProtocol, artifacts: DataArtifacts, per_token: float) -> float:
    """Forward passes (a third of a training token's FLOPs) over the val sets at every planned evaluation
    and once over the test sets: on small subsets they cost as much as the training steps. An upper bound
    with ``training.eval_se_target``: evaluations after the third score the share of windows it needs."""
    val = test = 0
    for caches in artifacts.eval_caches.values():
        val_tokens, test_tokens = (len(TokenCache.open(Path(caches[s])).tokens) for s in ("val", "test"))
        cap = protocol.eval_tokens_per_domain
        val += min(val_tokens, cap) if cap is not None else val_tokens
        test += test_tokens
    unique = artifacts.unique_tokens
    evaluations = protocol.planned_steps(unique) // protocol.eval_interval_steps(unique)
    return per_token / 3 * (evaluations * val + test)


def duration(s: float) -> str:
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.1f} min" if s < 7200 else f"{s / 3600:.1f} h"


def print_plan(cfg: DictConfig, runs: list[PlannedRun], here: CpuRate, gpu: str) -> None:
    from rich.console import Console
    from rich.table import Table

    gpu_rate = gpu_flops_per_s(gpu)
    table = Table(title=f"study {cfg.study.name}: {len(runs)} runs (W&B group {cfg.study.name})")
    for column in ("run id", "axes", "N (non-emb)", "U", "U/pool", "D (cap)", "epochs", "FLOPs", "here", gpu):
        table.add_column(column, justify="left" if column in ("run id", "axes") else "right")
    for r in runs:
        table.add_row(
            r.run_id + (" done" if r.done else ""),
            " ".join(f"{k}={v}" for k, v in r.axes.items() if k != "unique_tokens"),
            f"{r.params_non_embedding:,}",
            f"{r.unique_tokens:,}",
            f"{r.unique_tokens / r.pool_tokens:.1%}",
            f"{r.planned_tokens:,}",
            f"{r.epochs:.0f}",
            f"{r.flops:.2e}",
            duration(seconds(r, here)),
            duration(seconds(r, gpu_rate)),
        )
    console = Console(width=None if sys.stdout.isatty() else 160)
    console.print(table)
    todo = [r for r in runs if not r.done]
    console.print(
        f"{len(runs) - len(todo)} done, {len(todo)} to train: {sum(r.flops for r in todo):.2e} training "
        f"FLOPs + {sum(r.eval_flops for r in todo):.2e} of evaluation, "
        "at most "
        f"{duration(sum(seconds(r, here) for r in todo))} here ({here.describe()}), "
        f"{duration(sum(seconds(r, gpu_rate) for r in todo))} on one {gpu} (bf16, assumed MFU "
        f"{ASSUMED_GPU_MFU}); times assume every run reaches its token cap (early stopping ends sooner) "
        "and a full cooldown",
        highlight=False,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="datascale-plan", description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("study", help="a study file in sweeps/ (without .yaml)")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides applied to every point")
    parser.add_argument("--gpu", default="H100", help="GPU for the second time estimate (default H100)")
    args = parser.parse_args(argv)
    try:
        cfg, runs = plan_study(args.study, args.overrides)
        gpu_flops_per_s(args.gpu)
        threads = int(OmegaConf.select(cfg, "worker.num_threads", default=None) or 0) or _cores()
        here = cpu_rate(Path(cfg.paths.results_dir), threads, machine_cache_dir())
        print_plan(cfg, runs, here, args.gpu)
    except ConfigError as err:
        print(f"config error: {err}", file=sys.stderr)
        return 2
    return 0


def _cores() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


if __name__ == "__main__":
    sys.exit(main())
