"""Hyperparameters that depend on model size N, in one place, each with its source (torch-free leaves).

Porian et al. (2024, "Resolving Discrepancies in Compute-Optimal Scaling of Language Models") trace most of
the Kaplan-Chinchilla disagreement to learning rate, warmup and batch choices that were not retuned with N; a
law fitted over badly tuned runs measures the tuning. So the learning rate of a ladder size comes from a rule:

- **learning rate**: ``lr_rule=kaplan``: ``0.003239 - 0.0001395 ln N`` (Kaplan et al. 2020, Eq. D.1; N
  non-embedding); ``lr_rule=fitted``: ``c (N / N0)^x`` fitted by the ``hparams`` study (``python -m
  scaling_analysis results/hparams --write-lr-rule conf/lr_rule/fitted.yaml``); ``lr_rule=none`` (default):
  ``optim.lr`` as written (conf/optim/adamw.yaml, tuned for gpt_0p9m).
- **batch**: fixed in tokens (``training.batch_tokens``, 2048), far below the critical batch
  ``B_crit(L) = 2e8 / L^(1/0.21)`` tokens (Kaplan et al. 2020, Eq. 5.3: about 1e5 at L = 5 nats), so no
  size of the ladder is batch-limited.
- **warmup**: fixed in tokens (``training.warmup_tokens``), at most 10% of the planned steps
  (``training.warmup_max_fraction``): no longer than the shortest run allows (Porian et al. 2024).
- **weight decay**: 0.1 on matrices and embeddings, the same for every N (Brown et al. 2020; Hoffmann et al.
  2022).
- **training length**: in tokens (``training.cap_epochs`` x U, within ``min_tokens``/``max_tokens``) or as
  a multiple of N: ``training.tokens_per_param=20`` (Hoffmann et al. 2022's compute-optimal ratio) makes the
  token cap 20 x N (non-embedding), whatever U.

The rule is applied by the launcher before a run's identity is computed: ``optim.lr`` in ``resolved.yaml`` and
in the record is the value the rule gave, and the identity depends on that value, not on the rule's name.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf

from datascale.config_errors import require, require_positive
from datascale.configs import instantiate_group

log = logging.getLogger("datascale.launch")


@dataclass
class KeepLR:
    """``lr_rule=none``: the learning rate in ``optim.lr`` is used as written."""

    def lr(self, non_embedding_params: int) -> float | None:
        return None


@dataclass
class KaplanLR:
    """``lr_rule=kaplan``: Kaplan et al. (2020), Eq. D.1, ``lr(N) = a - b ln N`` for Adam with N the
    non-embedding parameters (fitted on their 512 x 1024-token batches; a starting point, not tuned here)."""

    a: float = 0.003239
    b: float = 0.0001395

    def lr(self, non_embedding_params: int) -> float | None:
        value = self.a - self.b * math.log(non_embedding_params)
        require(value > 0, "lr_rule", value, f"gives no positive learning rate at N={non_embedding_params:,}")
        return value


@dataclass
class PowerLR:
    """``lr_rule=fitted``: ``lr(N) = coefficient * (N / reference_params) ** exponent``, the rule the
    ``hparams`` study fitted (best learning rate per size; the analysis writes this leaf)."""

    coefficient: float = 1.0e-3
    """Learning rate at ``reference_params`` non-embedding parameters."""
    exponent: float = 0.0
    """Power of N (negative: larger models want smaller learning rates)."""
    reference_params: float = 1.0e6
    """Non-embedding parameters at which the coefficient holds."""
    exponent_interval: list[float] | None = None
    """95% interval of the exponent from the fit (documentation; not used to compute the rate)."""
    source: str = ""
    """Where the rule comes from (the study directory and date of the fit)."""

    def __post_init__(self) -> None:
        require_positive("coefficient", self.coefficient)
        require_positive("reference_params", self.reference_params)
        require(math.isfinite(self.exponent), "exponent", self.exponent, "must be a finite number")

    def lr(self, non_embedding_params: int) -> float | None:
        return self.coefficient * (non_embedding_params / self.reference_params) ** self.exponent


def apply_tokens_per_param(cfg: DictConfig, non_embedding_params: int) -> int | None:
    """``training.tokens_per_param`` (if set): the token cap becomes that multiple of N, exactly (the launcher
    writes ``min_tokens = max_tokens``; early stopping may still end a run sooner). Returns the cap set."""
    ratio = OmegaConf.select(cfg, "training.tokens_per_param", default=None)
    if ratio is None:
        return None
    require(
        isinstance(ratio, int | float) and not isinstance(ratio, bool) and ratio > 0,
        "training.tokens_per_param",
        ratio,
        "must be a positive number (tokens per non-embedding parameter) or null",
    )
    tokens = max(1, round(float(ratio) * non_embedding_params))
    OmegaConf.update(cfg, "training.min_tokens", tokens, merge=False)
    OmegaConf.update(cfg, "training.max_tokens", tokens, merge=False)
    return tokens


def apply_lr_rule(cfg: DictConfig, non_embedding_params: int) -> float | None:
    """Set ``optim.lr`` from the ``lr_rule`` leaf (if any) for a model of this size; returns the value set
    (None: the rule keeps ``optim.lr``)."""
    if OmegaConf.select(cfg, "lr_rule", default=None) is None:
        return None
    rule: Any = instantiate_group(cfg, "lr_rule")
    value = rule.lr(non_embedding_params)
    if value is not None:
        OmegaConf.update(cfg, "optim.lr", float(value), merge=False)
        log.debug("lr_rule %s: optim.lr = %.4g at N = %s", type(rule).__name__, value, non_embedding_params)
    return value
