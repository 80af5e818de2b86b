"""Pre-registered predictions on the analysis side: ``scaling-fit --preregister`` writes the prediction once
(write-once per fitted inputs, ``prediction.json`` the current one) and the report scores it on the target
runs that carry it."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from scaling_analysis import study
from scaling_analysis.cli import main
from scaling_analysis.report.prediction import sha256_bytes
from synthetic_study import write_synthetic_study

from datascale.records import (
    PREDICTION_FILENAME,
    PREDICTIONS_DIR,
    find_records,
    prediction_inputs_sha256,
    read_record,
    write_record,
)

SIZES = (250_000, 500_000, 1_000_000, 2_000_000, 4_000_000)
TARGET = 8_000_000
PREREGISTER = ["--preregister", "--targets", str(TARGET), "--resamples", "40", "--jobs", "1"]


def _study(root: Path) -> Path:
    write_synthetic_study(root, sizes=(*SIZES, TARGET), seeds=(0, 1))
    return root


def test_preregister_writes_every_field_once_and_a_new_file_for_new_inputs(tmp_path: Path) -> None:
    root = _study(tmp_path / "s")
    assert main([str(root), *PREREGISTER]) == 0
    current = root / PREDICTION_FILENAME
    body = json.loads(current.read_text())
    for key in ("targets", "law", "predictions", "rule", "inputs", "created_at", "seed_noise", "bootstrap"):
        assert key in body, key
    assert body["targets"] == [TARGET]
    (row,) = body["predictions"]
    lo, hi = row["interval"]
    assert lo < row["loss"] < hi and row["se_log"] >= row["se_log_bootstrap"]
    assert body["seed_noise"]["measured"] is True, "two seeds per size measure the floor"
    assert body["rule"]["chosen"] == body["law"] and body["rule"]["scores"]
    assert TARGET not in body["inputs"]["sizes"], "the target runs are not fitted"
    fitted = [r for r in find_records(root) if r.unique_tokens != TARGET]
    assert body["inputs"]["sha256"] == prediction_inputs_sha256(fitted), "launcher and analysis hash alike"
    first = root / PREDICTIONS_DIR / f"{body['inputs']['sha256'][:12]}.json"
    assert first.read_bytes() == current.read_bytes()

    before = first.read_bytes()
    assert main([str(root), *PREREGISTER]) == 0
    assert first.read_bytes() == before and current.read_bytes() == before, "same inputs: not rewritten"

    write_synthetic_study(root, sizes=SIZES[:1], seeds=(7,), rng_seed=3)  # one more non-target run
    assert main([str(root), *PREREGISTER]) == 0
    files = sorted((root / PREDICTIONS_DIR).glob("*.json"))
    assert len(files) == 2 and first.read_bytes() == before, "changed inputs: a new file, the old one kept"
    assert json.loads(current.read_text())["inputs"]["sha256"] != body["inputs"]["sha256"]


def test_report_scores_the_prediction_the_targets_carry(tmp_path: Path) -> None:
    root = _study(tmp_path / "s")
    assert main([str(root), *PREREGISTER]) == 0
    body = json.loads((root / PREDICTION_FILENAME).read_text())
    kept = root / PREDICTIONS_DIR / f"{body['inputs']['sha256'][:12]}.json"
    for path in sorted(root.glob("runs/*/record.json")):  # the target runs started after the prediction
        rec = read_record(path)
        if rec.unique_tokens != TARGET:
            continue
        info = {
            "prediction_file": str(kept.relative_to(root)),
            "prediction_sha256": sha256_bytes(kept.read_bytes()),
        }
        info |= {"prediction_created_at": body["created_at"], "started_at": "2099-01-01T00:00:00+00:00"}
        path.unlink()
        write_record(path.parent, dataclasses.replace(rec, preregistration=info | {"targets": [TARGET]}))
    result = study.analyze_study(root, n_resamples=0, n_jobs=1, candidates=())
    pred = result.fit_json["prediction"]
    assert pred["summary"]["n_scored"] == 2 and pred["summary"]["all_created_before_start"]
    assert pred["summary"]["all_sha256_ok"]
    for score in pred["scores"]:
        assert score["U"] == TARGET and abs(score["signed_error"]) == score["abs_error"] < 0.05
        assert score["inside"] is True
    report = Path(result.paths["report"]).read_text()
    assert "## Pre-registered prediction" in report and "2 of 2 target runs inside" in report


def test_report_shows_a_prediction_whose_targets_have_not_run(tmp_path: Path) -> None:
    root = tmp_path / "s"
    write_synthetic_study(root, sizes=SIZES, seeds=(0,))
    assert main([str(root), *PREREGISTER]) == 0
    result = study.analyze_study(root, n_resamples=0, n_jobs=1, candidates=())
    assert result.fit_json["prediction"]["status"] == "no target run finished yet"
