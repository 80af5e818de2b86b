"""Run records: round trip, atomic write, and a finished record is never overwritten."""

from __future__ import annotations

import json
from dataclasses import fields

import pytest

from datascale.records import (
    RecordExistsError,
    RunRecord,
    field_docs,
    find_records,
    is_done,
    previous_attempts,
    read_record,
    scan_records,
    write_record,
)


def make_record(run_id: str = "abc123def456", status: str = "done", **overrides) -> RunRecord:
    values = dict(
        run_id=run_id,
        study="s",
        status=status,
        axes={"unique_tokens": 8000, "seed": 0},
        seed=0,
        created_at="2026-11-22T00:00:00Z",
        code_version="deadbeef",
        config={"seed": 0},
        corpus_hash="c",
        tokenizer_hash="t",
        subset_hash="h",
        train_domains=["code"],
        eval_domains=["code"],
        params_total=100,
        params_non_embedding=60,
        unique_tokens=8000,
        tokens_seen=80000,
        epochs=10.0,
        steps=40,
        planned_steps=100,
        best_step=30,
        tokens_at_best=60000,
        epochs_at_best=7.5,
        converged=True,
        stop_reason="early_stopping",
        best_val_loss=4.5,
        final_val_loss=4.6,
        test_loss=4.55,
        val_loss_best={"code": 4.5},
        val_loss_final={"code": 4.6},
        test_loss_by_domain={"code": 4.55},
        val_bpb_best={"code": 1.9},
        test_bpb={"code": 1.92},
        test_bpb_mean=1.92,
        wall_time_s=12.0,
        train_time_s=10.0,
        tokens_per_s=8000.0,
        world_size=1,
        strategy="auto",
        accelerator="cpu",
        precision="32-true",
    )
    values.update(overrides)
    return RunRecord(**values)


def test_round_trip_keeps_every_field(tmp_path):
    record = make_record()
    path = write_record(tmp_path, record)
    assert read_record(path) == record
    assert json.loads(path.read_text())["test_loss"] == 4.55


def test_done_record_is_never_overwritten(tmp_path):
    write_record(tmp_path, make_record(test_loss=4.55))
    with pytest.raises(RecordExistsError):
        write_record(tmp_path, make_record(test_loss=1.0))
    assert read_record(tmp_path / "record.json").test_loss == 4.55


def test_failed_record_may_be_replaced_by_a_finished_one(tmp_path):
    write_record(tmp_path, make_record(status="failed", error="boom"))
    assert not is_done(tmp_path)
    write_record(tmp_path, make_record())
    assert is_done(tmp_path)


def test_no_temp_files_left_behind(tmp_path):
    write_record(tmp_path, make_record())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["record.json"]


def test_bad_status_is_rejected():
    with pytest.raises(ValueError, match="status='running'"):
        make_record(status="running")


def test_find_records_filters_by_status(tmp_path):
    write_record(tmp_path / "runs" / "a", make_record("a"))
    write_record(tmp_path / "runs" / "b", make_record("b", status="failed"))
    assert [r.run_id for r in find_records(tmp_path)] == ["a"]
    assert [r.run_id for r in find_records(tmp_path, status=None)] == ["a", "b"]


def test_every_field_is_documented():
    docs = field_docs()
    assert set(docs) == {f.name for f in fields(RunRecord)}
    assert all(text.strip() for text in docs.values())


def test_a_retry_keeps_every_failed_attempt(tmp_path) -> None:
    write_record(tmp_path, make_record(status="failed", error="OOM at step 3"))
    write_record(tmp_path, make_record(status="failed", error="node lost"))
    write_record(tmp_path, make_record(status="done"))
    assert read_record(tmp_path / "record.json").status == "done"
    assert [r.error for r in previous_attempts(tmp_path)] == ["OOM at step 3", "node lost"]


@pytest.mark.parametrize("content", ['{"run_id": "x", "stat', "not json", '{"unexpected": 1}'])
def test_a_corrupt_record_is_reported_excluded_and_kept(tmp_path, caplog, content: str) -> None:
    good, bad = tmp_path / "runs" / "good", tmp_path / "runs" / "bad"
    write_record(good, make_record(run_id="good"))
    bad.mkdir(parents=True)
    (bad / "record.json").write_text(content)
    records, corrupt = scan_records(tmp_path)
    assert [r.run_id for r in records] == ["good"]
    assert corrupt[0][0] == bad / "record.json" and "unreadable record" in corrupt[0][1]
    with caplog.at_level("WARNING"):
        assert [r.run_id for r in find_records(tmp_path)] == ["good"]
    assert str(bad / "record.json") in caplog.text
    assert not is_done(bad)  # an unreadable record is not done: the run trains again ...
    write_record(bad, make_record(run_id="bad"))
    assert (bad / "record.corrupt-1.json").read_text() == content  # ... and the old file is kept
