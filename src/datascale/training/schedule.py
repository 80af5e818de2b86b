"""Learning-rate schedules: warmup + stable + a cooldown from the early-stopping point (default), or a
schedule planned over the token cap (warmup + cosine, warmup-stable-decay).

``wsd_cooldown`` (the default; Hägele et al. 2024): warmup, then the peak LR until early stopping picks the
run's length (its best checkpoint), then the run continues *from that checkpoint* with the LR decayed to
``min_lr_ratio`` over ``cooldown_fraction`` x its steps; the reported loss is that annealed model's. Every
run of a study is so compared at the same schedule position (fully decayed) at the length its own data
chose. Under the planned schedules the best checkpoint sits wherever early stopping found it on a cosine
planned for the token cap (23% to 100% of the decay in the old default study, varying with U), so a run's
loss mixed "more data" with "how far the LR had decayed" (Porian et al. 2024; Tissue et al. 2024).

Learning curves (``RunRecord.val_curve``): under a cosine schedule the loss at an intermediate token count is
*not* the loss of a run trained to that count (its learning rate has not decayed yet: Hoffmann et al. 2022),
so intermediate points of one run are not (D, loss) points of a scaling law. Under ``wsd`` (Hägele et al.
2024, "Scaling Laws and Compute-Optimal Training Beyond Fixed Training Durations") the learning rate stays
at its peak until the last ``decay_fraction`` of the planned steps: intermediate points are those of the
stable phase, a consistent (if pessimistic) curve, and the decayed end is the run's final point.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from datascale.config_errors import require, require_choice, require_in_range

if TYPE_CHECKING:  # the Hydra job instantiates this leaf to validate it and must not import torch
    import torch
    from torch.optim.lr_scheduler import LambdaLR


@dataclass
class WarmupCosine:
    """Hydra leaf ``conf/schedule/warmup_cosine.yaml``."""

    min_lr_ratio: float = 0.1

    #: Whether the run is annealed from its early-stopping point after training (``WarmupStableCooldown``).
    cools_down: ClassVar[bool] = False

    def __post_init__(self) -> None:
        require_in_range("min_lr_ratio", self.min_lr_ratio, 0.0, 1.0)

    def factor(self, step: int, warmup_steps: int, total_steps: int) -> float:
        """LR multiplier for the update with 0-based index ``step``.

        Warmup reaches 1.0 at update ``warmup_steps - 1``; the cosine reaches ``min_lr_ratio`` at update
        ``total_steps - 1`` (the last planned update) and stays there.
        """
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        decay_steps = total_steps - 1 - warmup_steps
        progress = 1.0 if decay_steps <= 0 else min(1.0, (step - warmup_steps) / decay_steps)
        return self.min_lr_ratio + (1.0 - self.min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

    def decay_progress(self, steps: int, warmup_steps: int, total_steps: int) -> float:
        """How much of the decay the checkpoint after ``steps`` updates has had: 0 at the peak, 1 at the end
        (the record's ``schedule_position``)."""
        if steps <= warmup_steps:
            return 0.0
        decay_steps = total_steps - 1 - warmup_steps
        return 1.0 if decay_steps <= 0 else min(1.0, (steps - 1 - warmup_steps) / decay_steps)

    def build(
        self,
        optimizer: torch.optim.Optimizer,
        warmup_steps: int,
        total_steps: int,
        cooldown: Cooldown | None = None,
    ) -> LambdaLR:
        """``LambdaLR`` over the updates; with a ``cooldown`` its updates follow :meth:`cooldown_factor`."""
        require(
            0 <= warmup_steps <= total_steps,
            "warmup_steps",
            warmup_steps,
            f"must be in [0, planned steps={total_steps}]",
        )
        from torch.optim.lr_scheduler import LambdaLR

        def factor(step: int) -> float:
            if cooldown is not None and step >= cooldown.from_step:
                return self.cooldown_factor(step, cooldown)
            return self.factor(step, warmup_steps, total_steps)

        return LambdaLR(optimizer, factor)

    def cooldown_factor(self, step: int, cooldown: Cooldown) -> float:
        raise NotImplementedError(f"{type(self).__name__} has no cooldown (schedule=wsd_cooldown has)")


@dataclass
class WarmupStableDecay(WarmupCosine):
    """Hydra leaf ``conf/schedule/wsd.yaml``: linear warmup, constant peak, then a linear decay to
    ``min_lr_ratio`` over the last ``decay_fraction`` of the planned steps."""

    decay_fraction: float = 0.2

    def __post_init__(self) -> None:
        super().__post_init__()
        require_in_range("decay_fraction", self.decay_fraction, 0.0, 1.0)

    def factor(self, step: int, warmup_steps: int, total_steps: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        decay_steps = max(1, round(self.decay_fraction * total_steps))
        start = total_steps - decay_steps
        if step < start:
            return 1.0
        progress = min(1.0, (step - start + 1) / decay_steps)
        return 1.0 - (1.0 - self.min_lr_ratio) * progress

    def decay_progress(self, steps: int, warmup_steps: int, total_steps: int) -> float:
        decay_steps = max(1, round(self.decay_fraction * total_steps))
        return min(1.0, max(0.0, (steps - (total_steps - decay_steps)) / decay_steps))


@dataclass(frozen=True)
class Cooldown:
    """A run's cooldown: ``steps`` updates from the checkpoint after ``from_step`` updates."""

    from_step: int
    steps: int

    @property
    def end_step(self) -> int:
        return self.from_step + self.steps


COOLDOWN_SHAPES = ("linear", "sqrt")
COOLDOWN_ANCHORS = ("end_at_best", "start_at_best")


@dataclass
class WarmupStableCooldown(WarmupCosine):
    """Hydra leaf ``conf/schedule/wsd_cooldown.yaml``: linear warmup, the peak LR while early stopping
    searches for the run's length, then a cooldown from the best checkpoint (see the module docstring)."""

    min_lr_ratio: float = 0.0
    cooldown_fraction: float = 0.2
    """Cooldown length as a fraction of the best checkpoint's steps (Hägele et al.: 10-20% match cosine)."""
    shape: str = "sqrt"
    """How the LR falls to ``min_lr_ratio``: linear | sqrt (1 - sqrt(progress), Hägele et al.'s better)."""
    min_cooldown_steps: int = 4
    """Fewest cooldown updates, for runs whose best checkpoint comes after a few dozen steps."""
    anchor: str = "end_at_best"
    """end_at_best: the cooldown *ends* at the best step, starting from the stable checkpoint of the latest
    evaluation at or before ``best - cooldown`` (the annealed run has the length early stopping chose, and no
    more passes over a small subset than the best checkpoint had) | start_at_best: it starts there (the run
    trains ``cooldown_fraction`` longer than early stopping chose)."""

    cools_down: ClassVar[bool] = True

    def __post_init__(self) -> None:
        super().__post_init__()
        require(
            isinstance(self.cooldown_fraction, int | float) and 0.0 < self.cooldown_fraction <= 1.0,
            "schedule.cooldown_fraction",
            self.cooldown_fraction,
            "must be in (0, 1]",
        )
        require_choice("schedule.shape", self.shape, COOLDOWN_SHAPES)
        require_choice("schedule.anchor", self.anchor, COOLDOWN_ANCHORS)
        require(
            isinstance(self.min_cooldown_steps, int) and self.min_cooldown_steps >= 1,
            "schedule.min_cooldown_steps",
            self.min_cooldown_steps,
            "must be an integer >= 1",
        )

    def factor(self, step: int, warmup_steps: int, total_steps: int) -> float:
        """Warmup, then the peak LR (the cooldown starts from whichever checkpoint early stopping picks)."""
        return (step + 1) / warmup_steps if step < warmup_steps else 1.0

    def decay_progress(self, steps: int, warmup_steps: int, total_steps: int) -> float:
        return 0.0

    def cooldown_length(self, best_step: int) -> int:
        return max(self.min_cooldown_steps, round(self.cooldown_fraction * best_step))

    def cooldown_for(self, best_step: int, stable_steps: Iterable[int] = ()) -> Cooldown:
        """The cooldown of a run whose best checkpoint came after ``best_step`` updates, given the steps of
        the stable checkpoints it may start from (``end_at_best``). Without one at or before
        ``best - cooldown_length`` the earliest one is used; without any before the best (the first
        evaluation was the best) the cooldown starts at the best."""
        length = self.cooldown_length(best_step)
        earlier = sorted(s for s in stable_steps if s < best_step)
        if self.anchor == "start_at_best" or not earlier:
            return Cooldown(from_step=best_step, steps=length)
        start = max((s for s in earlier if s <= best_step - length), default=earlier[0])
        return Cooldown(from_step=start, steps=best_step - start)

    def cooldown_factor(self, step: int, cooldown: Cooldown) -> float:
        """Update ``from_step + i`` of ``n``: 1 - (1 - min) * f(i / n), f = identity or sqrt; the first
        cooldown update is at the peak, the last at ``1 - (1 - min) f((n-1)/n)``."""
        progress = min(1.0, (step - cooldown.from_step) / cooldown.steps)
        shaped = math.sqrt(progress) if self.shape == "sqrt" else progress
        return 1.0 - (1.0 - self.min_lr_ratio) * shaped
