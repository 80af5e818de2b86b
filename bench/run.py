"""`make bench`: run every benchmark and write the numbers to bench/results.json (targets live here, not in
tests)."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import resource
import time
import traceback
from pathlib import Path
from typing import Any

BENCHMARKS = (
    "bench.bench_fit",
    "bench.bench_train",
    "bench.bench_scale",
    "bench.bench_pack",
    "bench.bench_data",
)
DEFAULT_OUT = Path(__file__).resolve().parent / "results.json"


def machine() -> dict:
    info = {"platform": platform.platform(), "python": platform.python_version(), "cpu_count": os.cpu_count()}
    try:
        import torch

        info["torch"] = torch.__version__
        info["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:
        info["torch"] = None
    return info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", nargs="*", default=list(BENCHMARKS), help="benchmark modules to run")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where to write the JSON results")
    args = parser.parse_args()
    results: dict = {"machine": machine(), "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    for name in args.only:
        print(f"== {name}", flush=True)
        started = time.perf_counter()
        try:
            results[name] = importlib.import_module(name).run()
        except Exception as exc:  # a broken benchmark must not hide the others' numbers
            traceback.print_exc()
            results[name] = {"error": f"{type(exc).__name__}: {exc}"}
        results[name]["bench_wall_s"] = round(time.perf_counter() - started, 2)
        results[name]["peak_rss_mib_so_far"] = round(
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1
        )
        results[name]["peak_rss_children_mib"] = round(
            resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1
        )
        print(json.dumps(results[name], indent=2, default=str), flush=True)
    args.out.write_text(json.dumps(results, indent=2, default=str))
    print_summary(results)
    print(f"wrote {args.out}")


def _get(results: dict, *keys: str) -> Any:
    for key in keys:
        if not isinstance(results, dict) or key not in results:
            return "n/a"
        results = results[key]
    return results


#: (figure, benchmark, path to the value, goal or note) of the summary table; "{cores}" is the all-cores key.
TRAIN_ROWS = (
    ("(a) Lightning / plain loop, 1 thread", ("threads_1", "lightning_to_plain_ratio"), ">= 0.97"),
    ("(a) Lightning / plain loop, all cores", ("{cores}", "lightning_to_plain_ratio"), ">= 0.97"),
    ("(b) CPU MFU, plain loop, 1 thread", ("threads_1", "plain_mfu"), ">= 0.75"),
    ("(b) CPU MFU, Lightning, 1 thread", ("threads_1", "lightning_mfu"), ">= 0.75"),
    ("(b) CPU MFU, plain loop, all cores", ("{cores}", "plain_mfu"), ">= 0.75"),
    ("(b) CPU MFU, Lightning, all cores", ("{cores}", "lightning_mfu"), ">= 0.75"),
    ("(b) CPU fp32 matmul peak, GFLOP/s", ("{cores}", "cpu_matmul_peak_gflops"), "measured, cached"),
    (
        "(b) the model's Linear GEMMs alone / peak, all cores",
        ("{cores}", "linear_gemm_efficiency"),
        "the MFU ceiling of this model's shapes",
    ),
    (
        "(b) plain loop / that GEMM ceiling, all cores",
        ("{cores}", "plain_mfu_of_gemm_ceiling"),
        "what the rest of a step (attention, norms, loss, optimizer) costs",
    ),
)


def summary_rows(results: dict) -> list[tuple[str, Any, str]]:
    """(figure, value, goal or note): the training and scale-out figures of one ``make bench`` run."""
    train, scale = results.get("bench.bench_train", {}), results.get("bench.bench_scale", {})
    cores = f"threads_{(results.get('machine') or {}).get('cpu_count', 2)}"
    rows = [
        (name, _get(train, *(k.format(cores=cores) for k in keys)), goal) for name, keys, goal in TRAIN_ROWS
    ]
    load = _get(train, "load_avg_1min")
    rows.append(
        ("1-minute load average (before, after)", "", f"{load}: > 0 means other jobs shared the machine")
    )
    for name in ("single_1", "ddp_2", "fsdp_2"):
        vs = _get(scale, "strategies", name, "vs_single")
        rows.append(
            (f"(c) tokens/s {name}", _get(scale, "strategies", name, "tokens_per_s"), f"vs single: {vs}")
        )
    for name in ("single_1", "ddp_2"):
        overhead = _get(scale, "strategies", name, "launch_to_first_step_s")
        rows.append((f"(d) launch to first step, {name}, s", overhead, ""))
    study = scale.get("study") if isinstance(scale.get("study"), dict) else {}
    pack = results.get("bench.bench_pack")
    rows += study_rows(study) + pack_rows(pack if isinstance(pack, dict) else {})
    data = results.get("bench.bench_data")
    return rows + data_rows(data if isinstance(data, dict) else {}) + gpu_rows(_get(train, "gpu"))


def data_rows(data: dict) -> list[tuple[str, Any, str]]:
    """(i): the data stage per corpus size: wall, peak memory, tokenisation per core vs encode_batch."""
    rows = []
    for name, row in (data.get("sizes") or {}).items():
        rows.append(
            (f"(i) prepare {name}: wall s (s/MB)", _get(row, "wall_s"), f"{_get(row, 's_per_mb')} s/MB")
        )
        memory = f"of it anonymous {_get(row, 'peak_anon_mib')} MiB; goal <= 2048"
        rows.append((f"(i) prepare {name}: peak RSS MiB", _get(row, "peak_rss_mib"), memory))
        rows.append(
            (
                f"(i) prepare {name}: tokenise per core / encode_batch",
                _get(row, "per_core_over_encode_batch"),
                "goal >= 0.5 (within 2x)",
            )
        )
    return rows


def study_rows(study: dict) -> list[tuple[str, Any, str]]:
    """(e): the stand-in study one at a time vs packed: wall, efficiency, per-run overheads."""
    rows = [
        (
            "(e) study, 1 job at a time (all cores), s",
            _get(study, "one_at_a_time_wall_s"),
            _get(study, "study"),
        )
    ]
    jobs = _get(study, "packed_jobs_x_threads")
    speedup = f"{jobs} jobs x threads, speed-up {_get(study, 'packed_speedup')}"
    rows.append(("(e) study, packed (the default), s", _get(study, "packed_wall_s"), speedup))
    for name in ("one_at_a_time", "packed"):
        shares = _get(study, name, "shares")
        note = ", ".join(f"{k} {v}" for k, v in shares.items()) if isinstance(shares, dict) else ""
        rows.append(
            (f"(e) study efficiency, {name.replace('_', ' ')}", _get(study, name, "efficiency"), note)
        )
    for key in ("startup_s", "startup_cpu_s", "teardown_s", "exit_after_record_s"):
        value = _get(study, "packed", "per_run_s", key)
        rows.append((f"(d) per run (packed study, median): {key}", value, "goal: start-up + teardown <= 3 s"))
    return rows


def pack_rows(pack: dict) -> list[tuple[str, Any, str]]:
    """(f), (g): threads per run alone and beside a CPU-bound process; packed vs one job."""
    speeds = _get(pack, "contention", "tokens_per_s")
    load = f"load {_get(pack, 'load_avg_1min')}"
    rows = [
        (f"(f) tokens/s, {k.replace('_', ' ')}", v, load)
        for k, v in (speeds if isinstance(speeds, dict) else {}).items()
    ]
    for threads in sorted({1, int(pack.get("cores", 2) or 2)}):
        slowdown = _get(pack, "contention", f"threads_{threads}_slowdown_beside_a_hog")
        rows.append((f"(f) slowdown beside a CPU hog, {threads} thread(s)", slowdown, "goal: no 3x collapse"))
    for size in (8, 4):
        micro = _get(pack, "micro_batches", f"micro_{size}_over_16")
        rows.append(
            (f"(h) 1-thread step in {size}-sequence / 16-sequence micro-batches", micro, "same gradient")
        )
    ratio = _get(pack, "packing", "packed_over_one_job")
    rows.append(
        ("(g) packed 1-thread jobs / one all-core job", ratio, str(_get(pack, "packing", "jobs_x_threads")))
    )
    return rows


def gpu_rows(gpu: Any) -> list[tuple[str, Any, str]]:
    if isinstance(gpu, dict) and gpu.get("measured"):
        return [
            (f"GPU {gpu['device']}: Lightning / plain", gpu["lightning_to_plain_ratio"], ">= 0.97"),
            ("GPU MFU, Lightning, bf16-mixed, 124M", gpu["lightning_mfu"], ">= 0.50 (H100/H200)"),
        ]
    return [("GPU (124M, bf16-mixed)", "not measured", str(_get(gpu, "reason")))]


def print_summary(results: dict) -> None:
    rows = summary_rows(results)
    width = max(len(r[0]) for r in rows)
    print("\nsummary")
    for figure, value, note in rows:
        print(f"  {figure:<{width}}  {value!s:>12}  {note}")


if __name__ == "__main__":
    main()
