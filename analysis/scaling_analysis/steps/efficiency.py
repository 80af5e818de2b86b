"""How much of the machine a study turned into training, training FLOPs / (peak x wall); where the rest went.

Why: a study on a small machine is mostly overhead unless runs are packed and per-run costs are small; this
says, for every analysed study, what fraction of the machine's matmul peak over the study's wall time became
training FLOPs, and splits the machine's time (core-seconds on a CPU, device-seconds on GPUs) into training
steps, evaluation, checkpoint writes, start-up (the Hydra job's set-up and the worker's start to its first
step), teardown (last step to the record, and the worker's exit after it), the rest of the training loop
(data, logging, callbacks) and idle cores. Read from the records (``startup_s``, ``step_time_s``,
``eval_time_s``, ... of ``datascale.records``) and each run's ``status.json``; each run holds its mean
threads x world size cores for its whole life. Records from before these fields are skipped with the reason.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from datascale.records import RunRecord

from ..render.text import markdown_table, pct, short
from .base import Step, StepResult, StudyContext

#: the fit.json field this step fills and what it holds (rendered into the docs by `make docs`)
FIELDS = {
    "efficiency": "how much of the machine the study turned into training (`scaling_analysis.steps."
    "efficiency`): {wall_s (first job start to last worker exit), slots and unit (cores, or GPUs), "
    "peak_flops_per_s (the machine: per-core matmul peak x usable cores, or the devices' peak), "
    "training_flops, efficiency = training_flops / (peak x wall), step_mfu (training FLOPs over the "
    "peak of the slot-seconds spent in training steps), shares and slot_seconds of training_steps, "
    "evaluation, checkpoints, start_up, teardown, loop_other, idle (fractions of slots x wall), "
    "eval_and_checkpoint_share (of the wall), eval_flops, per_run {startup_s, startup_cpu_s, teardown_s, "
    "exit_after_record_s: medians}, runs, peak_warning (None, or why the peak is too low: training "
    "steps above it, MFU > 1)}; or {skipped}",
}
PARTS = ("training_steps", "evaluation", "checkpoints", "start_up", "teardown", "loop_other", "idle")
#: the run directory's attempts file (docs/design.md: run directories)
STATUS_FILE = "status.json"


def _timestamp(path: Path | None, record: RunRecord) -> float:
    """When the record was written: its file's modification time, else its ``created_at`` (seconds)."""
    if path is not None and path.exists():
        return path.stat().st_mtime
    return datetime.fromisoformat(record.created_at).timestamp()


def _exit_after_record(path: Path | None) -> float:
    """Seconds the worker took to exit after its record (``status.json``, last attempt); 0 if unknown."""
    try:
        attempts = json.loads((Path(path).parent / STATUS_FILE).read_text())["attempts"]  # type: ignore[arg-type]
        return float(attempts[-1].get("exit_after_record_s") or 0.0)
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        return 0.0


def run_costs(path: Path | None, r: RunRecord) -> dict[str, float]:
    """One run's slots and its seconds per part (each part held ``slots`` for its duration)."""
    threads = r.threads_mean or r.threads or 1
    slots = float(threads * r.world_size) if r.accelerator == "cpu" else float(r.world_size)
    exit_s = _exit_after_record(path)
    parts = {
        "training_steps": r.step_time_s or 0.0,
        "evaluation": r.eval_time_s or 0.0,
        "checkpoints": r.checkpoint_time_s or 0.0,
        "start_up": (r.job_setup_s or 0.0) + (r.startup_s or 0.0),
        "teardown": (r.teardown_s or 0.0) + exit_s,
    }
    life = (r.job_setup_s or 0.0) + r.wall_time_s + exit_s
    parts["loop_other"] = max(0.0, life - sum(parts.values()))
    end = _timestamp(path, r) + exit_s
    return {"slots": slots, "start": end - life, "end": end, "exit": exit_s, **parts}


def per_core_peak(r: RunRecord) -> float:
    """A CPU record's peak per core: its peak is for its starting threads, or (adaptive threads, records
    since the peak was scaled: ``peak_flops_source`` says so) for the threads it held on average."""
    scaled = "scaled to the run's" in (r.peak_flops_source or "")
    threads = (r.threads_mean if scaled else r.threads) or 1
    return (r.peak_flops_per_s or 0.0) / (threads * r.world_size)


def machine_peak(records: Sequence[RunRecord]) -> tuple[float, float, str]:
    """(slots, peak FLOP/s of the machine, unit): per-core peak x usable cores, or the GPUs' peak."""
    if all(r.accelerator == "cpu" for r in records):
        per_core = max(per_core_peak(r) for r in records)
        cores = max(r.cores or 1 for r in records)
        return float(cores), per_core * cores, "cores"
    devices = max(r.world_size for r in records)
    return float(devices), max(r.peak_flops_per_s or 0.0 for r in records), "GPUs"


def study_efficiency(files: Sequence[tuple[Path | None, RunRecord]]) -> dict[str, Any]:
    """The ``efficiency`` field from finished runs' (record path, record) pairs."""
    done = [(p, r) for p, r in files if r.status == "done"]
    measured = [(p, r) for p, r in done if r.step_time_s is not None and r.peak_flops_per_s]
    if not measured:
        return {"skipped": "no finished run records its time split (records from before startup_s etc.)"}
    records = [r for _, r in measured]
    costs = [run_costs(p, r) for p, r in measured]
    slots, peak, unit = machine_peak(records)
    wall = max(c["end"] for c in costs) - min(c["start"] for c in costs)
    seconds = {k: sum(c[k] * c["slots"] for c in costs) for k in PARTS[:-1]}
    seconds["idle"] = slots * wall - sum(seconds.values())
    flops = sum(r.tokens_seen * (r.model_flops_per_token or 0.0) for r in records)
    per_slot = peak / slots

    def median(key: str) -> float | None:
        if key == "exit":
            values = sorted(c[key] for c in costs)
        else:
            values = sorted(v for r in records if (v := getattr(r, key)) is not None)
        return values[len(values) // 2] if values else None

    step_mfu = flops / (per_slot * seconds["training_steps"]) if seconds["training_steps"] else math.nan
    return {
        "wall_s": wall,
        "slots": slots,
        "unit": unit,
        "peak_flops_per_s": peak,
        "training_flops": flops,
        "efficiency": flops / (peak * wall),
        "step_mfu": step_mfu,
        "shares": {k: v / (slots * wall) for k, v in seconds.items()},
        "slot_seconds": seconds,
        "eval_and_checkpoint_share": (seconds["evaluation"] + seconds["checkpoints"]) / (slots * wall),
        "eval_flops": sum(r.eval_flops or 0.0 for r in records),
        "per_run": {
            "startup_s": median("startup_s"),
            "startup_cpu_s": median("startup_cpu_s"),
            "teardown_s": median("teardown_s"),
            "exit_after_record_s": median("exit"),
        },
        "runs": len(records),
        "peak_warning": peak_warning(step_mfu, records),
    }


def peak_warning(step_mfu: float, records: Sequence[RunRecord]) -> str | None:
    """Why the matmul peak cannot be right (training steps faster than it: MFU > 1), or None. A CPU peak is
    measured once per machine and thread count; measured beside other work it comes out low."""
    over = [r.run_id for r in records if (r.mfu or 0.0) > 1.0]
    if not (step_mfu > 1.0 or over):
        return None
    runs = f"; runs with MFU > 1: {', '.join(over)}" if over else ""
    return (
        f"the matmul peak is below what the training steps reached (step MFU {step_mfu:.0%}{runs}): it was "
        "measured under load; `make bench` measures it again (the cache keeps the higher value), and runs "
        "whose steps beat it re-measure it"
    )


def step_efficiency(ctx: StudyContext) -> StepResult:
    """fit.json ``efficiency`` (a study directory: needs the records, not a run table)."""
    if ctx.scan is None or not ctx.scan.files:
        return StepResult.skip("efficiency", FIELDS, "needs the study's records (a study directory)")
    fields = study_efficiency(ctx.protocol_files())
    return StepResult("efficiency", {"efficiency": fields}, skipped=fields.get("skipped"))


def efficiency_section(fields: Mapping[str, Any]) -> str:
    """The report's efficiency paragraph and its breakdown table."""
    shares, seconds, unit = fields["shares"], fields["slot_seconds"], fields["unit"]
    rows = [[name.replace("_", " "), f"{seconds[name]:,.0f}", pct(shares[name])] for name in PARTS]
    per_run = fields["per_run"]
    startup, teardown = short(per_run["startup_s"], 3), short(per_run["teardown_s"], 3)
    cpu = short(per_run.get("startup_cpu_s"), 3)
    return "\n".join([
        "## Study efficiency",
        "",
        f"{fields['runs']} runs in {fields['wall_s']:,.0f} s on {fields['slots']:.0f} {unit} (peak "
        f"{fields['peak_flops_per_s'] / 1e9:,.0f} GFLOP/s): training FLOPs / (peak x wall) = "
        f"**{pct(fields['efficiency'])}**; inside training steps the model ran at "
        f"{pct(fields['step_mfu'])} of the peak. Evaluation and checkpoints took "
        f"{pct(fields['eval_and_checkpoint_share'])} of the machine. Per run (median): start-up {startup} s, "
        f"teardown {teardown} s, exit after the record {short(per_run['exit_after_record_s'], 3)} s; "
        f"start-up used {cpu} CPU seconds (the rest of it waited for a shared core).",
        "",
        *([f"**Peak warning**: {fields['peak_warning']}.", ""] if fields.get("peak_warning") else []),
        markdown_table(["where the machine's time went", f"{unit[:-1]}-seconds", "share"], rows),
    ])  # fmt: skip


def sections(fit_json: Mapping[str, Any]) -> list[str]:
    fields = fit_json.get("efficiency") or {}
    return [efficiency_section(fields)] if "shares" in fields else []


def console(fit_json: Mapping[str, Any]) -> list[str]:
    fields = fit_json.get("efficiency") or {}
    if "shares" not in fields:
        return []
    shares = ", ".join(f"{k.replace('_', ' ')} {pct(v)}" for k, v in fields["shares"].items())
    return [
        f"study efficiency {pct(fields['efficiency'])} of the peak over {fields['wall_s']:,.0f} s ({shares})"
    ]


STEP = Step("efficiency", FIELDS, run=step_efficiency, sections=sections, console=console)
