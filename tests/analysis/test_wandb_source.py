"""W&B runs -> the tidy run table: same columns and values as ``load_records`` for the same runs.

No W&B server is reachable in tests, so ``load_wandb_runs`` gets ``api=FakeApi(...)``: a stand-in for
``wandb.Api()`` exposing only what the loader uses (``.runs(path, filters)`` returning objects with
``.id .group .state .tags .config .summary``); the summaries are the public API's real ``HTTPSummary``
filled offline. Querying a W&B server (``wandb.Api().runs``) is the one part not exercised here.
The fake runs are made from real ``RunRecord`` objects the way the tracker logs them (summary = record fields
plus the design.md metric names; tags ``name=value``; config = resolved config): the layout this loader
expects from ``datascale.training.tracking``, pinned down here.
"""

from __future__ import annotations

import ast
import math
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pandas as pd
import pytest
from scaling_analysis.tables.runs import load_records, record_row
from scaling_analysis.tables.wandb_runs import (
    load_wandb_runs,
    record_from_mapping,
    record_like_to_row,
    wandb_axes,
    wandb_run_to_record_like,
)

from datascale.records import RunRecord, write_record

REPO_ROOT = Path(__file__).resolve().parents[2]
DOMAINS = ("code", "literature")


def make_record(unique_tokens: int, seed: int, *, study: str = "data_size", **overrides: Any) -> RunRecord:
    test = 2.0 + 400.0 * unique_tokens**-0.4 + 0.01 * seed
    per_domain = {d: test + off for d, off in zip(DOMAINS, (-0.2, 0.2), strict=True)}
    tokens_seen = 20 * unique_tokens + 2048 * seed
    values: dict[str, Any] = dict(
        run_id=f"r{unique_tokens}s{seed}",
        study=study,
        status="done",
        axes={"unique_tokens": unique_tokens, "seed": seed},
        seed=seed,
        created_at="2026-11-22T00:00:00Z",
        code_version="abc1234",
        config={
            "seed": seed,
            "study": {"name": study, "axes": ["subset.unique_tokens", "seed"]},
            "subset": {"unique_tokens": unique_tokens},
        },
        corpus_hash="corpus",
        tokenizer_hash="tok",
        subset_hash=f"subset{unique_tokens}",
        train_domains=list(DOMAINS),
        eval_domains=list(DOMAINS),
        params_total=905_000,
        params_non_embedding=640_000,
        unique_tokens=unique_tokens,
        tokens_seen=tokens_seen,
        epochs=tokens_seen / unique_tokens,
        steps=tokens_seen // 2048,
        planned_steps=tokens_seen // 1024,
        best_step=tokens_seen // 4096,
        tokens_at_best=tokens_seen // 2,
        epochs_at_best=tokens_seen / 2 / unique_tokens,
        converged=seed == 0,
        stop_reason="early_stopping" if seed == 0 else "token_cap",
        best_val_loss=test - 0.01,
        final_val_loss=test + 0.05,
        test_loss=test,
        val_loss_best={d: v - 0.01 for d, v in per_domain.items()},
        val_loss_final={d: v + 0.05 for d, v in per_domain.items()},
        test_loss_by_domain=per_domain,
        val_bpb_best={d: v / math.log(2) / 3 for d, v in per_domain.items()},
        test_bpb={d: v / math.log(2) / 3 for d, v in per_domain.items()},
        test_bpb_mean=test / math.log(2) / 3,
        wall_time_s=12.5,
        train_time_s=10.0,
        tokens_per_s=8000.0,
        world_size=1,
        strategy="auto",
        accelerator="cpu",
        precision="32-true",
    )
    values.update(overrides)
    return RunRecord(**values)


def http_summary(data: dict[str, Any]) -> Any:
    """The public API's own summary class (``HTTPSummary``, nested dicts as ``SummarySubDict``), filled
    offline."""
    from wandb.apis.public.summary import HTTPSummary

    return HTTPSummary(SimpleNamespace(dir="/nonexistent"), None, summary=data)


@dataclass
class FakeRun:
    id: str
    group: str
    state: str
    tags: list[str]
    config: dict[str, Any]
    summary: Any


@dataclass
class FakeApi:
    runs_: list[FakeRun]
    calls: list[tuple[str, dict]] = field(default_factory=list)

    def runs(self, path: str, filters: dict | None = None) -> list[FakeRun]:
        self.calls.append((path, dict(filters or {})))
        group = (filters or {}).get("group")
        return [r for r in self.runs_ if group is None or r.group == group]


def tracker_summary_fields() -> tuple[str, ...]:
    """``SUMMARY_FIELDS`` of datascale.training.tracking, read from its source (importing it needs torch)."""
    tree = ast.parse((REPO_ROOT / "src" / "datascale" / "training" / "tracking.py").read_text())
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
        if any(isinstance(t, ast.Name) and t.id == "SUMMARY_FIELDS" for t in targets):
            return tuple(ast.literal_eval(node.value))
    raise AssertionError("tracking.py has no SUMMARY_FIELDS")


def tracker_summary(record: RunRecord) -> dict[str, Any]:
    """A finished run's summary as the tracker leaves it: the last logged metrics, then the record fields."""
    summary: dict[str, Any] = {
        "train/loss": 2.9,
        "train/lr": 1e-5,
        "epochs": record.epochs - 0.1,  # the last logged values lag the record's final ones
        "tokens_seen": float(record.tokens_seen - 2048),
        "val/loss": record.final_val_loss,
        "test/loss": record.test_loss,
    }
    for d in record.eval_domains:
        summary[f"val/{d}/loss"] = record.val_loss_final[d]
        summary[f"val/{d}/bpb"] = record.val_loss_final[d] / 2
        summary[f"test/{d}/loss"] = record.test_loss_by_domain[d]
        summary[f"test/{d}/bpb"] = record.test_bpb[d]
    values = record.to_dict()
    summary.update({k: _finite_or_none(values[k]) for k in tracker_summary_fields()})
    return summary


def _finite_or_none(value: Any) -> Any:
    return None if isinstance(value, float) and not math.isfinite(value) else value


def fake_run(record: RunRecord, *, summary: dict[str, Any] | None = None, state: str = "finished") -> FakeRun:
    return FakeRun(
        id=record.run_id,
        group=record.study,
        state=state,
        tags=[f"{k}={v}"[:64] for k, v in record.axes.items()],  # as tracking.axis_tags
        config=record.config,
        summary=http_summary(tracker_summary(record) if summary is None else summary),
    )


def test_record_like_to_row_is_the_record_mapping():
    record = make_record(16_000, 1)
    row = record_like_to_row(record.to_dict())
    assert row == record_row(record)
    assert record_like_to_row(record) == row
    expected = {
        "run_id": "r16000s1",
        "study": "data_size",
        "status": "done",
        "seed": 1,
        "axis_unique_tokens": 16_000,
        "axis_seed": 1,
        "N": 905_000,
        "N_non_embedding": 640_000,
        "U": 16_000,
        "D": record.tokens_seen,
        "loss": record.test_loss,
        "val_loss_code": record.val_loss_best["code"],
        "test_loss_literature": record.test_loss_by_domain["literature"],
        "test_bpb_code": record.test_bpb["code"],
        "converged": False,
        "stop_reason": "token_cap",
    }
    assert {k: row[k] for k in expected} == expected
    assert record_like_to_row(record, loss_metric="best_val_loss")["loss"] == record.best_val_loss


def test_partial_mapping_gives_missing_values_not_errors():
    row = record_like_to_row({"run_id": "x", "study": "s", "status": "done", "unique_tokens": 1e4})
    assert row["U"] == 10_000 and isinstance(row["U"], int)
    assert row["N"] is None and row["test_loss"] is None and row["loss"] is None
    assert not any(k.startswith(("axis_", "val_loss_", "test_loss_")) for k in row)
    with pytest.raises(ValueError, match="loss_metric='perplexity'"):
        record_like_to_row({"status": "done"}, loss_metric="perplexity")


def test_wandb_table_equals_records_table(tmp_path):
    """Same frame (columns, dtypes, values, order) from the tracker's W&B summaries as from the records."""
    records = [make_record(u, s) for u in (64_000, 16_000, 32_000) for s in (0, 1)]
    for record in records:
        write_record(tmp_path / "runs" / record.run_id, record)
    from_records = load_records(tmp_path)
    api = FakeApi([fake_run(r) for r in records])

    from_wandb = load_wandb_runs("me/datascale", group="data_size", api=api)

    assert [c for c in from_wandb.columns if c.startswith("val_loss_")] == [
        "val_loss_code",
        "val_loss_literature",
    ]
    pd.testing.assert_frame_equal(from_wandb, from_records)
    assert from_wandb["U"].tolist() == [16_000, 16_000, 32_000, 32_000, 64_000, 64_000]
    assert from_wandb["converged"].dtype == bool
    pre = from_wandb.attrs["preprocessing"]
    assert pre["source"] == "wandb" and pre["n_runs_found"] == 6 and pre["n_rows"] == 6 and pre["steps"] == []
    assert api.calls == [("me/datascale", {"group": "data_size"})]


def test_metric_named_summary_fills_record_fields():
    """A summary with metric names only: test loss and per-domain test values still map; val_loss_<d> stays
    empty.

    ``val/<d>/loss``'s summary is its last value, so it is the *final* validation loss, never the tidy
    ``val_loss_<d>`` (best checkpoint).
    """
    record = make_record(8_000, 0)
    summary = {
        "unique_tokens": 8000.0,
        "tokens_seen": float(record.tokens_seen),
        "params_total": 905000.0,
        "best_val_loss": record.best_val_loss,
        "test/loss": record.test_loss,
        "val/loss": record.final_val_loss,
        "test/code/loss": 3.1,
        "test/code/bpb": 1.4,
        "val/code/loss": 3.3,
        "train/loss": 2.9,
    }
    like = wandb_run_to_record_like(fake_run(record, summary=summary))
    assert like["test_loss"] == record.test_loss and like["final_val_loss"] == record.final_val_loss
    assert like["test_loss_by_domain"] == {"code": 3.1}
    assert like["test_bpb"] == {"code": 1.4}
    assert like["val_loss_final"] == {"code": 3.3}
    assert "val_loss_best" not in like

    frame = load_wandb_runs("me/p", api=FakeApi([fake_run(record, summary=summary)]))
    row = frame.iloc[0]
    assert row["loss"] == record.test_loss and row["test_loss_code"] == 3.1 and row["test_bpb_code"] == 1.4
    assert "val_loss_code" not in frame.columns
    assert row["final_val_loss"] == record.final_val_loss and math.isnan(row["wall_time_s"])


def test_dropped_runs_are_recorded_with_reasons():
    good = make_record(16_000, 0)
    incomplete = make_record(32_000, 0)
    summary = tracker_summary(incomplete)
    del summary["params_total"], summary["best_val_loss"]
    nan_loss = make_record(64_000, 0, test_loss=float("nan"))
    nan_summary = tracker_summary(nan_loss)
    nan_summary["test/loss"] = "NaN"  # how W&B stores a non-finite summary value
    failed = make_record(128_000, 0, status="failed", error="OOM")
    runs = [
        fake_run(failed),  # finished in W&B, but the record says failed
        fake_run(good),
        fake_run(make_record(16_000, 1), state="running"),
        fake_run(make_record(16_000, 2), state="crashed"),
        fake_run(incomplete, summary=summary),
        fake_run(nan_loss, summary=nan_summary),
    ]
    other = fake_run(make_record(16_000, 3, study="other"))
    api = FakeApi([*runs, other])
    api.runs = lambda path, filters=None: [*runs, other]  # a server that ignored the group filter

    frame = load_wandb_runs("me/p", group="data_size", api=api)

    assert frame["run_id"].tolist() == [good.run_id]
    steps = {s["rule"]: s for s in frame.attrs["preprocessing"]["steps"]}
    assert set(steps) == {
        "drop_not_finished",
        "drop_not_done",
        "drop_incomplete_summary",
        "drop_nonfinite_loss",
        "drop_other_group",
    }
    assert [r["state"] for r in steps["drop_not_finished"]["runs"]] == ["running", "crashed"]
    assert (
        steps["drop_incomplete_summary"]["runs"][0]["reason"] == "summary lacks params_total, best_val_loss"
    )
    assert steps["drop_nonfinite_loss"]["runs"][0]["run_id"] == nan_loss.run_id
    assert steps["drop_other_group"]["runs"][0]["run_id"] == other.id
    assert steps["drop_not_done"]["runs"][0]["run_id"] == failed.run_id
    assert frame.attrs["preprocessing"]["n_runs_found"] == 7


def test_no_kept_runs_gives_an_empty_table_with_the_columns():
    frame = load_wandb_runs(
        "me/p", group="data_size", api=FakeApi([fake_run(make_record(8_000, 0), state="failed")])
    )
    assert len(frame) == 0
    assert {"run_id", "N", "U", "D", "loss", "test_loss"} <= set(frame.columns)
    assert frame.attrs["preprocessing"]["steps"][0]["rule"] == "drop_not_finished"


def test_axes_from_config_then_tags():
    config = {
        "seed": 3,
        "study": {"axes": ["subset.unique_tokens", "seed"]},
        "subset": {"unique_tokens": 500},
    }
    assert wandb_axes([], config) == {"unique_tokens": 500, "seed": 3}
    long_value = "x" * 80
    tags = ["unique_tokens=16000", "lr=3e-4", "flag=true", f"name={long_value}"[:64], "datascale"]
    assert wandb_axes(tags, {}) == {"unique_tokens": 16000, "lr": 3e-4, "flag": True, "name": "x" * 59}
    # typed config values win over tag strings (W&B cuts tags at 64 characters)
    assert wandb_axes(tags, {"run": {"axes": {"name": long_value}}})["name"] == long_value
    assert wandb_axes(tags, config)["unique_tokens"] == 500


def test_options_are_checked_before_any_api_call():
    class NoApi:
        def runs(self, *args: Any, **kwargs: Any) -> list:
            raise AssertionError("must not be called")

    with pytest.raises(ValueError, match="loss_metric"):
        load_wandb_runs("me/p", api=NoApi(), loss_metric="loss")
    with pytest.raises(ValueError, match="n_definition"):
        load_wandb_runs("me/p", api=NoApi(), n_definition="embedding")
    with pytest.raises(ValueError, match="entity/project"):
        load_wandb_runs("just-a-project", api=NoApi())


def test_loss_metric_and_extra_filters_pass_through():
    record = make_record(16_000, 0)
    api = FakeApi([fake_run(record)])
    frame = load_wandb_runs(
        "me/p",
        group="data_size",
        filters={"tags": {"$in": ["seed=0"]}},
        api=api,
        loss_metric="final_val_loss",
    )
    assert frame.loc[0, "loss"] == record.final_val_loss
    assert api.calls == [("me/p", {"tags": {"$in": ["seed=0"]}, "group": "data_size"})]


def test_runs_are_fetched_eagerly_when_the_api_can():
    """``wandb.Api().runs(..., lazy=True)`` (its default) would fetch each run's config and summary
    separately."""
    seen: list[dict[str, Any]] = []

    class EagerApi:
        def runs(self, path: str, filters: dict | None = None, lazy: bool = True) -> list[FakeRun]:
            seen.append({"path": path, "filters": filters, "lazy": lazy})
            return [fake_run(make_record(16_000, 0))]

    assert len(load_wandb_runs("me/p", group="data_size", api=EagerApi())) == 1
    assert seen == [{"path": "me/p", "filters": {"group": "data_size"}, "lazy": False}]


def test_record_from_mapping_coerces_wandb_types():
    record = record_from_mapping(
        {
            "status": "done",
            "tokens_seen": 1.6e6,
            "converged": 0.0,
            "epochs": 3,
            "precision": "32",
            "test_loss": "NaN",
        }
    )
    assert record.tokens_seen == 1_600_000 and isinstance(record.tokens_seen, int)
    assert record.converged is False
    assert record.epochs == 3.0 and isinstance(record.epochs, float)
    assert record.precision == "32"
    assert math.isnan(record.test_loss)


def test_import_needs_neither_torch_nor_wandb():
    code = (
        "import sys, scaling_analysis.tables.wandb_runs\n"
        "bad = [m for m in ('torch', 'pytorch_lightning', 'lightning', 'wandb') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
