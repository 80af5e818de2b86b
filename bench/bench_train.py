"""Training throughput: the Lightning path (datamodule + module + Trainer) vs a plain PyTorch loop, same
model.

Both train the default model (gpt_0p9m, vocab 4096, seq_len 128) on 2048-token batches with AdamW, gradient
clipping and the warmup+cosine schedule, in one process with all cores. Tokens are random (speed does not
depend on the text). ``run()`` returns tokens/s of each path and the Lightning overhead; ``python -m
bench.bench_train`` prints them. Timings exclude start-up and the first steps (warm-up of allocator and
kernels).
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import time
import warnings
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch

from datascale.model import GPT, GPTConfig, count_parameters
from datascale.training.datamodule import TokenDataModule, TrainStream
from datascale.training.module import GPTLightningModule, param_groups
from datascale.training.protocol import TrainingProtocol
from datascale.training.schedule import WarmupCosine
from datascale.training.worker import TrainThroughput

VOCAB, SEQ_LEN, BATCH_TOKENS = 4096, 128, 2048


def _data(n_tokens: int = 200_000) -> np.ndarray:
    return np.random.default_rng(0).integers(0, VOCAB, n_tokens).astype(np.uint16)


def plain_loop(cfg: GPTConfig, steps: int, warmup: int) -> dict[str, float]:
    """The reference: a hand-written loop over the same stream, optimizer, clipping and schedule."""
    torch.manual_seed(0)
    model = GPT(cfg)
    optimizer = torch.optim.AdamW(param_groups(model), lr=3e-3, betas=(0.9, 0.95), weight_decay=0.1)
    scheduler = WarmupCosine(0.1).build(optimizer, 10, steps + warmup)
    stream = iter(TrainStream(_data(), SEQ_LEN, BATCH_TOKENS // SEQ_LEN, seed=0))
    model.train()
    start = 0.0
    for step in range(steps + warmup):
        if step == warmup:
            start = time.perf_counter()
        x, y = next(stream)
        loss = model(x, y).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
    seconds = time.perf_counter() - start
    return {
        "tokens_per_s": steps * BATCH_TOKENS / seconds,
        "ms_per_step": 1000 * seconds / steps,
        "final_loss": float(loss),
    }


def lightning_path(cfg: GPTConfig, steps: int, warmup: int) -> dict[str, float]:
    """The worker's objects: TokenDataModule + GPTLightningModule + Trainer (no validation, logging on)."""
    pl.seed_everything(0, verbose=False)
    protocol = TrainingProtocol(batch_tokens=BATCH_TOKENS)
    rng = np.random.default_rng(1)
    evals = {"a": {"val": rng.integers(0, VOCAB, 1000), "test": rng.integers(0, VOCAB, 1000)}}
    dm = TokenDataModule(_data(), evals, np.ones(VOCAB, dtype=np.int64), SEQ_LEN, protocol, seed=0)
    optimizer = functools.partial(torch.optim.AdamW, lr=3e-3, betas=(0.9, 0.95), weight_decay=0.1)
    module = GPTLightningModule(
        cfg, optimizer, WarmupCosine(0.1), steps + warmup, 10, BATCH_TOKENS, len(dm.train_tokens), dm.domains
    )
    timer = TrainThroughput()

    class SkipWarmup(pl.Callback):
        def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
            if trainer.global_step == warmup:
                timer.seconds, timer.batches = 0.0, 0
                self.started = time.perf_counter()

    skip = SkipWarmup()
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=steps + warmup,
        limit_val_batches=0,
        gradient_clip_val=1.0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=10,
        callbacks=[timer, skip],
    )
    trainer.fit(module, datamodule=dm)
    wall = time.perf_counter() - skip.started
    return {
        "tokens_per_s": timer.tokens_per_s(BATCH_TOKENS),
        "tokens_per_s_wall": steps * BATCH_TOKENS / wall,
        "ms_per_step": 1000 * timer.seconds / max(1, timer.batches),
    }


def compare(cfg: GPTConfig, threads: int, steps: int, warmup: int, repeats: int) -> dict[str, Any]:
    """Alternate the two paths ``repeats`` times; the best of each is the least disturbed by other
    processes."""
    torch.set_num_threads(threads)
    plain, lightning = [], []
    for _ in range(repeats):
        plain.append(plain_loop(cfg, steps, warmup)["tokens_per_s"])
        lightning.append(lightning_path(cfg, steps, warmup)["tokens_per_s_wall"])
    best_plain, best_lightning = max(plain), max(lightning)
    return {
        "threads": threads,
        "plain_tokens_per_s": round(best_plain),
        "lightning_tokens_per_s": round(best_lightning),
        "lightning_overhead_pct": round(100 * (1 - best_lightning / best_plain), 1),
        "plain_all": [round(v) for v in plain],
        "lightning_all": [round(v) for v in lightning],
    }


def run(steps: int = 30, warmup: int = 5, repeats: int = 2) -> dict[str, Any]:
    """1 thread (robust on a shared machine: measures the framework overhead) and all cores (the worker
    default)."""
    warnings.filterwarnings("ignore")
    logging.getLogger("pytorch_lightning").setLevel(logging.WARNING)
    cfg = GPTConfig.from_preset("gpt_0p9m", vocab_size=VOCAB, seq_len=SEQ_LEN)
    params = count_parameters(GPT(cfg))
    cores = len(os.sched_getaffinity(0))
    load_before = os.getloadavg()[0]
    results = {f"threads_{t}": compare(cfg, t, steps, warmup, repeats) for t in sorted({1, cores})}
    return {
        "model": "gpt_0p9m",
        "params_total": params["total"],
        "batch_tokens": BATCH_TOKENS,
        "steps_timed": steps,
        **results,
        "load_avg_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    print(json.dumps(run(steps=args.steps, repeats=args.repeats), indent=2))
