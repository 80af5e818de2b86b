"""One protocol per fit: a study folder holding runs of an older protocol (a changed default schedule, say)
fits the newest record's protocol only, and says what it left out and why."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from scaling_analysis.tables.runs import load_records
from synthetic_study import write_synthetic_study

from datascale.records import read_record


def _as_old_protocol(path: Path) -> None:
    """Rewrite a record as if trained earlier under another schedule (its own run id)."""
    record = read_record(path)
    config = {**record.config, "schedule": {"_target_": "WarmupCosine"}}
    old = dataclasses.replace(
        record, run_id="old" + record.run_id[3:], config=config, created_at="2026-01-01T00:00:00+00:00"
    )
    out = path.parent.parent / old.run_id
    out.mkdir()
    (out / "record.json").write_text(json.dumps(old.to_dict()))


def test_runs_of_an_older_protocol_are_kept_on_disk_and_left_out_of_the_fit(tmp_path: Path) -> None:
    paths = write_synthetic_study(tmp_path, sizes=(250_000, 500_000, 1_000_000), seeds=(0,))
    for path in paths[:2]:
        _as_old_protocol(path)
    df = load_records(tmp_path)
    assert len(df) == 3 and df["protocol"].nunique() == 1 and not df["run_id"].str.startswith("old").any()
    step = next(s for s in df.attrs["preprocessing"]["steps"] if s["rule"] == "other_protocol")
    assert step["n_dropped"] == 2 and step["differs_in"] == ["schedule"]
    assert sorted(step["run_ids"]) == sorted("old" + read_record(p).run_id[3:] for p in paths[:2])
    assert len(list(tmp_path.glob("runs/*/record.json"))) == 5  # nothing on disk touched


def test_one_protocol_is_not_a_preprocessing_step(tmp_path: Path) -> None:
    write_synthetic_study(tmp_path, sizes=(250_000, 500_000), seeds=(0, 1))
    df = load_records(tmp_path)
    rules = [s["rule"] for s in df.attrs["preprocessing"]["steps"]]
    assert len(df) == 4 and "other_protocol" not in rules
