"""The records' reference losses become ``ref_*`` run-table columns, and L0 is read back from the table."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scaling_analysis.tables import runs
from test_data_loading import make_record

from datascale.records import write_record

V = 4096


def _ref(unigram: float, bytes_per_token: float) -> dict[str, float]:
    per_byte = 1 / (bytes_per_token * math.log(2))
    return {
        "uniform_nats": math.log(V),
        "unigram_nats": unigram,
        "uniform_bpb": math.log(V) * per_byte,
        "unigram_bpb": unigram * per_byte,
        "n_tokens": 1000,
        "n_bytes": int(1000 * bytes_per_token),
    }


REFERENCE = {
    "code": {"val": _ref(5.0, 3.0), "test": _ref(5.2, 3.1)},
    "literature": {"val": _ref(6.0, 4.0), "test": _ref(6.1, 4.1)},
}


def test_record_reference_losses_become_columns(tmp_path: Path) -> None:
    root = tmp_path / "study"
    for i, u in enumerate((8_000, 16_000)):
        rec = make_record(f"r{i}", unique_tokens=u, seed=0, reference_losses=REFERENCE)
        write_record(root / "runs" / f"r{i}", rec)
    write_record(root / "runs" / "old", make_record("old", unique_tokens=32_000, seed=0))  # before the field
    df = runs.load_records(root).set_index("run_id")
    assert df.loc["r0", "ref_uniform_loss"] == pytest.approx(math.log(V))
    assert df.loc["r0", "ref_unigram_loss"] == pytest.approx((5.2 + 6.1) / 2)  # test split, macro-mean
    assert df.loc["r1", "ref_unigram_loss_literature"] == pytest.approx(6.1)
    assert df.loc["r1", "ref_uniform_bpb_code"] == pytest.approx(math.log(V) / (3.1 * math.log(2)))
    assert df["ref_unigram_bpb_code"].dtype == np.float64 and math.isnan(df.loc["old", "ref_uniform_loss"])
    assert runs.reference_loss(df) == pytest.approx(math.log(V))
    assert runs.reference_loss(df.drop(columns="ref_uniform_loss")) is None


def test_reference_loss_refuses_disagreeing_runs() -> None:
    df = pd.DataFrame({"ref_uniform_loss": [math.log(4096), math.log(8192)]})
    with pytest.raises(ValueError, match="runs disagree"):
        runs.reference_loss(df)
    assert runs.reference_columns({}) == {} and runs.reference_columns({"code": {"val": _ref(5, 3)}}) == {}
