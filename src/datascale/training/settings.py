"""Settings the training worker applies itself, outside the Lightning Trainer (torch-free Hydra leaves)."""

from __future__ import annotations

from dataclasses import dataclass

from datascale.config_errors import require, require_choice, require_positive, require_positive_int

PROGRESS_BARS = ("tqdm", "rich")
MATMUL_PRECISIONS = ("highest", "high", "medium")


@dataclass
class WorkerSettings:
    """Hydra leaf ``conf/worker/default.yaml``."""

    progress_bar: str = "tqdm"
    """Progress bar kind: tqdm or rich (``trainer.enable_progress_bar=false`` turns it off)."""
    progress_refresh_rate: int = 20
    """Steps between progress-bar updates."""
    num_threads: int | None = None
    """torch threads per process; None: the CPU cores of this node divided by its ranks."""
    adaptive_threads: bool = False
    """Raise the threads to this node's cores (divided by its ranks) while nothing else on the machine uses
    them, back to ``num_threads`` as soon as something does (``ThreadGovernor``; packed studies)."""
    matmul_precision: str = "high"
    """``torch.set_float32_matmul_precision`` on CUDA (``high`` allows TF32)."""
    max_micro_batch_tokens: int | None = None
    """Memory bound: at most this many tokens per rank per forward pass; the global batch is then reached by
    gradient accumulation (None: one micro-batch per rank and step)."""
    compile: bool = False
    """``torch.compile`` each Transformer block (helps on GPUs; on CPU the compile time rarely pays off)."""
    preload: bool = True
    """A one-process CPU run's worker is forked from a parent that imported torch, Lightning and W&B once
    per Hydra job process (``datascale.orchestration.preload``); false: a fresh interpreter per run."""

    def __post_init__(self) -> None:
        require_choice("progress_bar", self.progress_bar, PROGRESS_BARS)
        require_positive_int("progress_refresh_rate", self.progress_refresh_rate)
        require(
            self.num_threads is None
            or (
                isinstance(self.num_threads, int)
                and not isinstance(self.num_threads, bool)
                and self.num_threads > 0
            ),
            "num_threads",
            self.num_threads,
            "must be null (automatic) or a positive integer",
        )
        require_choice("matmul_precision", self.matmul_precision, MATMUL_PRECISIONS)
        if self.max_micro_batch_tokens is not None:
            require_positive_int("max_micro_batch_tokens", self.max_micro_batch_tokens)
        require(isinstance(self.compile, bool), "compile", self.compile, "must be true or false")
        require(isinstance(self.preload, bool), "preload", self.preload, "must be true or false")
        require(
            isinstance(self.adaptive_threads, bool),
            "adaptive_threads",
            self.adaptive_threads,
            "must be true or false",
        )


@dataclass
class CheckpointSettings:
    """Hydra leaf ``conf/checkpoint/default.yaml``: how often a run can be resumed from (not part of a run's
    identity: the cadence never changes what a run computes)."""

    every_tokens: int | None = None
    """Save every this many training tokens (None: by time only); never just because an evaluation ran."""
    every_minutes: float | None = 5.0
    """Save when this many minutes passed since the last save (None: never by time)."""
    keep: int = 2
    """Complete resume checkpoints kept (newest first); an older one is the fallback for a damaged newest."""

    def __post_init__(self) -> None:
        if self.every_tokens is not None:
            require_positive_int("every_tokens", self.every_tokens)
        if self.every_minutes is not None:
            require_positive("every_minutes", self.every_minutes)
        require_positive_int("keep", self.keep)
