"""Study efficiency: training FLOPs / (peak x wall), and the machine's time split into where it went."""

from __future__ import annotations

import dataclasses
import json
import os
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from scaling_analysis.steps.efficiency import PARTS, study_efficiency
from synthetic_study import synthetic_record

from datascale.records import RunRecord, write_record

T0 = datetime.fromisoformat("2026-12-06T12:00:00+00:00").timestamp()


def timed_record(u: int, start: float, **times: float) -> RunRecord:
    """A finished 1-thread CPU run that started (its Hydra job) at ``start`` with the given time split."""
    base = synthetic_record("s", u, 0, (5.0, 5.0), True, ["a"], np.zeros(1), {}, 900_000)
    wall = times["startup_s"] + times["step_time_s"] + times["eval_time_s"] + times["teardown_s"] + 1.0
    written = datetime.fromtimestamp(start + times["job_setup_s"] + wall).astimezone().isoformat()
    return dataclasses.replace(
        base,
        wall_time_s=wall,
        created_at=written,
        threads=1,
        cores=2,
        tokens_seen=100_000,
        model_flops_per_token=6e6,
        peak_flops_per_s=90e9,  # the 1-thread peak: 180 GFLOP/s for the 2-core machine
        eval_flops=1e10,
        **times,
    )


TIMES = {"job_setup_s": 0.5, "startup_s": 2.0, "step_time_s": 60.0, "eval_time_s": 5.0, "teardown_s": 0.5}


def write_run(root: Path, record: RunRecord, exit_s: float) -> Path:
    path = write_record(root / "runs" / record.run_id, record)
    written = datetime.fromisoformat(record.created_at).timestamp()
    os.utime(path, (written, written))
    status = {"attempts": [{"outcome": "done", "exit_after_record_s": exit_s}]}
    (path.parent / "status.json").write_text(json.dumps(status))
    return path


def test_two_packed_runs_efficiency_and_breakdown(tmp_path: Path) -> None:
    """Two 1-thread runs side by side on 2 cores, then one alone: the idle core shows up as idle."""
    first = timed_record(4000, T0, **TIMES, checkpoint_time_s=0.0)
    second = timed_record(8000, T0, **TIMES, checkpoint_time_s=0.0)
    files = [(write_run(tmp_path, r, 0.25), r) for r in (first, second)]
    out = study_efficiency(files)
    wall = TIMES["job_setup_s"] + first.wall_time_s + 0.25
    assert out["wall_s"] == pytest.approx(wall, abs=1e-3)
    assert (out["slots"], out["unit"], out["peak_flops_per_s"]) == (2.0, "cores", 180e9)
    assert out["training_flops"] == 2 * 100_000 * 6e6
    assert out["efficiency"] == pytest.approx(1.2e12 / (180e9 * wall), rel=1e-4)
    assert out["step_mfu"] == pytest.approx(1.2e12 / (90e9 * 120.0))
    assert sum(out["shares"].values()) == pytest.approx(1.0)
    assert out["slot_seconds"]["training_steps"] == pytest.approx(120.0)
    assert out["slot_seconds"]["start_up"] == pytest.approx(5.0)
    assert out["slot_seconds"]["teardown"] == pytest.approx(2 * (0.5 + 0.25))
    assert out["slot_seconds"]["idle"] == pytest.approx(0.0, abs=1e-2)
    assert out["per_run"] == {
        "startup_s": 2.0,
        "startup_cpu_s": None,  # not in these records
        "teardown_s": 0.5,
        "exit_after_record_s": 0.25,
    }
    # the same two runs one after the other: half the machine idle
    later = dataclasses.replace(timed_record(8000, T0 + wall, **TIMES, checkpoint_time_s=0.0), run_id="later")
    files = [(write_run(tmp_path / "seq", r, 0.25), r) for r in (first, later)]
    sequential = study_efficiency(files)
    assert sequential["wall_s"] == pytest.approx(2 * wall, abs=1e-3)
    assert sequential["shares"]["idle"] == pytest.approx(0.5, abs=1e-3)
    assert sequential["efficiency"] == pytest.approx(out["efficiency"] / 2, rel=1e-3)
    assert set(out["shares"]) == set(PARTS)


def test_records_without_a_time_split_are_skipped_with_the_reason(tmp_path: Path) -> None:
    old = synthetic_record("s", 4000, 0, (5.0, 5.0), True, ["a"], np.zeros(1), {}, 900_000)
    out = study_efficiency([(None, old)])
    assert "skipped" in out and "startup_s" in out["skipped"]


def test_a_peak_below_what_the_steps_reached_is_flagged(tmp_path: Path) -> None:
    """MFU above 1 cannot be: the peak was measured under load. The step says so (and the report shows it)
    instead of printing a share of the peak above 100%."""
    honest = timed_record(4000, T0, **TIMES, checkpoint_time_s=0.0)
    assert study_efficiency([(write_run(tmp_path / "a", honest, 0.0), honest)])["peak_warning"] is None
    # 1.2e12 training FLOPs over 120 core-seconds of steps = 10 GFLOP/s per core against a 5 GFLOP/s peak
    low = [
        dataclasses.replace(timed_record(u, T0, **TIMES, checkpoint_time_s=0.0), peak_flops_per_s=5e9, mfu=m)
        for u, m in ((4000, 1.03), (8000, 0.9))
    ]
    out = study_efficiency([(write_run(tmp_path / "b", r, 0.0), r) for r in low])
    assert out["step_mfu"] > 1.0
    assert "measured under load" in out["peak_warning"] and low[0].run_id in out["peak_warning"]
    assert low[1].run_id not in out["peak_warning"]
    from scaling_analysis.steps.efficiency import efficiency_section

    assert "**Peak warning**" in efficiency_section(out)


def test_a_record_with_adaptive_threads_gives_its_peak_per_mean_thread() -> None:
    """A run whose threads changed records the peak of the cores it held on average; older records (and
    fixed-thread runs) the peak of their starting threads."""
    from scaling_analysis.steps.efficiency import per_core_peak

    base = timed_record(4000, T0, **TIMES, checkpoint_time_s=0.0)
    scaled = dataclasses.replace(
        base, threads_mean=1.5, peak_flops_per_s=135e9, peak_flops_source="... scaled to the run's 1.50 mean"
    )
    older = dataclasses.replace(base, threads_mean=1.5, peak_flops_per_s=90e9, peak_flops_source="measured")
    assert per_core_peak(scaled) == pytest.approx(90e9) == per_core_peak(older) == per_core_peak(base)
