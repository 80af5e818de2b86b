"""Run records and external tables -> the tidy run table: columns, dtypes, and recorded preprocessing."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scaling_analysis.tables import runs

from datascale.records import RunRecord, write_record

REPO_ROOT = Path(__file__).resolve().parents[2]
REFERENCE_DIR = Path(os.environ.get("DATASCALE_SHARED", REPO_ROOT.parent / "shared")) / "reference"


def make_record(
    run_id: str, *, unique_tokens: int, seed: int, status: str = "done", **overrides
) -> RunRecord:
    """A record whose every number is distinct, so a wrong mapping cannot pass by coincidence."""
    tokens_seen = unique_tokens * 12
    values = dict(
        run_id=run_id,
        study="data_size",
        status=status,
        axes={"unique_tokens": unique_tokens, "seed": seed},
        seed=seed,
        created_at="2026-11-22T00:00:00+00:00",
        code_version="abc1234",
        config={"seed": seed},
        corpus_hash="corpus-h",
        tokenizer_hash="tok-h",
        subset_hash=f"subset-{unique_tokens}",
        train_domains=["code", "literature"],
        eval_domains=["code", "literature"],
        params_total=905_216,
        params_non_embedding=640_000,
        unique_tokens=unique_tokens,
        tokens_seen=tokens_seen,
        epochs=12.0,
        steps=tokens_seen // 4096,
        planned_steps=tokens_seen // 2048,
        best_step=tokens_seen // 8192,
        tokens_at_best=tokens_seen // 2,
        epochs_at_best=6.0,
        converged=True,
        stop_reason="early_stopping",
        best_val_loss=3.91,
        final_val_loss=3.97,
        test_loss=3.93,
        val_loss_best={"code": 3.5, "literature": 4.32},
        val_loss_final={"code": 3.55, "literature": 4.39},
        test_loss_by_domain={"code": 3.51, "literature": 4.35},
        val_bpb_best={"code": 1.40, "literature": 1.70},
        test_bpb={"code": 1.41, "literature": 1.71},
        test_bpb_mean=1.56,
        wall_time_s=321.5,
        train_time_s=300.0,
        tokens_per_s=7800.0,
        world_size=1,
        strategy="single",
        accelerator="cpu",
        precision="32-true",
    )
    values.update(overrides)
    return RunRecord(**values)


@pytest.fixture()
def study(tmp_path: Path) -> Path:
    root = tmp_path / "data_size"
    write_record(root / "runs" / "bbb", make_record("bbb", unique_tokens=32_000, seed=0))
    write_record(
        root / "runs" / "aaa",
        make_record(
            "aaa", unique_tokens=8_000, seed=1, converged=False, stop_reason="token_cap", test_loss=4.4
        ),
    )
    write_record(root / "runs" / "ccc", make_record("ccc", unique_tokens=8_000, seed=0, test_loss=4.5))
    write_record(root / "runs" / "fff", make_record("fff", unique_tokens=64_000, seed=0, status="failed"))
    return root


def test_load_records_maps_every_field_with_tidy_dtypes(study: Path) -> None:
    df = runs.load_records(study)
    assert list(df["run_id"]) == ["ccc", "aaa", "bbb"]  # sorted by U, then seed; the failed run is left out
    row = df.set_index("run_id").loc["bbb"]
    assert row["U"] == 32_000 and row["D"] == 32_000 * 12  # U is the subset size, D stays tokens seen
    assert row["N"] == 905_216 and row["N_non_embedding"] == 640_000
    assert row["C"] == pytest.approx(6 * 905_216 * 32_000 * 12)
    assert row["loss"] == row["test_loss"] == 3.93
    assert row["best_val_loss"] == 3.91 and row["final_val_loss"] == 3.97
    assert (
        row["val_loss_code"] == 3.5 and row["test_loss_literature"] == 4.35 and row["test_bpb_code"] == 1.41
    )
    assert row["axis_unique_tokens"] == 32_000 and row["axis_seed"] == 0
    assert row["tokens_at_best"] == 32_000 * 6 and row["epochs_at_best"] == 6.0
    assert row["wall_time_s"] == 321.5 and row["tokens_per_s"] == 7800.0
    assert (
        row["code_version"] == "abc1234"
        and row["subset_hash"] == "subset-32000"
        and row["tokenizer_hash"] == "tok-h"
    )
    assert df.set_index("run_id").loc["aaa", "converged"] == False  # noqa: E712 (numpy bool)
    for col in ("seed", "N", "N_non_embedding", "U", "D", "tokens_at_best", "steps"):
        assert df[col].dtype == np.int64, col
    for col in ("loss", "test_loss", "epochs", "C", "val_loss_code", "wall_time_s"):
        assert df[col].dtype == np.float64, col
    assert df["converged"].dtype == bool
    assert pd.api.types.is_string_dtype(df["run_id"]) and pd.api.types.is_string_dtype(df["stop_reason"])
    pre = runs.preprocessing_of(df)
    assert pre["source"] == "records" and pre["loss_metric"] == "test_loss" and pre["status_filter"] == "done"
    assert pre["n_records_found"] == 4 and pre["n_rows"] == 3


def test_every_column_is_documented(study: Path) -> None:
    df = runs.load_records(study)
    patterns = [k.split("<")[0] for k in runs.COLUMNS if "<" in k]
    undocumented = [
        c for c in df.columns if c not in runs.COLUMNS and not any(c.startswith(p) for p in patterns)
    ]
    assert undocumented == []
    assert all(doc.strip() for doc in runs.COLUMNS.values())
    assert "tokens seen" in runs.COLUMNS["D"] and "unique" not in runs.COLUMNS["D"].split(";")[0]


def test_loss_metric_n_definition_and_failed_runs(study: Path) -> None:
    df = runs.load_records(study, loss_metric="best_val_loss", n_definition="non_embedding")
    assert (df["loss"] == df["best_val_loss"]).all() and (df["N"] == 640_000).all()
    assert runs.preprocessing_of(df)["n_definition"].startswith("non_embedding")
    with_failed = runs.load_records(study, include_failed=True)
    assert sorted(with_failed["status"]) == ["done", "done", "done", "failed"]
    with pytest.raises(ValueError, match="loss_metric='train_loss'"):
        runs.load_records(study, loss_metric="train_loss")


def test_no_records_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(runs.NoRecordsError, match=str(tmp_path / "empty")):
        runs.load_records(tmp_path / "empty")
    (tmp_path / "empty").mkdir()
    with pytest.raises(runs.NoRecordsError, match="no finished run records"):
        runs.load_records(tmp_path / "empty")


def test_nonfinite_loss_is_dropped_as_a_recorded_step(tmp_path: Path) -> None:
    write_record(tmp_path / "runs" / "a", make_record("a", unique_tokens=8_000, seed=0))
    write_record(tmp_path / "runs" / "b", make_record("b", unique_tokens=16_000, seed=0, test_loss=math.nan))
    df = runs.load_records(tmp_path)
    assert list(df["run_id"]) == ["a"]
    (step,) = runs.preprocessing_of(df)["steps"]
    assert step["rule"] == "drop_nonfinite_loss" and step["run_ids"] == ["b"]


def test_save_runs_round_trip_keeps_preprocessing(study: Path, tmp_path: Path) -> None:
    df = runs.drop_highest(runs.load_records(study), 1)
    path = runs.save_runs(df, tmp_path / "out" / "runs.parquet")
    back = runs.read_runs(path)
    pd.testing.assert_frame_equal(back, df, check_like=False)
    assert runs.preprocessing_of(back)["steps"][0]["rule"] == "drop_highest"
    # and load_table continues from it instead of starting a fresh record
    again = runs.load_table(path)
    assert [s["rule"] for s in runs.preprocessing_of(again)["steps"]] == ["drop_highest", "reload"]


def _epoch_like_csv(path: Path) -> Path:
    rng = np.random.default_rng(3)
    n = rng.choice([1e8, 3e8, 1e9], size=30)
    c = rng.choice([1e19, 1e20, 1e21], size=30)
    loss = 1.8 + 400 * n**-0.34 + 2000 * (c / (6 * n)) ** -0.37
    loss[[4, 11]] = [7.5, 6.0]  # two outliers
    pd.DataFrame({"Model Size": n, "Training FLOP": c, "loss": loss, "color": "x"}).to_csv(path, index=False)
    return path


def test_load_table_mapping_derived_column_and_drop_highest(tmp_path: Path) -> None:
    csv = _epoch_like_csv(tmp_path / "t.csv")
    df = runs.load_table(
        csv,
        columns={"Model Size": "N", "Training FLOP": "C", "loss": "loss"},
        derived={"D": "C / (6 * N)"},
        drop_highest_k=2,
        n_definition="total parameters",
    )
    assert len(df) == 28 and df["loss"].max() < 6.0
    np.testing.assert_allclose(df["D"], df["C"] / (6 * df["N"]))
    assert "color" in df  # unmapped columns are kept
    pre = runs.preprocessing_of(df)
    assert pre["column_mapping"] == {"Model Size": "N", "Training FLOP": "C", "loss": "loss"}
    assert pre["n_definition"] == "total parameters" and pre["n_rows_raw"] == 30 and pre["n_rows"] == 28
    derive_step, drop_step = pre["steps"]
    assert derive_step == {"rule": "derive", "column": "D", "expression": "C / (6 * N)"}
    assert drop_step["rule"] == "drop_highest" and drop_step["k"] == 2 and drop_step["cutoff"] == 6.0
    assert drop_step["dropped_values"] == [6.0, 7.5]


def test_collapse_min_over_a_sweep_per_cell(tmp_path: Path) -> None:
    rows = []
    for n in (1e7, 1e8):
        for d in (1e9, 1e10):
            for lr, bump in ((1e-3, 0.05), (3e-3, 0.0), (1e-2, 0.2)):
                rows.append({"N": n, "D": d, "peak_lr": lr, "loss": 3.0 + bump - 0.1 * math.log10(n * d)})
    path = tmp_path / "sweep.parquet"
    pd.DataFrame(rows).to_parquet(path)
    df = runs.load_table(path, collapse_min_over="peak_lr")
    assert len(df) == 4 and (df["peak_lr"] == 3e-3).all()  # the best learning rate of every (N, D) cell
    step = runs.preprocessing_of(df)["steps"][-1]
    assert step == {
        "rule": "collapse_min",
        "over": ["peak_lr"],
        "by": ["N", "D"],
        "column": "loss",
        "n_before": 12,
        "n_after": 4,
        "n_cells_swept": 4,
    }


def test_load_table_errors_name_the_problem(tmp_path: Path) -> None:
    csv = _epoch_like_csv(tmp_path / "t.csv")
    with pytest.raises(ValueError, match=r"\['Params'\] not in the table"):
        runs.load_table(csv, columns={"Params": "N"})
    with pytest.raises(ValueError, match="no 'loss' column"):
        runs.load_table(csv, columns={"loss": "L"})
    with pytest.raises(FileNotFoundError, match=r"nope\.csv"):
        runs.load_table(tmp_path / "nope.csv")
    assert runs.parse_columns("Model Size=N, loss=loss") == {"Model Size": "N", "loss": "loss"}
    with pytest.raises(ValueError, match="csv_column=variable"):
        runs.parse_columns("Model Size")


def test_domain_long_one_row_per_run_and_domain(study: Path) -> None:
    df = runs.load_records(study)
    long = runs.domain_long(df)
    assert len(long) == 2 * len(df) and sorted(set(long["condition"])) == ["code", "literature"]
    code = long[long["condition"] == "code"].set_index("run_id")["loss"]
    assert code["bbb"] == 3.51


@pytest.mark.skipif(
    not (REFERENCE_DIR / "epoch_chinchilla_svg_extracted_data.csv").exists(),
    reason=f"reference data not found in {REFERENCE_DIR} (set DATASCALE_SHARED)",
)
def test_epoch_reference_drop_five_rule() -> None:
    df = runs.load_table(
        REFERENCE_DIR / "epoch_chinchilla_svg_extracted_data.csv",
        columns={"Model Size": "N", "Training FLOP": "C", "loss": "loss"},
        derived={"D": "C / (6 * N)"},
        drop_highest_k=5,
    )
    step = runs.preprocessing_of(df)["steps"][-1]
    assert len(df) == 240  # Epoch's 240 points
    assert step["cutoff"] == pytest.approx(3.4470, abs=1e-4) and step["max_kept"] == pytest.approx(
        3.4059, abs=1e-4
    )
