"""Packing runs onto this machine's cores, each figure measured back to back in one run:

(f) training-step tokens/s of the default model (gpt_0p9m, 2048-token batches) with 1 thread and with all
    cores, alone and with a CPU-bound process beside it (``python -c "while True: pass"``): a run whose
    threads must all be scheduled for every matmul stalls when one core is taken;
(g) aggregate tokens/s of one job per core (1 thread each) against one job with every core: what packing
    runs (``hydra/launcher=parallel``, the default studies) does to the training steps themselves;
(h) 1-thread tokens/s of the same 2048-token step as 16, 8 and 4-sequence micro-batches (gradient
    accumulation: the same gradient up to float summation order): the logits of 16 x 128 tokens x 4096 (32 MB)
    overflow the CPU's caches, so smaller micro-batches run faster (``worker.max_micro_batch_tokens``).

Each configuration runs in its own process (thread pools start clean), alternated ``repeats`` times; the
best of each is the least disturbed by the machine's other users. ``python -m bench.bench_pack --child
THREADS STEPS`` is one timed process.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from typing import Any

HOG = [sys.executable, "-c", "while True: pass"]


def child(threads: int, steps: int, warmup: int = 3) -> dict[str, float]:
    """One timed plain training loop of the default model with ``threads`` torch threads."""
    import torch

    from bench.bench_train import SEQ_LEN, VOCAB, plain_loop
    from datascale.model import GPTConfig

    torch.set_num_threads(threads)
    cfg = GPTConfig.from_preset("gpt_0p9m", vocab_size=VOCAB, seq_len=SEQ_LEN)
    return plain_loop(cfg, steps, warmup)


def micro_batches(steps: int = 12, sizes: tuple[int, ...] = (16, 8, 4)) -> dict[str, Any]:
    """(h): 1-thread tokens/s of one 16-sequence step cut into micro-batches of each size (best of steps)."""
    import numpy as np
    import torch

    from bench.bench_train import SEQ_LEN, VOCAB
    from datascale.model import GPT, GPTConfig
    from datascale.training.module import param_groups

    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = GPT(GPTConfig.from_preset("gpt_0p9m", vocab_size=VOCAB, seq_len=SEQ_LEN))
    optimizer = torch.optim.AdamW(param_groups(model), lr=1e-3)
    rng = np.random.default_rng(0)
    x, y = (torch.from_numpy(rng.integers(0, VOCAB, (16, SEQ_LEN))) for _ in range(2))
    rates = {}
    for _ in range(2):  # alternated twice: the best of each is the least disturbed
        for size in sizes:
            best = float("inf")
            for step in range(steps):
                started = time.perf_counter()
                optimizer.zero_grad(set_to_none=True)
                for i in range(0, 16, size):
                    (model(x[i : i + size], y[i : i + size]).mean() * size / 16).backward()
                optimizer.step()
                if step >= 2:
                    best = min(best, time.perf_counter() - started)
            rates[size] = max(rates.get(size, 0.0), 16 * SEQ_LEN / best)
    return {f"micro_{size}_tokens_per_s": round(rate) for size, rate in rates.items()} | {
        "micro_8_over_16": round(rates[8] / rates[16], 2),
        "micro_4_over_16": round(rates[4] / rates[16], 2),
    }


def timed(threads: int, steps: int, copies: int = 1, hog: bool = False) -> list[float]:
    """tokens/s of ``copies`` simultaneous timed processes (each ``threads`` threads), a hog beside or not."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    hogs = [subprocess.Popen(HOG)] if hog else []
    try:
        cmd = [sys.executable, "-m", "bench.bench_pack", "--child", str(threads), str(steps)]
        procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True) for _ in range(copies)]
        outs = [p.communicate(timeout=900)[0] for p in procs]
    finally:
        for h in hogs:
            h.kill()
            h.wait()
    return [json.loads(out.strip().splitlines()[-1])["tokens_per_s"] for out in outs]


def contention(cores: int, steps: int, repeats: int) -> dict[str, Any]:
    """(f): best tokens/s of 1 thread and of all cores, alone and beside a CPU-bound process."""
    runs: dict[str, list[float]] = {}
    for _ in range(repeats):
        for threads in sorted({1, cores}):
            for hog in (False, True):
                key = f"threads_{threads}" + ("_beside_a_hog" if hog else "_alone")
                runs.setdefault(key, []).append(timed(threads, steps, hog=hog)[0])
    best = {k: round(max(v)) for k, v in runs.items()}
    out: dict[str, Any] = {"tokens_per_s": best, "all": {k: [round(x) for x in v] for k, v in runs.items()}}
    for threads in sorted({1, cores}):
        alone, shared = best[f"threads_{threads}_alone"], best[f"threads_{threads}_beside_a_hog"]
        out[f"threads_{threads}_slowdown_beside_a_hog"] = round(alone / shared, 2)
    return out


def packing(cores: int, steps: int, repeats: int) -> dict[str, Any]:
    """(g): one 1-thread job per core at once (sum of their tokens/s) vs one job with every core."""
    packed, single = [], []
    for _ in range(repeats):
        packed.append(sum(timed(1, steps, copies=cores)))
        single.append(timed(cores, steps)[0])
    return {
        "jobs_x_threads": f"{cores} x 1 vs 1 x {cores}",
        "packed_tokens_per_s": round(max(packed)),
        "one_job_tokens_per_s": round(max(single)),
        "packed_over_one_job": round(max(packed) / max(single), 2),
    }


def run(steps: int = 30, repeats: int = 2) -> dict[str, Any]:
    cores = len(os.sched_getaffinity(0))
    load_before, started = os.getloadavg()[0], time.perf_counter()
    results = {
        "model": "gpt_0p9m (vocab 4096, seq_len 128), 2048-token batches, plain loop, CPU",
        "cores": cores,
        "contention": contention(cores, steps, repeats),
        "packing": packing(cores, steps, repeats),
        "micro_batches": micro_batches(),
    }
    results["load_avg_1min"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    results["wall_s"] = round(time.perf_counter() - started, 1)
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--child", nargs=2, type=int, metavar=("THREADS", "STEPS"))
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(*args.child)))
    else:
        print(json.dumps(run(args.steps, args.repeats), indent=2))
