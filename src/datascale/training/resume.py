"""Kill-safe training: resume checkpoints with checksums, the latest complete one found again, preemption.

A run writes ``<run_dir>/resume/step=<s>.ckpt`` (a file, or FSDP's sharded directory) every ``every_tokens``
tokens or ``every_minutes`` minutes (after an evaluation when one is due there, so the evaluation is saved
with it) and on preemption, always at an optimizer-step boundary; not after every evaluation: a short run
writes none unless it is preempted (a hard kill then costs it at most the cadence). Lightning writes the file
atomically (``fsspec`` transaction); rank 0 then writes its checksums
(``datascale.training.checkpoint_files``: only a checkpoint whose checksums match is loaded). The newest
``keep`` checkpoints are kept.

What a checkpoint restores (Lightning: model, optimizer, LR schedule position, loops, EarlyStopping and
ModelCheckpoint state; ours: the evaluation history, RNG states, ``tokens_seen``) makes a resumed run continue
exactly where it stopped: the training stream is a pure function of the step (``TrainStream.start_step``).

Preemption: SIGTERM (Lightning also sees it) or SIGUSR1/SIGUSR2 sets a flag; at the next optimizer-step
boundary every rank agrees on it, the run saves a resume checkpoint and raises :class:`Preempted`; the worker
exits with ``EXIT_PREEMPTED`` (75). A signal during evaluation or inside an accumulation window ends the run
at once (Lightning's ``SIGTERMException``) and it resumes from the previous checkpoint.
"""

from __future__ import annotations

import logging
import signal
import time
from contextlib import nullcontext
from pathlib import Path
from types import FrameType
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Checkpoint

from datascale.training.callbacks import PhaseClock
from datascale.training.checkpoint_files import (
    checksum_path,
    remove_checkpoint,
    resume_checkpoints,
    write_checksums,
)
from datascale.training.settings import CheckpointSettings

log = logging.getLogger("datascale.training")

PREEMPTION_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)


class Preempted(Exception):
    """The run saved a resume checkpoint after a preemption signal and stops; it resumes when run again."""


class PreemptionFlag:
    """Set by SIGTERM, SIGUSR1 or SIGUSR2 (handlers on the main thread); earlier handlers still run."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self._previous: dict[int, Any] = {}

    def install(self) -> PreemptionFlag:
        for sig in PREEMPTION_SIGNALS:
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: a SIGTERM still reaches Lightning's own handler
                return self
        return self

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        log.warning("received %s: saving a resume checkpoint at the next step", signal.Signals(signum).name)
        self.signal = signum
        previous = self._previous.get(signum)
        if callable(previous):
            previous(signum, frame)

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}


# ---- writing them ----------------------------------------------------------------------------------------
class ResumeCheckpoint(Checkpoint):
    """Saves resume checkpoints on the token/time cadence and on preemption.

    A :class:`~pytorch_lightning.callbacks.Checkpoint`, so Lightning runs it after EarlyStopping and the
    best-checkpoint callback: the state it saves includes this evaluation's bookkeeping.

    A checkpoint counts (its checksum file is written) only once the run's logged metrics up to it are on
    disk, so a resumed run's ``metrics.csv`` has every row. After an evaluation they are already logged; a
    save at the end of a training step is *pending* until the next batch starts (or the run stops with an
    exception: SIGTERM, :class:`Preempted`), when the loggers are flushed and the checksum written. A run
    killed in between resumes from the checkpoint before.
    """

    def __init__(
        self,
        folder: Path,
        settings: CheckpointSettings,
        batch_tokens: int,
        eval_interval_steps: int,
        flag: PreemptionFlag,
        clock: PhaseClock | None = None,
    ) -> None:
        self.folder = Path(folder)
        self.clock = clock  # checksum writes count as checkpoint time (the saves are timed by the trainer)
        self.settings = settings
        self.batch_tokens = batch_tokens
        self.eval_interval_steps = eval_interval_steps  # a step that evaluates saves after its evaluation
        self.flag = flag
        self._last_step = -1
        self._last_save_step = -1
        self._last_save_time = time.monotonic()
        self._pending: tuple[Path, int] | None = None  # saved, checksum not yet written
        self._preempted = False

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        step = trainer.global_step
        if step == self._last_step:  # inside a gradient-accumulation window: not a step boundary
            return
        self._last_step = step
        self._preempted = trainer.strategy.reduce_boolean_decision(self.flag.signal is not None, all=False)
        if self._preempted or (step % self.eval_interval_steps and self._due(step)):
            self._pending = self.save(trainer)

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        self.complete(trainer)
        if self._preempted:
            raise Preempted(f"preempted at step {trainer.global_step}: resume checkpoint saved")

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        self.complete(trainer)  # SIGTERM (Lightning's SIGTERMException) after a preemption save

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """A save due at an evaluating step waits for the evaluation (after EarlyStopping and the best
        checkpoint have seen it), so the evaluation is part of the saved state."""
        if trainer.sanity_checking or not (self._due(trainer.global_step) or self._pending):
            return
        self._pending = self.save(trainer, again=True)
        self.complete(trainer)

    def _due(self, step: int) -> bool:
        every_tokens, every_minutes = self.settings.every_tokens, self.settings.every_minutes
        tokens = (step - max(self._last_save_step, 0)) * self.batch_tokens
        by_tokens = every_tokens is not None and tokens >= every_tokens
        minutes = (time.monotonic() - self._last_save_time) / 60
        by_time = every_minutes is not None and minutes >= every_minutes
        return by_tokens or by_time

    def save(self, trainer: pl.Trainer, again: bool = False) -> tuple[Path, int] | None:
        """Write ``step=<s>.ckpt`` (every rank takes part); its checksum comes with :meth:`complete`.

        ``again``: also when this step was saved already (a preemption save followed by the step's
        evaluation after the resume); its old checksum goes first, so a killed overwrite is never loaded.
        """
        step = trainer.global_step
        if step == self._last_save_step and not again:
            return self._pending
        path = self.folder / f"step={step:08d}.ckpt"
        if trainer.is_global_zero:
            checksum_path(path).unlink(missing_ok=True)
        trainer.save_checkpoint(path, weights_only=False)  # collective; Lightning's barrier ends it
        self._last_save_step, self._last_save_time = step, time.monotonic()
        return path, step

    def complete(self, trainer: pl.Trainer) -> None:
        """Flush the loggers, then write the pending checkpoint's checksums and prune old ones (rank 0)."""
        if self._pending is None:
            return
        path, step = self._pending
        self._pending = None
        if trainer.is_global_zero:
            with self.clock.timing() if self.clock else nullcontext():
                for logger in trainer.loggers:
                    logger.save()
                write_checksums(path, step, step * self.batch_tokens)
                for _, old in resume_checkpoints(self.folder)[self.settings.keep :]:
                    remove_checkpoint(old)
