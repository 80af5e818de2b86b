"""Callbacks of a training run: a step-based progress bar, the time spent in training steps, evaluation and
checkpoint writes, and a stop on a non-finite training loss."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import RichProgressBar, TQDMProgressBar

from datascale.training.machine_load import machine_busy_seconds


class StepProgressBar(TQDMProgressBar):
    """tqdm bar whose total is max_steps (the stream is infinite, so Lightning's own total is unknown)."""

    @property
    def total_train_batches(self) -> int | float:
        return self.trainer.max_steps


def progress_bar(kind: str, refresh_rate: int) -> pl.Callback:
    """``rich`` or ``tqdm`` (step-based) progress bar."""
    if kind == "rich":
        return RichProgressBar(refresh_rate=refresh_rate)
    return StepProgressBar(refresh_rate=refresh_rate)


class FitState(pl.Callback):
    """A callback whose state is saved in resume checkpoints and restored when a run resumes, but not when
    ``trainer.test(ckpt_path=...)`` loads the best checkpoint afterwards: Lightning restores callback states
    then too, which rewound the clocks to the best step (step_tokens_per_s and MFU read high whenever the best
    step was not the last)."""

    _fit_ended = False

    def on_fit_end(self, *args: Any) -> None:
        self._fit_ended = True

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if not self._fit_ended:
            self.restore(state_dict)

    def restore(self, state_dict: dict[str, Any]) -> None:
        raise NotImplementedError


class TrainThroughput(FitState):
    """Time spent in training batches only (evaluation excluded), for tokens/s of the training step."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.batches = 0
        self._t0 = 0.0

    def on_train_batch_start(self, *args: Any) -> None:
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, *args: Any) -> None:
        self.seconds += time.perf_counter() - self._t0
        self.batches += 1

    def state_dict(self) -> dict[str, Any]:
        """Saved in resume checkpoints, so a resumed run's training time counts every segment."""
        return {"seconds": self.seconds, "batches": self.batches}

    def restore(self, state_dict: dict[str, Any]) -> None:
        self.seconds, self.batches = float(state_dict["seconds"]), int(state_dict["batches"])

    def tokens_per_s(self, batch_tokens: int) -> float:
        """Tokens per second when each timed batch holds ``batch_tokens`` (no gradient accumulation)."""
        return self.rate(self.batches * batch_tokens)

    def rate(self, tokens: int) -> float:
        """``tokens`` processed in the timed batches, per second (micro-batches of one step all count)."""
        return tokens / self.seconds if self.seconds else math.nan


class PhaseClock(FitState):
    """Where a run's time goes besides training steps: evaluation loops (validation and test) and checkpoint
    writes (best and resume, checksums included), and when the first training step began and the last one
    ended, for the record's ``eval_time_s``, ``checkpoint_time_s``, ``startup_s`` and ``teardown_s``.

    Evaluation and checkpoint seconds are saved in resume checkpoints (a resumed run sums its attempts);
    start-up and teardown are the last attempt's. :meth:`attach` times the trainer's checkpoint writes.
    """

    def __init__(self) -> None:
        self.eval_s = 0.0
        self.checkpoint_s = 0.0
        self.first_step_at: float | None = None
        self.first_step_cpu: float | None = None
        self.last_step_end: float | None = None
        self._at_last_step = (0.0, 0.0)  # (eval_s, checkpoint_s) when the last step ended
        self._eval_started = 0.0

    def attach(self, trainer: pl.Trainer) -> None:
        """Time every ``trainer.save_checkpoint`` (ModelCheckpoint's and the resume checkpoints')."""
        save = trainer.save_checkpoint

        def timed_save(*args: Any, **kwargs: Any) -> None:
            with self.timing():
                save(*args, **kwargs)

        trainer.save_checkpoint = timed_save  # type: ignore[method-assign]

    @contextmanager
    def timing(self) -> Iterator[None]:
        """Count the block as checkpoint time."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self.checkpoint_s += time.perf_counter() - started

    def on_train_batch_start(self, *args: Any) -> None:
        if self.first_step_at is None:
            self.first_step_at = time.time()
            self.first_step_cpu = time.process_time()  # CPU seconds of this process (all threads) so far

    def on_train_batch_end(self, *args: Any) -> None:
        self.last_step_end = time.time()
        self._at_last_step = (self.eval_s, self.checkpoint_s)

    def _start(self) -> None:
        self._eval_started = time.perf_counter()

    def _end(self) -> None:
        self.eval_s += time.perf_counter() - self._eval_started

    def on_validation_start(self, *args: Any) -> None:
        self._start()

    def on_test_start(self, *args: Any) -> None:
        self._start()

    def on_validation_end(self, *args: Any) -> None:
        self._end()

    def on_test_end(self, *args: Any) -> None:
        self._end()

    def since_last_step(self) -> tuple[float, float]:
        """(evaluation, checkpoint) seconds after the last training step ended."""
        return self.eval_s - self._at_last_step[0], self.checkpoint_s - self._at_last_step[1]

    def state_dict(self) -> dict[str, Any]:
        return {"eval_s": self.eval_s, "checkpoint_s": self.checkpoint_s}

    def restore(self, state_dict: dict[str, Any]) -> None:
        self.eval_s, self.checkpoint_s = float(state_dict["eval_s"]), float(state_dict["checkpoint_s"])


class ThreadGovernor(pl.Callback):
    """A packed run's torch threads follow the machine: all usable cores while nothing else uses them (a
    packed study's last run, alone), one as soon as something does (another run, another user).

    Why: a multi-threaded run stalls whenever it shares a core (every matmul waits for its descheduled
    thread), a one-thread run keeps its fair share; but one thread leaves the other cores idle once a study's
    last run is alone. Every ``every`` optimizer steps the CPU time the rest of the machine used over the
    interval (``/proc/stat`` less this process's own) decides: below ``quiet`` cores twice in a row, all
    ``most`` threads; above ``busy`` cores, ``base`` again. ``mean_threads`` (time-weighted) goes into the
    record; the thread count changes float summation order only (like the world size), not what is computed.
    """

    def __init__(
        self,
        base: int,
        most: int,
        every: int = 10,
        quiet: float = 0.3,
        busy: float = 0.6,
        sample: Callable[[], float | None] = machine_busy_seconds,
    ) -> None:
        self.base, self.most, self.every = base, most, every
        self.quiet, self.busy, self.sample = quiet, busy, sample
        self.threads = base
        self.changes: list[tuple[int, int]] = []  # (step, threads) after each change
        self._last: tuple[float, float, float] | None = None  # (wall, machine busy s, own CPU s)
        self._quiet_checks = 0
        self._checked_step = -1
        self._thread_seconds = 0.0
        self._seconds = 0.0

    def others(self) -> float | None:
        """Cores the rest of the machine kept busy since the last call (None on the first or without
        ``/proc/stat``)."""
        busy, now, own = self.sample(), time.monotonic(), time.process_time()
        last, self._last = self._last, (None if busy is None else (now, busy, own))
        if busy is None or last is None or now <= last[0]:
            return None
        self._thread_seconds += self.threads * (now - last[0])
        self._seconds += now - last[0]
        return max(0.0, (busy - last[1] - (own - last[2])) / (now - last[0]))

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        step = trainer.global_step
        if step % self.every or step == self._checked_step:  # not a check step, or a later micro-batch of it
            return
        self._checked_step = step
        others = self.others()
        if others is None:
            return
        self._quiet_checks = self._quiet_checks + 1 if others < self.quiet else 0
        want = self.base if others > self.busy else self.most if self._quiet_checks >= 2 else self.threads
        if want != self.threads:
            torch.set_num_threads(want)
            self.threads = want
            self.changes.append((trainer.global_step, want))

    @property
    def mean_threads(self) -> float:
        return self._thread_seconds / self._seconds if self._seconds else float(self.threads)


class NonFiniteLossError(FloatingPointError):
    """The training (or validation) loss became NaN or infinite: the run stops, its record says at which
    step, and the launcher does not retry it (the same seed diverges again)."""

    def __init__(self, step: int, loss: float, what: str = "training loss") -> None:
        super().__init__(f"non-finite {what} {loss} at step {step}")
        self.step = step


class StopOnNonFiniteLoss(pl.Callback):
    """Checks every micro-batch's loss on every rank (Lightning's EarlyStopping checks only the validation
    loss); all ranks agree, so they stop together."""

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, *args: Any
    ) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        finite = loss is None or bool(torch.isfinite(loss.detach()).all())
        if not trainer.strategy.reduce_boolean_decision(finite, all=True):
            value = float("nan") if loss is None else float(loss.detach().float().mean())
            raise NonFiniteLossError(trainer.global_step, value)
