"""Pre-registration on the launcher side, with fake records and a fake analysis: the plan, a target job
waiting for the non-target runs, the prediction made once and carried by the target, the order check, the
timeout.
(The real thing end to end: tests/test_end_to_end.py, marked slow.)"""

from __future__ import annotations

import importlib.util
import json
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from omegaconf import DictConfig, OmegaConf

from datascale.config_errors import ConfigError
from datascale.orchestration import preregister
from datascale.records import PREDICTION_FILENAME, PREDICTIONS_DIR, PREREGISTRATION_FILENAME, write_record
from datascale.storage import atomic_write_json

_spec = importlib.util.spec_from_file_location(
    "synthetic_study", Path(__file__).parent / "analysis" / "synthetic_study.py"
)
assert _spec is not None and _spec.loader is not None
synthetic_study = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(synthetic_study)

POINTS = [(1000, "run-1000"), (2000, "run-2000"), (4000, "run-4000")]


def _cfg(root: Path, unique_tokens: int, **predict: Any) -> DictConfig:
    settings = {"targets": ["largest"], "poll_s": 0.05, "timeout_s": 20, "resamples": 0} | predict
    return OmegaConf.create(
        {
            "paths": {"results_dir": str(root)},
            "study": {"name": "s", "max_attempts": 2},
            "subset": {"unique_tokens": unique_tokens},
            "analysis": {"predict": settings},
            "logger": {"wandb": {"enabled": False}},
        }
    )


def _finish(study_dir: Path, u: int, run_id: str) -> None:
    rec = synthetic_study.synthetic_record("s", u, 0, (3.0, 3.0), True, ["a"], np.zeros(1), {}, 1000)
    rec.run_id = run_id
    write_record(study_dir / "runs" / run_id, rec)


def _fake_analysis(calls: list[float]) -> Any:
    """Stands in for ``scaling-fit --preregister``: writes a prediction fitted on the finished runs."""

    def run(study_dir: Path, targets: list[int], settings: preregister.PredictSettings) -> None:
        calls.append(time.time())
        fitted = [r for r in preregister.find_records(study_dir) if r.unique_tokens not in targets]
        sha = preregister.prediction_inputs_sha256(fitted)
        body = {"targets": targets, "inputs": {"sha256": sha}, "created_at": preregister.now_utc()}
        body["predictions"] = [{"U": t, "loss": 2.0, "interval": [1.9, 2.1]} for t in targets]
        atomic_write_json(study_dir / PREDICTIONS_DIR / f"{sha[:12]}.json", body)
        atomic_write_json(study_dir / PREDICTION_FILENAME, body)

    return run


def test_target_waits_for_the_non_targets_then_starts_under_one_prediction(tmp_path, monkeypatch) -> None:
    calls: list[float] = []
    monkeypatch.setattr(preregister, "run_preregister", _fake_analysis(calls))
    study_dir = tmp_path / "s"
    plan = preregister.write_plan(_cfg(tmp_path, 1000), POINTS, sequential=False)
    assert plan is not None and plan["targets"] == [4000] and plan["non_targets"] == ["run-1000", "run-2000"]
    assert preregister.await_prediction(_cfg(tmp_path, 1000), study_dir / "runs" / "run-1000") == {}

    result: dict[str, Any] = {}
    target_dir = study_dir / "runs" / "run-4000"
    target_dir.mkdir(parents=True)
    waiter = threading.Thread(
        target=lambda: result.update(preregister.await_prediction(_cfg(tmp_path, 4000), target_dir))
    )
    waiter.start()
    time.sleep(0.3)
    assert waiter.is_alive() and not calls, "the target waits while non-target runs are unfinished"
    _finish(study_dir, 1000, "run-1000")
    time.sleep(0.3)
    assert waiter.is_alive() and not calls, "one of two non-target runs is not enough"
    atomic_write_json(  # failed for good (not retried): finished, so the target stops waiting for it
        study_dir / "runs" / "run-2000" / "status.json",
        {"attempts": [{"outcome": "failed", "retry": False, "reason": "config"}]},
    )
    waiter.join(timeout=10)
    assert not waiter.is_alive() and len(calls) == 1
    assert result["prediction_created_at"] <= result["started_at"]
    assert result["prediction_file"].startswith(f"{PREDICTIONS_DIR}/")
    assert json.loads((target_dir / PREREGISTRATION_FILENAME).read_text()) == result

    again = preregister.await_prediction(_cfg(tmp_path, 4000), target_dir)
    assert again == result and len(calls) == 1, "a started target keeps its prediction; nothing is refitted"
    other = study_dir / "runs" / "run-4000-seed1"
    other.mkdir()
    second = preregister.await_prediction(_cfg(tmp_path, 4000), other)
    assert second["prediction_sha256"] == result["prediction_sha256"] and len(calls) == 1, (
        "same inputs: reused"
    )


def test_target_gives_up_after_the_timeout(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(preregister, "run_preregister", _fake_analysis([]))
    preregister.write_plan(_cfg(tmp_path, 1000), POINTS, sequential=False)
    target_dir = tmp_path / "s" / "runs" / "run-4000"
    target_dir.mkdir(parents=True)
    with pytest.raises(preregister.PreregistrationError, match="2 of 2 non-target runs still unfinished"):
        preregister.await_prediction(_cfg(tmp_path, 4000, timeout_s=0.2), target_dir)


def test_plan_refuses_targets_before_their_inputs_under_a_sequential_launcher(tmp_path) -> None:
    with pytest.raises(ConfigError, match="sweep order"):
        preregister.write_plan(_cfg(tmp_path, 1000), [POINTS[2], *POINTS[:2]], sequential=True)
    assert preregister.write_plan(_cfg(tmp_path, 1000), [POINTS[2], *POINTS[:2]], sequential=False)
    with pytest.raises(ConfigError, match=r"analysis\.predict\.targets"):
        preregister.write_plan(_cfg(tmp_path, 1000, targets=[999]), POINTS, sequential=False)
    with pytest.raises(ConfigError, match=r"analysis\.predict\.targets"):
        preregister.PredictSettings.from_config(_cfg(tmp_path, 1000, targets=["biggest"]))
    assert preregister.PredictSettings.from_config(OmegaConf.create({"study": {"name": "s"}})) is None
