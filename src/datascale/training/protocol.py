"""The training protocol: how long a run on U unique tokens trains, how often it evaluates, when it stops.

Everything is expressed in tokens and converted to optimizer steps here, in one place, so that a run's length
depends only on U (and the protocol), never on the world size or the micro-batch.

A run trains until early stopping fires (``patience`` evaluations without improvement of the validation loss)
or until the token cap ``clamp(cap_epochs * U, min_tokens, max_tokens)`` is reached. The LR schedule spans the
cap, so the schedule of a run does not depend on when it happens to stop.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from datascale.config_errors import (
    require,
    require_choice,
    require_in_range,
    require_positive,
    require_positive_int,
)

SELECT_ON = ("all_domains", "train_domains")


@dataclass
class TrainingProtocol:
    """Hydra leaf ``conf/training/early_stop.yaml``; every length is in tokens (global, over all ranks)."""

    batch_tokens: int = 2048  # global batch: 16 sequences x 128 tokens
    eval_every_epochs: float = 1.0  # evaluate every this many passes over the subset ...
    min_eval_interval_tokens: int = 16384  # ... but at least this many tokens apart (tiny subsets)
    max_eval_interval_tokens: int | None = (
        None  # ... and at most this many apart (huge subsets); None: no limit
    )
    patience: int = 3  # evaluations without improvement before stopping
    min_delta: float = 0.0  # improvement (nats) that counts for patience
    cap_epochs: float = 40.0  # token cap = cap_epochs * U ...
    min_tokens: int = 0  # ... at least this ...
    max_tokens: int | None = None  # ... and at most this (None: no upper bound)
    warmup_tokens: int = 65536  # linear warmup length ...
    warmup_max_fraction: float = 0.1  # ... but at most this fraction of the planned steps
    eval_tokens_per_domain: int | None = None  # first tokens of each domain's val set used (None: all);
    #                                          test sets are always evaluated whole (once per run)
    eval_se_target: float | None = 0.006  # SE (nats) asked of a change of the selection loss between
    #                                     evaluations: the first three score every window, then the share
    #                                     of windows it needs (datascale.training.precision); None: all
    eval_batch_sequences: int = 32  # sequences per evaluation batch (per rank)
    select_on: str = "train_domains"  # the val loss that picks the best checkpoint and stops early: the
    #                                 macro mean over train_domains (held-out sets of the domains with tokens
    #                                 in the subset: selected like its own data, as usual in ML; a one-domain
    #                                 run is not stopped as it specialises) | all_domains (every held-out set)
    grad_clip: float | None = 1.0  # gradient-norm clip (None: off)
    tokens_per_param: float | None = None  # training length as a multiple of N: the launcher sets
    #                                      min_tokens = max_tokens = tokens_per_param x N (non-embedding)

    def __post_init__(self) -> None:
        require_positive_int("batch_tokens", self.batch_tokens)
        require_positive("eval_every_epochs", self.eval_every_epochs)
        require(
            isinstance(self.min_eval_interval_tokens, int) and self.min_eval_interval_tokens >= 0,
            "min_eval_interval_tokens",
            self.min_eval_interval_tokens,
            "must be an integer >= 0",
        )
        if self.max_eval_interval_tokens is not None:
            require_positive_int("max_eval_interval_tokens", self.max_eval_interval_tokens)
            require(
                self.max_eval_interval_tokens >= self.min_eval_interval_tokens,
                "max_eval_interval_tokens",
                self.max_eval_interval_tokens,
                f"must be >= min_eval_interval_tokens={self.min_eval_interval_tokens}",
            )
        require_positive_int("patience", self.patience)
        require(
            isinstance(self.min_delta, int | float) and self.min_delta >= 0,
            "min_delta",
            self.min_delta,
            "must be a number >= 0",
        )
        require_positive("cap_epochs", self.cap_epochs)
        require(
            isinstance(self.min_tokens, int) and self.min_tokens >= 0,
            "min_tokens",
            self.min_tokens,
            "must be an integer >= 0",
        )
        if self.max_tokens is not None:
            require_positive_int("max_tokens", self.max_tokens)
            require(
                self.max_tokens >= self.min_tokens,
                "max_tokens",
                self.max_tokens,
                f"must be >= min_tokens={self.min_tokens}",
            )
        require(
            isinstance(self.warmup_tokens, int) and self.warmup_tokens >= 0,
            "warmup_tokens",
            self.warmup_tokens,
            "must be an integer >= 0",
        )
        require_in_range("warmup_max_fraction", self.warmup_max_fraction, 0.0, 1.0)
        if self.eval_tokens_per_domain is not None:
            require_positive_int("eval_tokens_per_domain", self.eval_tokens_per_domain)
        if self.eval_se_target is not None:
            require_positive("eval_se_target", self.eval_se_target)
        require_positive_int("eval_batch_sequences", self.eval_batch_sequences)
        require_choice("select_on", self.select_on, SELECT_ON)
        if self.grad_clip is not None:
            require_positive("grad_clip", self.grad_clip)
        if self.tokens_per_param is not None:
            require_positive("tokens_per_param", self.tokens_per_param)

    # ---- checks that need the model / data / world size -------------------------------------------------
    def validate(self, seq_len: int, world_size: int = 1, unique_tokens: int | None = None) -> None:
        """Raise ConfigError if this protocol cannot run with this sequence length, world size and subset."""
        require(
            self.batch_tokens % seq_len == 0,
            "training.batch_tokens",
            self.batch_tokens,
            f"must be a multiple of model.seq_len={seq_len}",
        )
        rows = self.batch_tokens // seq_len
        require(
            rows % world_size == 0,
            "training.batch_tokens",
            self.batch_tokens,
            f"must give a number of sequences ({rows}) divisible by the world size {world_size}",
        )
        if unique_tokens is not None:
            # the epoch stream starts at a random offset < seq_len; every epoch needs at least one window
            require(
                unique_tokens >= 2 * seq_len,
                "subset.unique_tokens",
                unique_tokens,
                f"must be >= 2 * model.seq_len = {2 * seq_len} (one training window per epoch)",
            )

    # ---- lengths -------------------------------------------------------------------------------------------
    def global_batch_sequences(self, seq_len: int) -> int:
        return self.batch_tokens // seq_len

    def micro_batch(
        self, seq_len: int, world_size: int = 1, max_micro_batch_tokens: int | None = None
    ) -> tuple[int, int]:
        """(sequences per rank per forward pass, gradient-accumulation steps) for this world size.

        The global batch is fixed; each rank takes its share, cut into the fewest equal micro-batches that
        fit the memory bound, so the gradient of a step is the same mean over the same samples for any
        layout (equal micro-batches make the mean of micro-batch means the global mean).
        """
        self.validate(seq_len, world_size)
        per_rank = self.global_batch_sequences(seq_len) // world_size
        if max_micro_batch_tokens is None:
            return per_rank, 1
        require(
            max_micro_batch_tokens >= seq_len,
            "worker.max_micro_batch_tokens",
            max_micro_batch_tokens,
            f"must hold at least one sequence of model.seq_len={seq_len} tokens",
        )
        limit = max_micro_batch_tokens // seq_len
        accumulation = next(a for a in range(-(-per_rank // limit), per_rank + 1) if per_rank % a == 0)
        return per_rank // accumulation, accumulation

    def selection_domains(self, eval_domains: list[str], subset_domains: list[str]) -> list[str]:
        """The held-out domains whose macro-mean validation loss is the selection metric."""
        if self.select_on == "all_domains":
            return list(eval_domains)
        trained = set(subset_domains)
        return [d for d in eval_domains if d in trained]

    def eval_interval_steps(self, unique_tokens: int) -> int:
        """Steps between evaluations: one per ``eval_every_epochs`` epochs, within the token bounds."""
        tokens = max(self.eval_every_epochs * unique_tokens, self.min_eval_interval_tokens)
        if self.max_eval_interval_tokens is not None:
            tokens = min(tokens, self.max_eval_interval_tokens)
        return max(1, math.ceil(tokens / self.batch_tokens))

    def token_cap(self, unique_tokens: int) -> int:
        cap = max(math.ceil(self.cap_epochs * unique_tokens), self.min_tokens)
        return min(cap, self.max_tokens) if self.max_tokens is not None else cap

    def planned_steps(self, unique_tokens: int) -> int:
        """Steps of the token cap, rounded up to whole evaluation intervals so the last step is evaluated."""
        interval = self.eval_interval_steps(unique_tokens)
        steps = max(1, math.ceil(self.token_cap(unique_tokens) / self.batch_tokens))
        return math.ceil(steps / interval) * interval

    def planned_tokens(self, unique_tokens: int) -> int:
        return self.planned_steps(unique_tokens) * self.batch_tokens

    def warmup_steps(self, unique_tokens: int) -> int:
        planned = self.planned_steps(unique_tokens)
        return min(math.ceil(self.warmup_tokens / self.batch_tokens), int(self.warmup_max_fraction * planned))

    def plan(self, unique_tokens: int, seq_len: int) -> dict[str, Any]:
        """Every derived length of a run, for logs and the record."""
        return {
            "unique_tokens": unique_tokens,
            "global_batch_sequences": self.global_batch_sequences(seq_len),
            "eval_interval_steps": self.eval_interval_steps(unique_tokens),
            "planned_steps": self.planned_steps(unique_tokens),
            "planned_tokens": self.planned_tokens(unique_tokens),
            "planned_epochs": self.planned_tokens(unique_tokens) / unique_tokens,
            "warmup_steps": self.warmup_steps(unique_tokens),
        }

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
