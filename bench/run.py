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

BENCHMARKS = ("bench.bench_fit", "bench.bench_train")
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
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
