"""Settings the training worker applies itself, outside the Lightning Trainer (torch-free Hydra leaf)."""

from __future__ import annotations

from dataclasses import dataclass

from datascale.config_errors import require, require_choice, require_positive_int

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
    matmul_precision: str = "high"
    """``torch.set_float32_matmul_precision`` on CUDA (``high`` allows TF32)."""

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
