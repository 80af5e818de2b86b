"""Experiment tracking: W&B through Lightning's WandbLogger, plus ``<run_dir>/metrics.csv`` (always).

Rules (docs/design.md; each one avoids a known Lightning/W&B failure): one W&B run per worker process group,
id = run id (so a re-run of the same config resumes the same W&B run); only rank 0 talks to W&B and only
through the logger (metrics via ``self.log``, never ``wandb.log``); every metric is plotted against
``tokens_seen``; the run is always finished, with exit code 1 when the worker failed, so a crashed job never
shows as "finished". W&B is a view: the record and metrics.csv are the source of truth, so the worker runs the
same with W&B offline or disabled.
"""

from __future__ import annotations

import csv
import logging
import math
import os
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from pytorch_lightning.loggers import CSVLogger, Logger, WandbLogger
from pytorch_lightning.utilities import rank_zero_only

from datascale.wandb_mode import WANDB_MODES as WANDB_MODES  # re-exported: its torch-free home
from datascale.wandb_mode import resolve_wandb_mode

log = logging.getLogger("datascale.training")

METRICS_FILENAME = "metrics.csv"


def axis_tags(axes: Mapping[str, Any]) -> list[str]:
    """W&B tags ``k=v`` (at most 64 characters each, W&B's limit)."""
    return [f"{k}={v}"[:64] for k, v in axes.items()]


def build_loggers(
    logger_cfg: Mapping[str, Any],
    run_dir: Path,
    run_id: str,
    study: str,
    axes: Mapping[str, Any],
    config: dict[str, Any],
) -> tuple[list[Logger], WandbLogger | None]:
    """``[CSVLogger -> run_dir/metrics.csv, WandbLogger?]``; the second value is the W&B logger or None."""
    loggers: list[Logger] = [CSVLogger(save_dir=str(run_dir), name="", version="")]
    wandb_cfg = dict(logger_cfg.get("wandb") or {})
    if not wandb_cfg.get("enabled", False):
        return loggers, None
    mode = resolve_wandb_mode(str(wandb_cfg.get("mode", "auto")))
    wandb_logger = StartedWandbLogger(
        name=run_id,
        id=run_id,
        save_dir=str(run_dir),
        project=wandb_cfg.get("project", "datascale"),
        entity=wandb_cfg.get("entity"),
        group=study,
        job_type="train",
        tags=axis_tags(axes),
        config=config,
        mode=mode,
        resume="allow",
        log_model=False,
    )
    loggers.append(wandb_logger)
    return loggers, wandb_logger


def set_aside_metrics(run_dir: Path, resumed_step: int | None) -> None:
    """Before a new attempt's logger starts (it would delete the file): keep the earlier ``metrics.csv``.

    Resuming at step ``s``: it becomes ``metrics.part-<k>.csv`` (:func:`merge_metrics` joins the parts when
    the run ends). Starting afresh: it is kept as ``metrics.attempt-<k>.csv`` (an earlier attempt's curve).
    """
    path = Path(run_dir) / METRICS_FILENAME
    if not path.is_file():
        return
    kind = "part" if resumed_step is not None else "attempt"
    k = 1 + len(list(Path(run_dir).glob(f"metrics.{kind}-*.csv")))
    target = path.with_name(f"metrics.{kind}-{k}.csv")
    path.rename(target)
    if resumed_step is not None:
        (target.with_suffix(".resumed_at")).write_text(str(resumed_step))


def stable_rows(rows: Iterable[dict[str, str]]) -> list[dict[str, str]]:
    """The rows before the step first goes back: a cooldown (``schedule=wsd_cooldown``) logs again from its
    start step, and an attempt killed during it is replayed whole (``datascale.training.cooldown``)."""
    out: list[dict[str, str]] = []
    for row in rows:
        if out and int(row.get("step") or 0) < int(out[-1].get("step") or 0):
            break
        out.append(row)
    return out


def merge_metrics(run_dir: Path) -> None:
    """One ``metrics.csv`` for a resumed run: each earlier part's rows before the step the next part resumed
    from, then the last part (rows after a resume point were replayed exactly and logged again)."""
    run_dir = Path(run_dir)
    parts = sorted(run_dir.glob("metrics.part-*.csv"), key=lambda p: int(p.stem.rsplit("-", 1)[1]))
    if not parts:
        return
    rows: list[dict[str, str]] = []
    for part in parts:
        resumed_at = int(part.with_suffix(".resumed_at").read_text())
        with open(part, newline="") as fh:
            # Lightning logs the update that makes global step s+1 as row step s
            rows += [r for r in stable_rows(csv.DictReader(fh)) if int(r.get("step") or 0) < resumed_at]
    current = run_dir / METRICS_FILENAME
    with open(current, newline="") as fh:
        rows += list(csv.DictReader(fh))
    header = sorted(set().union(*rows))
    tmp = current.with_suffix(".csv.tmp")
    with open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=header)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, current)
    for part in parts:
        part.with_suffix(".resumed_at").unlink()
        part.unlink()


def wandb_mode_of(wandb_logger: WandbLogger | None) -> str:
    if wandb_logger is None:
        return "disabled"
    return str(wandb_logger._wandb_init.get("mode", "offline"))


@rank_zero_only
def define_token_axis(wandb_logger: WandbLogger | None) -> None:
    """Plot every metric against ``tokens_seen`` (after Lightning's own ``trainer/global_step``
    definition)."""
    if wandb_logger is None or wandb_mode_of(wandb_logger) == "disabled":
        return
    run = wandb_logger.experiment  # creating the run makes Lightning define its step metric first
    run.define_metric("tokens_seen")
    run.define_metric("*", step_metric="tokens_seen", step_sync=True)


class StartedWandbLogger(WandbLogger):
    """Lightning's WandbLogger whose run may be created in another thread (:class:`WandbStart`): whoever asks
    for the run first creates it, the other waits, so training starts while ``wandb.init`` runs and blocks
    only if it logs before the run exists."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._start_lock = threading.Lock()

    @property
    def experiment(self) -> Any:
        with self._start_lock:
            return WandbLogger.experiment.fget(self)  # type: ignore[attr-defined]


class WandbStart:
    """The W&B run created in a thread (:func:`define_token_axis`: ``wandb.init``, about a second offline,
    mostly waiting for its service process), so the worker's set-up and first steps go on meanwhile (the
    logger's lock makes a log call wait for it). :meth:`wait` joins it and re-raises what it raised."""

    def __init__(self, wandb_logger: WandbLogger | None) -> None:
        self.error: BaseException | None = None
        self.thread: threading.Thread | None = None
        if wandb_logger is None or wandb_mode_of(wandb_logger) == "disabled":
            return
        self.thread = threading.Thread(
            target=self._start, args=(wandb_logger,), name="wandb-init", daemon=True
        )
        self.thread.start()

    def _start(self, wandb_logger: WandbLogger) -> None:
        try:
            define_token_axis(wandb_logger)
        except BaseException as exc:  # handed to the main thread by wait()
            self.error = exc

    def join(self) -> None:
        if self.thread is not None:
            self.thread.join()
            self.thread = None

    def wait(self) -> None:
        self.join()
        if self.error is not None:
            raise self.error


def wandb_info(wandb_logger: WandbLogger | None, run_dir: Path) -> dict[str, Any]:
    """What the record says about the W&B run (ids and where the local files are)."""
    if wandb_logger is None:
        return {"mode": "disabled"}
    init = wandb_logger._wandb_init
    return {
        "id": init.get("id"),
        "project": init.get("project"),
        "entity": init.get("entity"),
        "group": init.get("group"),
        "mode": wandb_mode_of(wandb_logger),
        "dir": str(run_dir / "wandb"),
    }


#: Record fields copied into the W&B run summary (so the W&B table matches the records).
SUMMARY_FIELDS = (
    "status",
    "best_val_loss",
    "final_val_loss",
    "test_loss",
    "test_bpb_mean",
    "unique_tokens",
    "tokens_seen",
    "epochs",
    "steps",
    "planned_steps",
    "best_step",
    "tokens_at_best",
    "epochs_at_best",
    "converged",
    "stop_reason",
    "objective",
    "loss_unit",
    "params_total",
    "params_non_embedding",
    "wall_time_s",
    "train_time_s",
    "tokens_per_s",
    "step_tokens_per_s",
    "model_flops_per_token",
    "achieved_flops_per_s",
    "peak_flops_per_s",
    "mfu",
    "peak_memory_mib",
    "device_name",
    "world_size",
    "num_nodes",
    "grad_accumulation",
    "strategy",
    "precision",
    "code_version",
    "corpus_hash",
    "tokenizer_hash",
    "subset_hash",
    "val_loss_best",
    "test_loss_by_domain",
    "test_bpb",
)


def _finite_or_none(value: Any) -> Any:
    return None if isinstance(value, float) and not math.isfinite(value) else value


@rank_zero_only
def finish_wandb(
    wandb_logger: WandbLogger | None,
    exit_code: int,
    record: dict[str, Any] | None = None,
    record_path: Path | None = None,
    artifacts: Any = None,
    log_artifacts: bool = True,
) -> None:
    """Summary metrics, artifact lineage (data manifests in, record.json out), then ``finish(exit_code)``.

    Called from the worker's ``finally``. Errors while logging extras are logged and swallowed so that
    ``finish`` always runs; a disabled or never-started run is left alone.
    """
    if wandb_logger is None or wandb_mode_of(wandb_logger) == "disabled" or wandb_logger._experiment is None:
        return
    run = wandb_logger.experiment
    try:
        if record is not None:
            # per-domain test values are already in the summary as the last logged test/<domain>/* metrics
            run.summary.update({k: _finite_or_none(record[k]) for k in SUMMARY_FIELDS if k in record})
        if log_artifacts:
            _log_lineage(run, wandb_logger, record_path, artifacts)
    except Exception:  # tracking extras must never turn a finished run into a crash
        log.exception("W&B summary/artifacts failed (the record is unaffected)")
    finally:
        run.finish(exit_code=exit_code)


def _log_lineage(run: Any, wandb_logger: WandbLogger, record_path: Path | None, artifacts: Any) -> None:
    import wandb

    if artifacts is not None:
        if wandb_mode_of(wandb_logger) == "online":  # W&B cannot declare inputs offline ("use_artifact")
            data = wandb.Artifact(
                f"data-{artifacts.subset_hash[:16]}",
                type="dataset",
                metadata={
                    "corpus_hash": artifacts.corpus_hash,
                    "tokenizer_hash": artifacts.tokenizer_hash,
                    "subset_hash": artifacts.subset_hash,
                    "unique_tokens": artifacts.unique_tokens,
                    "vocab_size": artifacts.vocab_size,
                },
            )
            data.add_file(str(artifacts.subset_manifest), name="subset_manifest.json")
            data.add_file(str(artifacts.corpus_manifest), name="corpus_manifest.json")
            run.use_artifact(data)
        else:
            log.info(
                "W&B %s: data artifacts not declared as inputs (hashes are in the config and summary)",
                wandb_mode_of(wandb_logger),
            )
    if record_path is not None and Path(record_path).exists():
        out = wandb.Artifact(f"record-{run.id}", type="run-record")
        out.add_file(str(record_path), name="record.json")
        run.log_artifact(out)
