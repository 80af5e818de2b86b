"""Callbacks of a training run: a step-based progress bar and the time spent in training steps."""

from __future__ import annotations

import math
import time
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import RichProgressBar, TQDMProgressBar


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


class TrainThroughput(pl.Callback):
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

    def tokens_per_s(self, batch_tokens: int) -> float:
        """Tokens per second when each timed batch holds ``batch_tokens`` (no gradient accumulation)."""
        return self.rate(self.batches * batch_tokens)

    def rate(self, tokens: int) -> float:
        """``tokens`` processed in the timed batches, per second (micro-batches of one step all count)."""
        return tokens / self.seconds if self.seconds else math.nan
