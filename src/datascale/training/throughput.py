"""Throughput and model FLOPs utilisation (MFU): FLOPs per token, device peaks, a measured CPU matmul peak.

MFU = achieved model FLOP/s / peak FLOP/s of the devices used, where achieved = training tokens/s x model
FLOPs per token (PaLM, Chowdhery et al. 2022, appendix B): ``6 x (matmul parameters) + 12 x n_layer x seq_len
x d_model``. The first term is forward (2) plus backward (4) FLOPs of every weight matrix a token passes
through, the tied LM head included (it is a real matmul even though its weights are the embedding); the second
is attention's ``Q K^T`` and ``A V`` (counted in full, as in PaLM, although a causal mask skips half).
Embedding look-ups, LayerNorms, softmax and the optimizer are not counted: MFU measures useful matmul work.

Peaks: dense (no sparsity) tensor-core figures from the vendors' datasheets for known GPUs, by the dtype the
matmuls run in; an unknown GPU gets a matmul measured on it, marked estimated; a CPU gets an fp32 matmul
measured once per machine and thread count, and cached. Torch is imported only to measure.
"""

from __future__ import annotations

import json
import math
import os
import platform
import re
import time
from pathlib import Path
from typing import Any

#: Dense peak FLOP/s by compute dtype (vendor datasheets; SXM parts unless named). Patterns are tried in order
#: against ``torch.cuda.get_device_name()``, so specific names come before the families they contain.
GPU_PEAK_FLOPS: tuple[tuple[str, dict[str, float]], ...] = (
    (r"B200", {"bf16": 2250e12, "fp16": 2250e12, "tf32": 1100e12, "fp32": 80e12}),
    (r"H200", {"bf16": 989.4e12, "fp16": 989.4e12, "tf32": 494.7e12, "fp32": 66.9e12}),
    (r"H100.*PCIe", {"bf16": 756.5e12, "fp16": 756.5e12, "tf32": 378e12, "fp32": 51.2e12}),
    (r"H100", {"bf16": 989.4e12, "fp16": 989.4e12, "tf32": 494.7e12, "fp32": 66.9e12}),
    (r"A100", {"bf16": 312e12, "fp16": 312e12, "tf32": 156e12, "fp32": 19.5e12}),
    (r"L40S", {"bf16": 362.05e12, "fp16": 362.05e12, "tf32": 183e12, "fp32": 91.6e12}),
    (r"\bL4\b", {"bf16": 121e12, "fp16": 121e12, "tf32": 60e12, "fp32": 30.3e12}),
    (r"\bA10\b", {"bf16": 125e12, "fp16": 125e12, "tf32": 62.5e12, "fp32": 31.2e12}),
    (r"V100", {"fp16": 125e12, "fp32": 15.7e12}),
)
#: Square matmul size used to measure a peak (large enough to be compute-bound on CPUs and small GPUs).
PEAK_MATMUL_SIZE = 2048


def matmul_parameters(n_layer: int, d_model: int, vocab_size: int) -> int:
    """Weights a token multiplies with: per block QKV (3d^2), output (d^2), MLP (8d^2); the LM head (dV)."""
    return n_layer * 12 * d_model * d_model + d_model * vocab_size


def training_flops_per_token(n_layer: int, d_model: int, vocab_size: int, seq_len: int) -> int:
    """Model FLOPs of one training token (forward + backward), attention included (PaLM's formula)."""
    return 6 * matmul_parameters(n_layer, d_model, vocab_size) + 12 * n_layer * seq_len * d_model


def compute_dtype(precision: str, accelerator: str, matmul_precision: str = "high") -> str:
    """The dtype matmuls run in under a Lightning precision: bf16, fp16, tf32 (CUDA fp32 + TF32), fp32."""
    if precision.startswith("bf16"):
        return "bf16"
    if precision.startswith("16"):
        return "fp16"
    if precision.startswith("64"):
        return "fp64"
    return "tf32" if accelerator == "cuda" and matmul_precision in ("high", "medium") else "fp32"


def table_peak(device_name: str, dtype: str) -> float | None:
    """Datasheet peak FLOP/s of a known GPU in this dtype, or None (unknown device or dtype)."""
    for pattern, peaks in GPU_PEAK_FLOPS:
        if re.search(pattern, device_name):
            return peaks.get(dtype)
    return None


def mfu(tokens_per_s: float, flops_per_token: float, peak_flops_per_s: float) -> float:
    """Achieved model FLOP/s over the peak of all devices used (nan when either is unknown)."""
    if not (peak_flops_per_s > 0 and math.isfinite(tokens_per_s)):
        return math.nan
    return tokens_per_s * flops_per_token / peak_flops_per_s


def measure_matmul_peak(device: str = "cpu", dtype: str = "fp32", size: int = PEAK_MATMUL_SIZE) -> float:
    """Best FLOP/s of a square matmul on this device with the current torch thread count."""
    import torch

    torch_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp64": torch.float64}.get(
        dtype, torch.float32
    )
    a = torch.randn(size, size, device=device, dtype=torch_dtype)
    b = torch.randn(size, size, device=device, dtype=torch_dtype)
    best = math.inf
    for _ in range(12):  # the first is a warm-up; the best of the rest is the least disturbed
        if device != "cpu":
            torch.cuda.synchronize()
        started = time.perf_counter()
        a @ b
        if device != "cpu":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - started)
    return 2 * size**3 / best


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


#: Where this machine's measured peaks are kept (a property of the machine, not of a project's data cache):
#: ``DATASCALE_MACHINE_CACHE``, else ``~/.cache/datascale/machine`` (the same file ``make bench`` fills).
MACHINE_CACHE_ENV = "DATASCALE_MACHINE_CACHE"


def machine_cache_dir() -> Path:
    """The per-machine cache of measured peaks (one measurement serves every run, study and benchmark)."""
    return Path(os.environ.get(MACHINE_CACHE_ENV) or Path.home() / ".cache" / "datascale" / "machine")


#: Cores other processes may keep busy while a peak is measured for it to count as measured on a quiet
#: machine (a 2-thread matmul beside one busy core ran at half speed: make bench (f)).
QUIET_CORES = 0.25


def peak_entry(value: Any) -> dict[str, Any]:
    """A cache entry as {flops, others_cores, load_1min, measured_at}; a bare number (written before the
    load was stored) has an unknown load."""
    if isinstance(value, dict):
        return value
    return {"flops": float(value), "others_cores": None, "load_1min": None, "measured_at": None}


def measure_cpu_peak(threads: int) -> dict[str, Any]:
    """The fp32 matmul peak with ``threads`` torch threads, with the load it was measured under."""
    import torch

    from datascale.training.machine_load import load_average, others_load

    previous, load = torch.get_num_threads(), load_average()
    torch.set_num_threads(threads)
    seen: dict[str, float | None] = {}
    try:
        with others_load(seen):
            flops = measure_matmul_peak("cpu", "fp32")
    finally:
        torch.set_num_threads(previous)
    return {
        "flops": flops,
        "others_cores": seen["others_cores"],
        "load_1min": load,
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def cached_cpu_peak(cache_dir: Path, threads: int, at_least: float = 0.0, remeasure: bool = False) -> float:
    """fp32 matmul peak of this CPU with ``threads`` torch threads: measured once, then read from the cache.

    Measured again when ``remeasure`` (``make bench``) or when a run's training steps went faster than the
    cached peak (``at_least``: an MFU above 1 proves the peak was measured under load); the cache keeps the
    higher of the two (contention can only lower a measured peak), with the load it was measured under.
    """
    return cpu_peak_entry(cache_dir, threads, at_least, remeasure)["flops"]


def cpu_peak_entry(
    cache_dir: Path, threads: int, at_least: float = 0.0, remeasure: bool = False
) -> dict[str, Any]:
    """:func:`cached_cpu_peak` with the load the peak was measured under (``peak_entry``)."""
    import torch
    from filelock import FileLock

    cache_dir.mkdir(parents=True, exist_ok=True)
    path = cache_dir / "matmul_peak.json"
    key = f"{cpu_name()} | {os.cpu_count()} cpus | {threads} threads | torch {torch.__version__} | fp32"
    with FileLock(str(path) + ".lock"):
        cache: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
        entry = peak_entry(cache[key]) if key in cache else None
        if entry is None or remeasure or entry["flops"] < at_least:
            fresh = measure_cpu_peak(threads)
            entry = fresh if entry is None or fresh["flops"] > entry["flops"] else entry
            cache[key] = entry
            path.write_text(json.dumps(cache, indent=2))
    return entry


def peak_source(threads: int, entry: dict[str, Any], observed: float) -> str:
    """``peak_flops_source`` of a CPU peak: how and under what load it was measured, and a flag when the
    run's own training steps beat it (MFU > 1: the peak was measured under load and is too low)."""
    others = entry.get("others_cores")
    load = "unknown load" if others is None else f"{others:.2f} other cores busy"
    source = f"measured fp32 matmul peak with {threads} thread(s) per rank (cached per machine; {load})"
    if observed > entry["flops"]:
        source += "; BELOW the rate the training steps reached (MFU > 1): measured under load, re-measure"
    return source


def device_peak(
    accelerator: str,
    precision: str,
    matmul_precision: str,
    threads: int,
    cache_dir: Path,
    observed: float = 0.0,
) -> tuple[str, float, str]:
    """(device name, peak FLOP/s of one device (rank), where the peak comes from). ``observed``: the FLOP/s
    per rank the run's training steps reached; a cached CPU peak below it is measured again."""
    dtype = compute_dtype(precision, accelerator, matmul_precision)
    if accelerator == "cuda":
        import torch

        name = torch.cuda.get_device_name()
        peak = table_peak(name, dtype)
        if peak is not None:
            return name, peak, f"datasheet {dtype} dense peak"
        measured = measure_matmul_peak("cuda", dtype)
        return name, measured, f"estimated: {dtype} matmul measured on this device (not in the peak table)"
    entry = cpu_peak_entry(cache_dir, threads, at_least=observed)
    return cpu_name(), float(entry["flops"]), peak_source(threads, entry, observed)
