"""Runs not fitted (failed runs, corrupt or half-written records): warned about, listed with why in fit.json
and report.md, never fitted; and the study directory is read once."""

from __future__ import annotations

import dataclasses
import json
import logging
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scaling_analysis import study
from scaling_analysis.steps.conditions.pool_quality import pool_transform_fields
from scaling_analysis.tables import excluded
from synthetic_study import synthetic_record, write_synthetic_study

import datascale.records as records
from datascale.records import read_record, write_record

SIZES = (250_000, 500_000, 1_000_000, 2_000_000, 4_000_000)
FAILED_ID = "failedrun001"
ERROR = "worker died: CUDA out of memory at step 120"
CORRUPT = "runs/halfwritten01/record.json"


def _add_failed_run(root: Path, template: Path) -> None:
    """A failed run retried once: the first attempt is kept as record.attempt-1.json by write_record."""
    base = read_record(template)
    first = dataclasses.replace(base, run_id=FAILED_ID, status="failed", error="node lost", test_loss=50.0)
    write_record(root / "runs" / FAILED_ID, first)
    second = dataclasses.replace(first, error=f"{ERROR}\nTraceback (most recent call last): ...")
    write_record(root / "runs" / FAILED_ID, second)


def _add_truncated_record(root: Path, template: Path) -> None:
    """A record.json cut off half-way (a write interrupted outside write_record's atomic replace)."""
    text = template.read_text()
    path = root / CORRUPT
    path.parent.mkdir(parents=True)
    path.write_text(text[: len(text) // 2])


def _write_study(root: Path) -> list[str]:
    """Five finished runs, one failed run with an earlier attempt, one truncated record; the good run ids."""
    paths = write_synthetic_study(root, sizes=SIZES, seeds=(0,), noise=0.005, rng_seed=1)
    _add_failed_run(root, paths[0])
    _add_truncated_record(root, paths[1])
    return [read_record(p).run_id for p in paths]


@pytest.fixture(scope="module")
def analyzed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The study analysed once, counting how often each record file is read."""
    root = tmp_path_factory.mktemp("excluded") / "study"
    good = _write_study(root)
    reads: Counter[str] = Counter()
    real_read = records.read_record

    def counting_read(path: Path) -> records.RunRecord:
        reads[str(Path(path).relative_to(root))] += 1
        return real_read(path)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(records, "read_record", counting_read)
        result = study.analyze_study(root, n_resamples=20, n_jobs=1, candidates=())
    return {"root": root, "good": good, "result": result, "reads": reads}


def _by_kind(fit_json: dict[str, Any]) -> dict[str, dict[str, Any]]:
    entries = fit_json["excluded_runs"]
    assert sorted(e["kind"] for e in entries) == ["failed", "unreadable"]
    return {e["kind"]: e for e in entries}


def test_the_fit_uses_only_the_good_runs(analyzed: dict[str, Any]) -> None:
    result = analyzed["result"]
    assert sorted(result.runs["run_id"]) == sorted(analyzed["good"])
    assert result.fit_json["n_points"] == len(SIZES) == result.fit.n_points
    assert result.runs["loss"].max() < 50.0  # the failed run's loss never reached the table


def test_fit_json_lists_the_failed_run_and_the_corrupt_record(analyzed: dict[str, Any]) -> None:
    fj = json.loads((analyzed["root"] / "fit.json").read_text())
    by_kind = _by_kind(fj)
    assert by_kind["failed"] == {
        "kind": "failed",
        "path": f"runs/{FAILED_ID}/record.json",
        "run_id": FAILED_ID,
        "axes": {"unique_tokens": SIZES[0], "seed": 0},
        "reason": ERROR,  # one line: the traceback after it is not carried
        "previous_attempts": 1,
    }
    bad = by_kind["unreadable"]
    assert bad["path"] == CORRUPT and bad["run_id"] is None and bad["axes"] is None
    assert bad["reason"].startswith("unreadable record (JSONDecodeError:")
    assert str(analyzed["root"]) not in bad["reason"]  # the path is given once, relative to the study
    summary = fj["summary"]
    assert (summary["n_failed"], summary["failed_run_ids"], summary["n_unreadable"]) == (1, [FAILED_ID], 1)


def test_the_report_names_every_excluded_record_and_why(analyzed: dict[str, Any]) -> None:
    md = (analyzed["root"] / "report.md").read_text()
    section = md.split("## Excluded runs\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    assert len(rows) == 2
    failed_row = next(r for r in rows if FAILED_ID in r)
    assert failed_row == (
        f"| `runs/{FAILED_ID}/record.json` | failed | {FAILED_ID} | seed=0, unique_tokens={SIZES[0]} | "
        f"{ERROR} | 1 |"
    )
    corrupt_row = next(r for r in rows if CORRUPT in r)
    assert "| unreadable | — | — | unreadable record (JSONDecodeError:" in corrupt_row
    assert "Traceback" not in md
    assert f"not fitted: 1 failed ({FAILED_ID}), 1 unreadable record file(s)" in md


def test_each_record_file_is_read_once(analyzed: dict[str, Any]) -> None:
    reads = analyzed["reads"]
    expected = {f"runs/{rid}/record.json" for rid in [*analyzed["good"], FAILED_ID]} | {CORRUPT}
    assert expected | {f"runs/{FAILED_ID}/record.attempt-1.json"} == set(reads)
    assert {path: n for path, n in reads.items() if n != 1} == {}


def test_the_scan_warns_about_each_excluded_record(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    _write_study(tmp_path)
    with caplog.at_level(logging.WARNING, logger="scaling_analysis.tables.excluded"):
        scan = excluded.scan_study(tmp_path)
    warned = [r.getMessage() for r in caplog.records if r.name == "scaling_analysis.tables.excluded"]
    assert len(warned) == 2 and len(scan.records) == len(SIZES) + 1
    assert any(f"failed run {FAILED_ID}" in w and ERROR in w and "1 earlier attempt" in w for w in warned)
    assert any(CORRUPT in w and "JSONDecodeError" in w for w in warned)


def test_pool_transforms_skip_an_unreadable_record(tmp_path: Path) -> None:
    base = synthetic_record("noise", 1000, 0, (5.0, 5.0), True, ("web",), np.zeros(1), {}, 1000)
    summary = {"group": "filter", "name": "c4", "input_docs": 10, "output_docs": 8, "removed": {}}
    write_record(tmp_path / "runs" / "r1", dataclasses.replace(base, run_id="r1", pool_transforms=[summary]))
    _add_truncated_record(tmp_path, tmp_path / "runs" / "r1" / "record.json")
    out = pool_transform_fields(tmp_path, {"r1": "filter=c4"})
    assert out["conditions"]["filter=c4"]["run_id"] == "r1"
