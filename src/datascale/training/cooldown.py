"""The cooldown phase of ``schedule=wsd_cooldown``: anneal a run at the length early stopping chose.

During the stable phase (peak LR until early stopping or the token cap) :class:`StableCheckpoints` saves the
model at every evaluation and keeps those a cooldown may still start from. Then the run continues from the
chosen one (weights, optimizer moments, data position: ``WarmupStableCooldown.cooldown_for``) for
``Cooldown.steps`` updates while the LR falls to its floor, is validated once, and the annealed model is saved
as ``checkpoints/cooled-step=<n>.ckpt``: that model is the one tested and reported (Hägele et al. 2024).

It trains on the data that follows its start step in the run's stream (the stream is a pure function of the
step), exactly as a run told to anneal there would. Nothing of it is written as a resume checkpoint: a run
preempted during its cooldown starts it again after replaying the (deterministic) stable phase from its last
resume checkpoint.
"""

from __future__ import annotations

import logging
import re
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Checkpoint, ModelCheckpoint

from datascale.training.checkpoint_files import remove_checkpoint
from datascale.training.datamodule import TokenDataModule
from datascale.training.module import GPTLightningModule
from datascale.training.schedule import Cooldown, WarmupStableCooldown

log = logging.getLogger("datascale.training")

#: Lightning warns that the stable phase's EarlyStopping and ModelCheckpoint states in the best checkpoint
#: have no callback to go to: the cooldown has neither, on purpose.
CALLBACK_STATE_WARNING = r".*callbacks used to create the checkpoint need to be provided.*"


STABLE_PREFIX = "stable-step="


def checkpoint_step_of(path: str | Path) -> int:
    """The step in a checkpoint's name (``best-step=48.ckpt``, ``stable-step=40.ckpt``)."""
    match = re.search(r"step=(\d+)", Path(path).name)
    if match is None:
        raise RuntimeError(f"no step in checkpoint name {str(path)!r}")
    return int(match.group(1))


def stable_path(folder: Path, step: int) -> Path:
    """The stable phase's checkpoint after ``step`` updates."""
    return Path(folder) / f"{STABLE_PREFIX}{step}.ckpt"


def stable_steps(folder: Path) -> list[int]:
    """The steps of the stable checkpoints kept in ``folder``, ascending."""
    return sorted(checkpoint_step_of(p) for p in Path(folder).glob(f"{STABLE_PREFIX}*.ckpt"))


class StableCheckpoints(Checkpoint):
    """Saves the stable phase's model after every evaluation (``stable-step=<s>.ckpt``) and removes those
    no cooldown can start from any more: the best step only moves forward, so neither does the start.

    A :class:`Checkpoint` listed after the best-checkpoint callback: Lightning runs it after that one has
    seen the evaluation."""

    def __init__(self, folder: Path, schedule: WarmupStableCooldown, best: ModelCheckpoint) -> None:
        self.folder, self.schedule, self.best = Path(folder), schedule, best

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit":
            return
        trainer.save_checkpoint(stable_path(self.folder, trainer.global_step))
        if not (trainer.is_global_zero and self.best.best_model_path):
            return
        saved = stable_steps(self.folder)
        start = self.schedule.cooldown_for(checkpoint_step_of(self.best.best_model_path), saved)
        for step in saved:
            if step < start.from_step:
                remove_checkpoint(stable_path(self.folder, step))


@dataclass(frozen=True)
class Cooled:
    """What the cooldown produced: its trainer (tests the annealed model), checkpoint, evaluation, time."""

    trainer: pl.Trainer
    checkpoint: str
    evaluation: dict[str, Any]
    seconds: float


def cool_down(
    make_trainer: Callable[[Cooldown], pl.Trainer],
    module: GPTLightningModule,
    datamodule: TokenDataModule,
    best_path: str,
    cooldown: Cooldown,
    checkpoint_dir: Path,
) -> Cooled:
    """Train ``cooldown.steps`` annealing updates from ``best_path``, validate, save the annealed model."""
    module.cooldown = cooldown
    trainer = make_trainer(cooldown)
    log.info("cooldown: %d steps from step %d", cooldown.steps, cooldown.from_step)
    started = time.time()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=CALLBACK_STATE_WARNING)
        trainer.fit(module, datamodule=datamodule, ckpt_path=best_path, weights_only=True)
    seconds = time.time() - started
    if trainer.interrupted:
        raise KeyboardInterrupt("the cooldown was interrupted")
    if trainer.global_step != cooldown.end_step:
        raise RuntimeError(f"the cooldown stopped at step {trainer.global_step}, not {cooldown.end_step}")
    trainer.validate(module, datamodule=datamodule, verbose=False)
    path = checkpoint_dir / f"cooled-step={cooldown.end_step}.ckpt"
    trainer.save_checkpoint(path)
    return Cooled(trainer, str(path), module.eval_history[-1], seconds)
