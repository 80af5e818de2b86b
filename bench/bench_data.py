"""(i) The data stage at corpus scale: ``python -m datascale.data.prepare`` on 10 MB, 100 MB and 1 GB of real
text (:mod:`bench.data_corpus`: installed packages' code and docs as JSON lines, two domains), from an empty
cache each time: wall time, peak memory (the summed RSS of the process tree and its anonymous part, sampled
every 0.1 s) and the
pool's tokenisation throughput per core against the tokenizer's own ``encode_batch`` on one thread on the
same text (goal: within 2x, i.e. ratio >= 0.5), with seconds per MB to show the wall time is linear.

``BENCH_DATA_SIZES`` (bytes, comma-separated) picks other sizes; ``BENCH_DATA_DIR`` keeps the corpora (built
once, ~1 min for 1 GB) and caches somewhere else than a temporary directory. ``python -m bench.bench_data
--encode TOKENIZER CORPUS BYTES`` is the one-thread reference (its own process: TOKENIZERS_PARALLELISM=false
set before the tokenizer loads).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

from bench.data_corpus import write_corpus

SIZES = (10_000_000, 100_000_000, 1_000_000_000)
UNIQUE_TOKENS = 1_000_000
REFERENCE_BYTES = 20_000_000  # text the one-thread encode_batch reference tokenises
REPO = Path(__file__).resolve().parents[1]


def label(n_bytes: int) -> str:
    return f"{n_bytes / 1e9:g} GB" if n_bytes >= 1e9 else f"{n_bytes / 1e6:g} MB"


def sizes() -> list[int]:
    raw = os.environ.get("BENCH_DATA_SIZES")
    return [int(float(s)) for s in raw.split(",")] if raw else list(SIZES)


def tree_memory(proc: psutil.Process) -> tuple[int, int]:
    """(resident, anonymous resident) bytes of a process and all its descendants. Resident memory counts the
    pages of memory-mapped files read (Arrow, token arrays: page cache the kernel reclaims at will); the
    anonymous part (``RssAnon``) is the memory the processes themselves hold."""
    rss = anon = 0
    for p in [proc, *proc.children(recursive=True)]:
        with contextlib.suppress(psutil.Error, OSError):  # gone since the listing
            rss += p.memory_info().rss
            for line in Path(f"/proc/{p.pid}/status").read_text().splitlines():
                if line.startswith("RssAnon:"):  # (a zombie has none)
                    anon += int(line.split()[1]) * 1024
    return rss, anon


def timed(cmd: list[str], env: dict[str, str]) -> dict[str, Any]:
    """Run ``cmd``; its wall time, peak summed RSS of its process tree and exit status."""
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak = peak_anon = 0
    ps = psutil.Process(proc.pid)
    while proc.poll() is None:
        rss, anon = tree_memory(ps)
        peak, peak_anon = max(peak, rss), max(peak_anon, anon)
        time.sleep(0.1)
    output = proc.stdout.read() if proc.stdout else ""
    return {
        "wall_s": round(time.perf_counter() - started, 2),
        "peak_rss_mib": round(peak / 2**20, 1),
        "peak_anon_mib": round(peak_anon / 2**20, 1),
        "returncode": proc.returncode,
        "tail": output.strip().splitlines()[-3:],
    }


def prepare(corpus: Path, cache: Path) -> dict[str, Any]:
    """One cold ``prepare`` of ``corpus`` (the cache emptied first)."""
    shutil.rmtree(cache, ignore_errors=True)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), env.get("PYTHONPATH", "")])
    cmd = [sys.executable, "-m", "datascale.data.prepare", "--no-progress", "--unique-tokens",
           str(UNIQUE_TOKENS), "source=local_files", f"source.paths=[{corpus}]", "source.domain_field=domain",
           f"paths.cache_dir={cache}"]  # fmt: skip
    return timed(cmd, env)


def pool_meta(cache: Path) -> dict[str, Any]:
    for meta in (cache / "tokens").glob("*/meta.json"):
        data = json.loads(meta.read_text())
        if data.get("name") == "pool":
            return data
    return {}


def encode_reference(tokenizer: Path, corpus: Path, n_bytes: int) -> dict[str, float]:
    """One thread: ``encode_batch`` (and ``encode_batch_fast``) MB/s on the first ``n_bytes`` of texts, in
    ~1 MB batches as the token cache feeds it."""
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer))
    batches, batch, size, total = [], [], 0, 0
    with open(corpus, encoding="utf-8") as fh:
        for line in fh:
            text = json.loads(line)["text"]
            batch.append(text)
            size += len(text.encode("utf-8"))
            if size >= 1 << 20:
                batches.append(batch)
                total, batch, size = total + size, [], 0
            if total >= n_bytes:
                break
    out = {"bytes": total}
    for name in ("encode_batch", "encode_batch_fast"):
        started = time.perf_counter()
        for b in batches:
            getattr(tok, name)(b, add_special_tokens=False)
        out[f"{name}_mb_per_s"] = round(total / 1e6 / (time.perf_counter() - started), 2)
    return out


def one_size(n_bytes: int, work: Path) -> dict[str, Any]:
    corpus = work / f"corpus-{n_bytes}.jsonl"
    if not corpus.exists():
        write_corpus(corpus, n_bytes)
    cache = work / f"cache-{n_bytes}"
    row = {"corpus_bytes": corpus.stat().st_size, **prepare(corpus, cache)}
    meta = pool_meta(cache)
    if meta:
        per_core = meta["n_bytes"] / 1e6 / meta["build_seconds"] / meta["workers"]
        tokenizer = next((cache / "tokenizers").glob("*/tokenizer.json"))
        cmd = [sys.executable, "-m", "bench.bench_data", "--encode", str(tokenizer), str(corpus)]
        cmd.append(str(REFERENCE_BYTES))
        ref = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, check=True)
        reference = json.loads(ref.stdout)
        row |= {
            "pool_tokens": meta["n_tokens"],
            "pool_bytes": meta["n_bytes"],
            "tokenise_s": meta["build_seconds"],
            "tokenise_workers": meta["workers"],
            "tokenise_mb_per_s_per_core": round(per_core, 2),
            "reference": reference,
            "per_core_over_encode_batch": round(per_core / reference["encode_batch_mb_per_s"], 2),
        }
    row["s_per_mb"] = round(row["wall_s"] / (n_bytes / 1e6), 3)
    shutil.rmtree(cache, ignore_errors=True)
    return row


def run() -> dict[str, Any]:
    keep = os.environ.get("BENCH_DATA_DIR")
    work = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="bench-data-"))
    work.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()[0]
    results: dict[str, Any] = {"cores": len(os.sched_getaffinity(0)), "unique_tokens": UNIQUE_TOKENS}
    try:
        results["sizes"] = {label(n): one_size(n, work) for n in sizes()}
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)
    results["load_avg_1min"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    return results


def table(results: dict[str, Any]) -> str:
    """The Markdown table of one run (for docs/benchmarks.md)."""
    lines = [
        "| corpus | wall s | s/MB | peak RSS MiB | anonymous MiB | tokenise MB/s/core | / encode_batch |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, row in results.get("sizes", {}).items():
        per_core, ratio = row.get("tokenise_mb_per_s_per_core"), row.get("per_core_over_encode_batch")
        lines.append(
            f"| {name} | {row['wall_s']} | {row['s_per_mb']} | {row['peak_rss_mib']} | "
            f"{row['peak_anon_mib']} | {per_core} | {ratio} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--encode", nargs=3, metavar=("TOKENIZER", "CORPUS", "BYTES"))
    args = parser.parse_args()
    if args.encode:
        print(json.dumps(encode_reference(Path(args.encode[0]), Path(args.encode[1]), int(args.encode[2]))))
    else:
        out = run()
        print(json.dumps(out, indent=2))
        print(table(out))
