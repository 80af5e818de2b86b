"""The pretraining objective (Hydra ``objective`` group) and the downstream fine-tuning budget (``finetune``).

Torch-free leaves, so the Hydra job validates them before any compute. ``clm`` is today's causal
next-token loss; ``mlm`` is BERT-style: the same blocks with bidirectional attention, ``mask_rate`` of the
tokens selected, of those ``replace_mask`` replaced by the mask token, ``replace_random`` by a random
token and the rest kept, the loss on the selected tokens only. Held-out MLM losses use one fixed masking
drawn from ``eval_seed``, so runs are comparable (the torch side is :mod:`datascale.training.mlm`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from datascale.config_errors import require, require_in_range, require_positive_int

OBJECTIVES = ("clm", "mlm")
FINETUNE_MODES = ("probe", "finetune")


@dataclass
class Objective:
    """Hydra leaf ``conf/objective/{clm,mlm}.yaml``."""

    name: str = "clm"
    """``clm`` (causal next-token) or ``mlm`` (masked tokens, bidirectional attention)."""
    mask_rate: float = 0.15
    """MLM: fraction of tokens selected for the loss."""
    replace_mask: float = 0.8
    """MLM: of the selected tokens, the share replaced by the mask token ..."""
    replace_random: float = 0.1
    """... the share replaced by a uniformly random token (the rest keep their token)."""
    eval_seed: int = 1234
    """MLM: seed of the fixed held-out masking (the same positions and replacements in every run)."""

    def __post_init__(self) -> None:
        require(self.name in OBJECTIVES, "name", self.name, f"must be one of {OBJECTIVES}")
        require_in_range("mask_rate", self.mask_rate, 0.01, 0.9)
        require_in_range("replace_mask", self.replace_mask, 0.0, 1.0)
        require_in_range("replace_random", self.replace_random, 0.0, 1.0)
        require(
            self.replace_mask + self.replace_random <= 1.0,
            "replace_random",
            self.replace_random,
            "replace_mask + replace_random must be <= 1",
        )

    @property
    def causal(self) -> bool:
        return self.name == "clm"

    @property
    def loss_unit(self) -> str:
        """What the record's losses are, in words."""
        if self.causal:
            return "nats per next token"
        return f"nats per masked token ({self.mask_rate:.0%} of tokens, fixed masking seed {self.eval_seed})"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class FinetuneBudget:
    """Hydra leaf ``conf/finetune/default.yaml``: the fixed small budget of every downstream evaluation."""

    modes: tuple[str, ...] = ("probe", "finetune")
    """``probe``: frozen Transformer, a linear head trained; ``finetune``: everything trained."""
    max_steps: int = 150
    """Optimizer steps at most per task and mode."""
    batch_size: int = 16
    lr_probe: float = 3e-3
    lr_finetune: float = 5e-4
    eval_every: int = 15
    """Steps between validation evaluations (early stopping on the task's validation split)."""
    patience: int = 3
    max_items: int = 200
    """At most this many examples per split and task (CPU budget)."""
    seed: int = 0

    def __post_init__(self) -> None:
        self.modes = tuple(self.modes)
        require(
            bool(self.modes) and set(self.modes) <= set(FINETUNE_MODES),
            "modes",
            self.modes,
            f"must be a non-empty subset of {FINETUNE_MODES}",
        )
        for name in ("max_steps", "batch_size", "eval_every", "patience", "max_items"):
            require_positive_int(name, getattr(self, name))
        require(self.lr_probe > 0 and self.lr_finetune > 0, "lr_probe", self.lr_probe, "learning rates > 0")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_objective(objective: Objective, tokenizer: Any) -> None:
    """Before any compute: ``mlm`` needs the tokenizer's mask token (``tokenizer.mask_token``)."""
    require(
        objective.causal or bool(getattr(tokenizer, "mask_token", None)),
        "tokenizer.mask_token",
        getattr(tokenizer, "mask_token", None),
        'objective=mlm needs a mask token, e.g. tokenizer.mask_token="<|mask|>"',
    )
