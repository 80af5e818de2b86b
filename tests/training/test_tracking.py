"""W&B mode resolution, loggers, the token x-axis, summary + finish with the exit code, and an offline run."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pytorch_lightning.loggers import CSVLogger, WandbLogger
from training_fixtures import resolved_config

from datascale.artifacts import DataArtifacts
from datascale.training import tracking, worker


@pytest.mark.parametrize(
    ("configured", "env", "expected"),
    [
        ("auto", {}, "offline"),  # no key: never fail on login
        ("auto", {"WANDB_API_KEY": "x"}, "online"),
        ("auto", {"WANDB_MODE": "disabled", "WANDB_API_KEY": "x"}, "disabled"),
        ("online", {"WANDB_MODE": "offline"}, "offline"),  # the environment wins
        ("disabled", {}, "disabled"),
        ("auto", {"WANDB_MODE": "dryrun"}, "offline"),
    ],
)
def test_resolve_wandb_mode(configured: str, env: dict[str, str], expected: str) -> None:
    assert tracking.resolve_wandb_mode(configured, env) == expected


def test_bad_mode_and_tags() -> None:
    with pytest.raises(ValueError, match="W&B mode"):
        tracking.resolve_wandb_mode("sometimes", {})
    assert tracking.axis_tags({"unique_tokens": 16000, "seed": 1}) == ["unique_tokens=16000", "seed=1"]


def test_csv_only_logger_writes_into_the_run_dir(tmp_path: Path) -> None:
    loggers, wandb_logger = tracking.build_loggers(
        {"wandb": {"enabled": False}}, tmp_path, "abc", "s", {}, {}
    )
    assert wandb_logger is None and len(loggers) == 1 and isinstance(loggers[0], CSVLogger)
    assert Path(loggers[0].log_dir) == tmp_path


def test_wandb_logger_identity(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "disabled")
    cfg = {"wandb": {"enabled": True, "project": "p", "mode": "auto"}}
    loggers, wandb_logger = tracking.build_loggers(cfg, tmp_path, "run123", "study1", {"seed": 2}, {"a": 1})
    assert isinstance(wandb_logger, WandbLogger) and loggers[-1] is wandb_logger
    init = wandb_logger._wandb_init
    assert (init["id"], init["name"], init["group"], init["job_type"], init["tags"], init["mode"]) == (
        "run123",
        "run123",
        "study1",
        "train",
        ["seed=2"],
        "disabled",
    )
    assert init["config"] == {"a": 1} and init["dir"] == str(tmp_path)
    assert tracking.wandb_info(wandb_logger, tmp_path)["mode"] == "disabled"


class FakeRun:
    def __init__(self, fail_summary: bool = False) -> None:
        self.metrics: list[tuple[tuple[Any, ...], dict[str, Any]]] = []
        self.summary: dict[str, Any] | None = None if fail_summary else {}
        self.finished: list[int] = []
        self.id = "r1"

    def define_metric(self, *args: Any, **kwargs: Any) -> None:
        self.metrics.append((args, kwargs))

    def finish(self, exit_code: int = 0) -> None:
        self.finished.append(exit_code)


class FakeLogger:
    def __init__(self, run: FakeRun, mode: str = "offline") -> None:
        self._wandb_init = {"mode": mode, "id": "r1"}
        self._experiment = run
        self.experiment = run


def test_every_metric_is_plotted_against_tokens_seen() -> None:
    run = FakeRun()
    tracking.define_token_axis(FakeLogger(run))  # type: ignore[arg-type]
    assert run.metrics == [
        (("tokens_seen",), {}),
        (("*",), {"step_metric": "tokens_seen", "step_sync": True}),
    ]


def test_finish_writes_summary_and_exit_code_even_when_extras_fail() -> None:
    run = FakeRun()
    record = {
        "best_val_loss": 3.2,
        "test_loss": float("nan"),
        "unique_tokens": 8000,
        "converged": True,
        "config": {"ignored": True},
    }
    tracking.finish_wandb(FakeLogger(run), 0, record=record, log_artifacts=False)  # type: ignore[arg-type]
    assert run.summary == {"best_val_loss": 3.2, "test_loss": None, "unique_tokens": 8000, "converged": True}
    assert run.finished == [0]
    broken = FakeRun(fail_summary=True)  # summary.update raises: finish still runs
    tracking.finish_wandb(FakeLogger(broken), 1, record=record, log_artifacts=False)  # type: ignore[arg-type]
    assert broken.finished == [1]


def test_offline_run_keeps_its_wandb_files_in_the_run_dir(
    make_artifacts: Callable[[int], DataArtifacts], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    path = resolved_config(
        tmp_path / "run_wb", make_artifacts(2048), logger="wandb_csv", **{"training.cap_epochs": 1.0}
    )
    record = worker.run(path)
    assert (
        record.wandb["id"] == "run_wb"
        and record.wandb["mode"] == "offline"
        and record.wandb["group"] == "tests"
    )
    runs = list((tmp_path / "run_wb" / "wandb").glob("offline-run-*-run_wb"))
    assert len(runs) == 1 and list(runs[0].glob("run-run_wb.wandb"))
