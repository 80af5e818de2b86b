"""Pre-registered predictions: a study's target sizes train only after their predicted loss is written.

Why: a prediction written after the largest runs are in proves nothing. A study names its targets
(``analysis.predict.targets``: ``subset.unique_tokens`` values, or ``largest``); the launcher trains the other
sizes first, then ``scaling-fit <study> --preregister`` (a subprocess: the launcher never imports the
analysis) fits them and writes the prediction, and only then does a target run start. Its record carries the
prediction's sha256 and both times (``RunRecord.preregistration``); the report scores it.

How it holds under every launcher: the study callback writes the plan (the targets, resolved, and the run id
of every non-target point) before any job runs; a target job, under a file lock in the study dir, uses the
current prediction when it was fitted on exactly the finished non-target runs, makes it when every planned
non-target run has finished (done, or failed for good), and otherwise waits (the parallel launcher starts
targets beside the runs they wait for; SLURM starts every job on its own). A target run keeps the prediction
it was started under (``<run_dir>/preregistration.json``, written once before training).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from filelock import FileLock
from omegaconf import DictConfig, OmegaConf

from datascale.config_errors import ConfigError, require
from datascale.orchestration.supervise import failures, read_attempts
from datascale.records import (
    PREDICTION_FILENAME,
    PREDICTIONS_DIR,
    PREREGISTRATION_FILENAME,
    find_records,
    is_done,
    prediction_inputs_sha256,
)
from datascale.storage import atomic_write_json, file_sha256
from datascale.wandb_mode import resolve_wandb_mode

log = logging.getLogger("datascale.preregister")

PLAN_FILENAME = "plan.json"
LOCK_FILENAME = ".lock"
LARGEST = "largest"


class PreregistrationError(RuntimeError):
    """A target run cannot start: its prediction could not be made, or the runs it needs did not finish."""


@dataclass(frozen=True)
class PredictSettings:
    """``analysis.predict``: the target sizes and how a target job waits for its prediction."""

    targets: tuple[int | str, ...]
    timeout_s: float = 86400.0
    poll_s: float = 10.0
    resamples: int = 1000
    loss_metric: str = "test_loss"

    @classmethod
    def from_config(cls, cfg: DictConfig) -> PredictSettings | None:
        """The study's settings, checked; None when the study pre-registers nothing."""
        node = OmegaConf.select(cfg, "analysis.predict", default=None)
        if node is None or node.get("targets") is None:
            return None
        raw = OmegaConf.to_container(node, resolve=True)
        assert isinstance(raw, dict)
        unknown = sorted(set(raw) - {f.name for f in fields(cls)})
        require(
            not unknown, "analysis.predict", unknown, f"unknown keys; known: {[f.name for f in fields(cls)]}"
        )
        targets = raw["targets"] if isinstance(raw["targets"], list) else [raw["targets"]]
        for t in targets:
            ok = t == LARGEST or (isinstance(t, int) and not isinstance(t, bool) and t > 0)
            require(ok, "analysis.predict.targets", t, f"must be unique-token counts or {LARGEST!r}")
        require(bool(targets), "analysis.predict.targets", targets, "must name at least one size")
        out = cls(tuple(targets), **{k: raw[k] for k in ("timeout_s", "poll_s", "resamples") if k in raw})
        require(out.timeout_s > 0, "analysis.predict.timeout_s", out.timeout_s, "must be > 0 seconds")
        require(out.poll_s > 0, "analysis.predict.poll_s", out.poll_s, "must be > 0 seconds")
        return out

    def resolve(self, sizes: Iterable[int]) -> list[int]:
        """Target sizes, ``largest`` as the largest swept size (dropped when no sweep is known)."""
        sizes = sorted(int(s) for s in sizes)
        out = {int(t) for t in self.targets if t != LARGEST}
        if LARGEST in self.targets and sizes:
            out.add(sizes[-1])
        return sorted(out)


def study_dir_of(cfg: DictConfig) -> Path:
    return Path(cfg.paths.results_dir) / cfg.study.name


def now_utc() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


# ---- the plan (written by the study callback before any job runs) -----------------------------------------
def write_plan(cfg: DictConfig, points: Sequence[tuple[int, str]], sequential: bool) -> dict[str, Any] | None:
    """Record the study's targets and non-target run ids (``points``: (unique tokens, run id) in sweep
    order); refuse a sequential launcher's order that would train a target before a run it waits for."""
    settings = PredictSettings.from_config(cfg)
    if settings is None:
        return None
    targets = settings.resolve(u for u, _ in points)
    is_target = [u in targets for u, _ in points]
    if not any(is_target):
        raise ConfigError(
            "analysis.predict.targets", list(settings.targets), "no sweep point has these sizes"
        )
    if all(is_target):
        raise ConfigError("analysis.predict.targets", targets, "every sweep point is a target: none to fit")
    if sequential and is_target.index(True) < len(is_target) - 1 - is_target[::-1].index(False):
        raise ConfigError(
            "analysis.predict.targets",
            targets,
            "the basic launcher runs jobs in sweep order and a target comes before a non-target run it must "
            "wait for: list subset.unique_tokens first in hydra.sweeper.params, in increasing order",
        )
    non_targets = sorted({rid for (_, rid), t in zip(points, is_target, strict=True) if not t})
    plan = {
        "targets": targets,
        "non_targets": non_targets,
        "target_runs": sorted({rid for (_, rid), t in zip(points, is_target, strict=True) if t}),
        "written_at": now_utc(),
    }
    atomic_write_json(study_dir_of(cfg) / PREDICTIONS_DIR / PLAN_FILENAME, plan)
    log.info(
        "pre-registration: targets U=%s train after the prediction from %d runs",
        targets,
        len(non_targets),
    )
    return plan


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


# ---- waiting for the prediction (a target job, before training) -------------------------------------------
def finished(run_dir: Path, max_attempts: int) -> bool:
    """Done, or failed for good (a failure that is not retried, or out of attempts); a run being retried,
    preempted or not started is not finished."""
    if is_done(run_dir):
        return True
    attempts = read_attempts(run_dir)
    if not attempts or attempts[-1].get("outcome") != "failed":
        return False
    return not attempts[-1].get("retry", True) or failures(attempts) >= max_attempts


def pending_runs(study_dir: Path, plan: dict[str, Any] | None, max_attempts: int) -> list[str]:
    """Planned non-target runs that have not finished yet."""
    ids = (plan or {}).get("non_targets") or []
    return [rid for rid in ids if not finished(study_dir / "runs" / rid, max_attempts)]


def await_prediction(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    """For a target run: the prediction it is started under (waiting for it, or making it), as the record's
    ``preregistration``; {} for any other run. Raises :class:`PreregistrationError` when it cannot be had."""
    settings = PredictSettings.from_config(cfg)
    if settings is None:
        return {}
    study_dir = study_dir_of(cfg)
    plan = _read_json(study_dir / PREDICTIONS_DIR / PLAN_FILENAME)
    targets = list(plan["targets"]) if plan else settings.resolve([])
    if int(cfg.subset.unique_tokens) not in targets:
        return {}
    deadline = time.monotonic() + settings.timeout_s
    max_attempts = int(cfg.study.get("max_attempts", 3))
    (study_dir / PREDICTIONS_DIR).mkdir(parents=True, exist_ok=True)
    while True:
        with FileLock(str(study_dir / PREDICTIONS_DIR / LOCK_FILENAME)):
            started = _read_json(Path(run_dir) / PREREGISTRATION_FILENAME)
            if started:  # begun before (preempted, resumed; or another rank): the prediction it started under
                return started
            pending = pending_runs(study_dir, plan, max_attempts)
            if not pending:
                return _start_target(cfg, settings, Path(run_dir), targets)
        n = len((plan or {}).get("non_targets") or [])
        if time.monotonic() > deadline:
            raise PreregistrationError(
                f"{len(pending)} of {n} non-target runs still unfinished after analysis.predict.timeout_s="
                f"{settings.timeout_s:g}: no pre-registered prediction, so the target does not train"
            )
        log.info("waiting for %d of %d non-target runs before the pre-registered prediction", len(pending), n)
        time.sleep(settings.poll_s)


def _start_target(
    cfg: DictConfig, settings: PredictSettings, run_dir: Path, targets: list[int]
) -> dict[str, Any]:
    """Under the study's lock, every non-target run finished: the current prediction (made if needed), and
    this run's ``preregistration.json`` written once."""
    study_dir = study_dir_of(cfg)
    fitted = [r for r in find_records(study_dir) if int(r.unique_tokens) not in targets]
    if not fitted:
        log.warning(
            "no finished non-target run to predict from: target %s trains without a prediction", run_dir
        )
        return {}
    inputs_sha = prediction_inputs_sha256(fitted, settings.loss_metric)
    current = _read_json(study_dir / PREDICTION_FILENAME)
    if (
        not current
        or (current.get("inputs") or {}).get("sha256") != inputs_sha
        or current.get("targets") != targets
    ):
        run_preregister(study_dir, targets, settings)
        current = _read_json(study_dir / PREDICTION_FILENAME)
    if not current:
        raise PreregistrationError(
            f"{study_dir / PREDICTION_FILENAME}: missing or unreadable after --preregister"
        )
    hash12 = current["inputs"]["sha256"][:12]
    kept = study_dir / PREDICTIONS_DIR / f"{hash12}.json"
    log_to_wandb(cfg, kept, current)
    info = {
        "prediction_file": str(kept.relative_to(study_dir)),
        "prediction_sha256": file_sha256(kept),
        "prediction_created_at": current["created_at"],
        "started_at": now_utc(),
        "targets": targets,
    }
    atomic_write_json(run_dir / PREREGISTRATION_FILENAME, info)
    log.info(
        "target %s starts under prediction %s (created %s)",
        run_dir.name,
        kept.name,
        info["prediction_created_at"],
    )
    return info


def preregister_command(study_dir: Path, targets: Sequence[int], settings: PredictSettings) -> list[str]:
    """``scaling-fit <study> --preregister`` as a subprocess of this interpreter."""
    return [
        sys.executable, "-m", "scaling_analysis", str(study_dir), "--preregister",
        "--targets", ",".join(str(t) for t in targets), "--loss-metric", settings.loss_metric,
        "--resamples", str(settings.resamples),
    ]  # fmt: skip


def run_preregister(study_dir: Path, targets: Sequence[int], settings: PredictSettings) -> None:
    """Make the prediction (the analysis writes it); its output goes to this job's log."""
    cmd = preregister_command(study_dir, targets, settings)
    log.info("pre-registering the prediction at U=%s: %s", list(targets), " ".join(cmd))
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "MPLBACKEND": "Agg"})
    for line in (done.stdout + done.stderr).splitlines()[-20:]:
        log.info("  %s", line)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise PreregistrationError(f"--preregister exited with {done.returncode}: {last}")


# ---- W&B: a small run per prediction, a view like every other --------------------------------------------
def log_to_wandb(cfg: DictConfig, path: Path, prediction: dict[str, Any]) -> dict[str, Any] | None:
    """Log the prediction once as W&B run ``prediction-<hash12>`` (the study's project, group = study, config
    = the prediction); ``<hash12>.wandb.json`` beside it says it was. Never fails the study."""
    wandb_cfg = OmegaConf.select(cfg, "logger.wandb", default=None) or {}
    if not wandb_cfg.get("enabled", False):
        return None
    mode = resolve_wandb_mode(str(wandb_cfg.get("mode", "auto")))
    marker = path.with_suffix(".wandb.json")
    if mode == "disabled" or marker.exists():
        return _read_json(marker)
    name = f"prediction-{path.stem}"
    try:
        import wandb

        run = wandb.init(
            project=wandb_cfg.get("project", "datascale"), entity=wandb_cfg.get("entity"),
            group=str(cfg.study.name), name=name, id=name, job_type="prediction", config=prediction,
            mode=mode,  # type: ignore[arg-type]
            dir=str(path.parent), resume="allow",
        )  # fmt: skip
        run.summary.update({f"predicted_loss@U={r['U']}": r["loss"] for r in prediction["predictions"]})
        run.finish()
    except Exception as exc:  # W&B is a view: the prediction on disk is what counts
        log.warning("could not log the prediction to W&B (%s): %s", mode, exc)
        return None
    info = {"id": name, "project": wandb_cfg.get("project"), "group": str(cfg.study.name), "mode": mode}
    atomic_write_json(marker, info)
    return info
