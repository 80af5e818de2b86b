"""Scale-out on this machine, each figure measured side by side in one run:

(c) training tokens/s of the default model with ``single`` vs ``ddp`` (2 ranks) vs ``fsdp`` (2 ranks), each
    started the way the launcher starts a run (``torchrun --standalone``, one thread per rank when 2 ranks);
(d) launch-to-first-step overhead: seconds from starting ``torchrun`` to the first training batch (process
    start, imports, process-group set-up, model and Trainer set-up), 1 and 2 ranks;
(e) a whole study (the smoke study's tiny model on 4 sizes, 2k-16k unique tokens, data prepared beforehand)
    one job at a time with every core (Hydra's basic launcher, ``worker.num_threads=null``) vs packed as the
    default study is (``hydra/launcher=parallel`` and one thread per run: ``datascale.packing``), with each
    study's efficiency (training FLOPs / (peak x wall) and its breakdown, ``scaling_analysis.steps.
    efficiency``) and the per-run start-up, teardown and exit-after-record medians of its records. The default
    study would make ``make bench`` take ten minutes more, so the smaller study stands in for it.

With 2 or more CUDA devices, (c) also runs on them with the ~124M model in bf16-mixed; otherwise the GPU
figures say they were not measured. ``python -m bench.bench_scale --child ...`` is the per-rank entry point.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.strategies import DDPStrategy

from bench.bench_train import BATCH_TOKENS, GPU_BATCH_TOKENS, GPU_MODEL, SEQ_LEN, VOCAB, lightning_module
from datascale.model import GPTConfig
from datascale.training.strategy import fsdp, single_device

STRATEGIES = (("single", 1), ("ddp", 2), ("fsdp", 2))
STUDY_SIZES = "2000,4000,8000,16000"


def child(strategy: str, steps: int, warmup: int, out: Path, gpu: bool) -> None:
    """One rank of a timed Lightning run with the given strategy; rank 0 writes the figures to ``out``."""
    launched = float(os.environ["BENCH_LAUNCHED_AT"])  # set by the parent just before torchrun
    cfg = GPTConfig(**GPU_MODEL) if gpu else GPTConfig.from_preset("gpt_0p9m", VOCAB, SEQ_LEN)
    batch_tokens = GPU_BATCH_TOKENS if gpu else BATCH_TOKENS
    accelerator = "cuda" if gpu else "cpu"
    built = {"single": lambda: single_device(accelerator), "ddp": DDPStrategy, "fsdp": fsdp}[strategy]()
    module, datamodule = lightning_module(cfg, steps + warmup, batch_tokens)
    timer = StepTimer(launched, warmup)
    trainer = pl.Trainer(
        accelerator=accelerator,
        devices=int(os.environ.get("WORLD_SIZE", 1)),
        strategy=built,
        precision="bf16-mixed" if gpu else "32-true",
        max_steps=steps + warmup,
        limit_val_batches=0,
        gradient_clip_val=1.0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        use_distributed_sampler=False,
        callbacks=[timer],
    )
    trainer.fit(module, datamodule=datamodule)
    if gpu:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - timer.started
    if trainer.is_global_zero:
        out.write_text(
            json.dumps(
                {
                    "tokens_per_s": steps * batch_tokens / seconds,
                    "launch_to_first_step_s": timer.first_step_s,
                    "world_size": trainer.world_size,
                }
            )
        )


class StepTimer(pl.Callback):
    """Seconds from launch to the first training batch; the clock for tokens/s starts after ``warmup``."""

    def __init__(self, launched: float, warmup: int) -> None:
        self.launched, self.warmup = launched, warmup
        self.first_step_s: float | None = None
        self.started = time.perf_counter()

    def on_train_batch_start(self, trainer: pl.Trainer, *args: Any) -> None:
        if self.first_step_s is None:
            self.first_step_s = time.time() - self.launched

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        if trainer.global_step == self.warmup:
            self.started = time.perf_counter()


def launch(strategy: str, nproc: int, steps: int, warmup: int, gpu: bool) -> dict[str, Any]:
    """Start one timed run with torchrun, as the launcher does, and read rank 0's figures."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        env = {**os.environ, "BENCH_LAUNCHED_AT": repr(time.time())}
        env.update({"OMP_NUM_THREADS": "1"} if nproc > 1 else {})
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
        cmd += [
            "-m",
            "bench.bench_scale",
            "--child",
            strategy,
            "--steps",
            str(steps),
            "--warmup",
            str(warmup),
        ]
        cmd += ["--out", str(out)] + (["--gpu"] if gpu else [])
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
        if proc.returncode != 0:
            errors = [line for line in proc.stderr.splitlines() if "Error" in line]
            return {"error": (errors or proc.stderr.strip().splitlines() or ["?"])[-1]}
        result = json.loads(out.read_text())
    return {k: round(v, 2) if isinstance(v, float) else v for k, v in result.items()}


def strategies(steps: int, warmup: int, gpu: bool = False) -> dict[str, Any]:
    """(c) and (d): tokens/s and launch-to-first-step of single, DDP(2) and FSDP(2), back to back."""
    results = {f"{name}_{n}": launch(name, n, steps, warmup, gpu) for name, n in STRATEGIES}
    single = results["single_1"].get("tokens_per_s")
    for value in results.values():
        if single and "tokens_per_s" in value:
            value["vs_single"] = round(value["tokens_per_s"] / single, 3)
    return results


def study_figures(study_dir: Path) -> dict[str, Any]:
    """Efficiency and per-run overheads of a finished study from its records, as the report computes them."""
    from scaling_analysis.steps.efficiency import study_efficiency
    from scaling_analysis.tables.excluded import scan_study

    files = scan_study(study_dir).files
    out = study_efficiency(files)
    if "skipped" in out:
        return out
    starts = [str(getattr(r, "worker_start", None)) for _, r in files]
    return {
        "worker_start": {kind: starts.count(kind) for kind in sorted(set(starts))},  # fork or exec
        "efficiency": round(out["efficiency"], 4),
        "step_mfu": round(out["step_mfu"], 4),
        "shares": {k: round(v, 3) for k, v in out["shares"].items()},
        "per_run_s": {k: None if v is None else round(v, 2) for k, v in out["per_run"].items()},
    }


def study(repeats: int = 1) -> dict[str, Any]:
    """(e): wall seconds of the same study one job at a time (all cores each) vs packed (fresh results)."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        base = [sys.executable, "-m", "datascale.launch", "--config-dir", "sweeps", "--config-name", "smoke"]
        base += [f"subset.unique_tokens={STUDY_SIZES}", f"paths.cache_dir={root / 'cache'}"]
        env = {**os.environ, "WANDB_MODE": "disabled"}
        walls: dict[str, float] = {}
        figures: dict[str, Any] = {}
        runs = {
            "prepare": ["training.cap_epochs=0.01"],  # builds the data once, trains next to nothing
            "one_at_a_time": ["hydra/launcher=basic", "worker.num_threads=null"],
            "packed": ["hydra/launcher=parallel", "worker.num_threads=${datascale.threads:}"],
        }
        for name, extra in runs.items():
            started = time.perf_counter()
            cmd = [*base, f"paths.results_dir={root / name}", *extra]
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
            if proc.returncode != 0:
                return {"error": f"{name}: {proc.stderr.strip().splitlines()[-1:]}"}
            walls[name] = round(time.perf_counter() - started, 1)
            figures[name] = study_figures(root / name / "smoke")
    from datascale.packing import packed_jobs, packed_threads

    return {
        "study": f"smoke (gpt_tiny), unique_tokens={STUDY_SIZES}",
        "packed_jobs_x_threads": f"{packed_jobs()} x {packed_threads()}",
        "one_at_a_time_wall_s": walls["one_at_a_time"],
        "packed_wall_s": walls["packed"],
        "packed_speedup": round(walls["one_at_a_time"] / walls["packed"], 2),
        "one_at_a_time": figures["one_at_a_time"],
        "packed": figures["packed"],
    }


def run(steps: int = 30, warmup: int = 5) -> dict[str, Any]:
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return {
        "model": "gpt_0p9m (vocab 4096, seq_len 128), 2048-token batches, CPU",
        "strategies": strategies(steps, warmup),
        "gpu_strategies": strategies(10, 3, gpu=True)
        if gpus >= 2
        else {"measured": False, "reason": f"needs 2 CUDA devices, found {gpus}: not measured"},
        "study": study(),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--child", choices=[name for name, _ in STRATEGIES])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--gpu", action="store_true")
    args = parser.parse_args()
    if args.child:
        child(args.child, args.steps, args.warmup, args.out, args.gpu)
    else:
        print(json.dumps(run(args.steps, args.warmup), indent=2))
