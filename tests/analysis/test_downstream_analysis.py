"""Downstream analysis: record fields round-trip into the tidy table, bounded-metric fits, at-chance flags,
saturation, CLM against MLM, and the report section."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scaling_analysis.steps.downstream import downstream_section, error_power_law, step_downstream
from scaling_analysis.tables.runs import load_records, record_row
from synthetic_study import synthetic_record

from datascale.records import RunRecord, write_record

SIZES = (1000, 2000, 4000, 8000, 16000)


def _result(task: str, mode: str, accuracy: float, chance: float, n_test: int = 400) -> dict:
    return {"task": task, "mode": mode, "accuracy": accuracy, "macro_f1": accuracy * 0.9,
            "loss": 1 - accuracy, "chance": chance, "majority": chance, "n_test": n_test,
            "steps": 10}  # fmt: skip


def _record(u: int, objective: str, downstream: dict) -> RunRecord:
    base = synthetic_record("ds", u, 0, (5.0 * u**-0.1, 5.0 * u**-0.1), True, ["a"], np.zeros(1), {}, 1000)
    return dataclasses.replace(
        base, run_id=f"{objective}{u}", objective=objective, downstream=downstream, axes={"unique_tokens": u}
    )


def _clm_results(u: int) -> dict:
    """classify/a: error (1 - acc)/(1 - 1/3) = 2·U^-0.3; continue/a: stuck at chance 0.25."""
    acc = 1 - (2 / 3) * min(1.0, 2.0 * u**-0.3)
    return {
        "classify/a@probe": _result("classify/a", "probe", acc, 1 / 3),
        "continue/a@zeroshot": _result("continue/a", "zeroshot", 0.25, 0.25),
    }


def test_downstream_fields_round_trip_through_the_record_and_the_tidy_table(tmp_path: Path) -> None:
    rec = _record(4000, "mlm", _clm_results(4000))
    write_record(tmp_path / "runs" / rec.run_id, rec)
    back = RunRecord.from_dict(json.loads((tmp_path / "runs" / rec.run_id / "record.json").read_text()))
    assert back.downstream == rec.downstream and back.objective == "mlm"
    df = load_records(tmp_path)
    row = df.iloc[0]
    assert row["objective"] == "mlm"
    assert row["ds_classify_a_probe_accuracy"] == pytest.approx(
        rec.downstream["classify/a@probe"]["accuracy"]
    )
    assert row["ds_continue_a_zeroshot_chance"] == 0.25 and row["ds_continue_a_zeroshot_n_test"] == 400
    assert df["ds_classify_a_probe_accuracy"].dtype == "float64"
    assert record_row(_record(4000, "clm", {}))["objective"] == "clm"  # no suite: no ds_ columns
    assert not any(k.startswith("ds_") for k in record_row(_record(4000, "clm", {})))


def test_error_power_law_recovers_the_exponent() -> None:
    g = pd.DataFrame({"U": SIZES, "accuracy": [1 - (2 / 3) * 2.0 * u**-0.3 for u in SIZES], "chance": 1 / 3})
    fit = error_power_law(g)
    assert fit["alpha"] == pytest.approx(0.3, abs=1e-6) and fit["A"] == pytest.approx(2.0, rel=1e-6)
    lo, hi = fit["alpha_interval"]
    assert lo <= 0.3 + 1e-6 and hi >= 0.3 - 1e-6


def test_step_flags_chance_finds_saturation_and_compares_objectives(tmp_path: Path) -> None:
    rows = [record_row(_record(u, "clm", _clm_results(u))) for u in SIZES]
    mlm = {"classify/a@probe": _result("classify/a", "probe", 0.5, 1 / 3)}
    rows += [record_row(_record(u, "mlm", mlm)) for u in SIZES]
    df = pd.DataFrame(rows)
    step = step_downstream(df, tmp_path)
    ds = step.fields["downstream"]
    entries = {(e["task"], e["objective"]): e for e in ds["tasks"]}
    assert entries[("continue/a", "clm")]["at_chance_everywhere"]
    assert not entries[("classify/a", "clm")]["at_chance_everywhere"]
    assert ds["at_chance"] == ["continue/a (clm zeroshot)"]
    assert ds["saturates_first"]["objective"] == "mlm"  # flat above chance: 90% of its gain at the first size
    assert ds["saturates_first"]["saturated_at"] == SIZES[0]
    clm = entries[("classify/a", "clm")]
    assert clm["saturated_at"] == 4000  # gains 0.50, 0.53, 0.56, 0.58, 0.59: 90% of 0.59 first at 4000
    assert not clm["still_rising"]  # the last step (+0.017) is inside the binomial half-width (0.046)
    diff = {r["U"]: r["mlm_minus_clm"] for r in ds["objective_comparison"] if r["task"] == "classify/a"}
    assert diff[SIZES[-1]] == pytest.approx(0.5 - (1 - (2 / 3) * 2.0 * SIZES[-1] ** -0.3))
    assert (tmp_path / "downstream_accuracy.png").exists() and ds["plot"] == "downstream_accuracy.png"
    text = downstream_section(ds)
    assert "At chance at every size" in text and "continue/a (clm zeroshot)" in text
    assert "CLM against MLM" in text


def test_a_study_without_downstream_results_skips_the_step(tmp_path: Path) -> None:
    df = pd.DataFrame([record_row(_record(u, "clm", {})) for u in SIZES])
    assert "skipped" in step_downstream(df, tmp_path).fields["downstream"]
