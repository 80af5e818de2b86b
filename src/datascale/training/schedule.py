"""Learning-rate schedules over the planned steps: warmup + cosine (default) or warmup-stable-decay.

The planned steps are those of the token cap (see protocol.py), so every run on the same U follows the same
schedule whether or not early stopping ends it sooner.

Learning curves (``RunRecord.val_curve``): under a cosine schedule the loss at an intermediate token count is
*not* the loss of a run trained to that count (its learning rate has not decayed yet: Hoffmann et al. 2022),
so intermediate points of one run are not (D, loss) points of a scaling law. Under ``wsd`` (Hägele et al.
2024, "Scaling Laws and Compute-Optimal Training Beyond Fixed Training Durations") the learning rate stays
at its peak until the last ``decay_fraction`` of the planned steps: intermediate points are those of the
stable phase, a consistent (if pessimistic) curve, and the decayed end is the run's final point.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from datascale.config_errors import require, require_in_range

if TYPE_CHECKING:  # the Hydra job instantiates this leaf to validate it and must not import torch
    import torch
    from torch.optim.lr_scheduler import LambdaLR


@dataclass
class WarmupCosine:
    """Hydra leaf ``conf/schedule/warmup_cosine.yaml``."""

    min_lr_ratio: float = 0.1

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

    def build(self, optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int) -> LambdaLR:
        require(
            0 <= warmup_steps <= total_steps,
            "warmup_steps",
            warmup_steps,
            f"must be in [0, planned steps={total_steps}]",
        )
        from torch.optim.lr_scheduler import LambdaLR

        return LambdaLR(optimizer, lambda step: self.factor(step, warmup_steps, total_steps))


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
