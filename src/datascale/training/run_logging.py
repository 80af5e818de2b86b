"""Logging of a training run: ``worker.log`` per rank plus stderr, for ours and Lightning's messages."""

from __future__ import annotations

import logging
import sys
import warnings
from pathlib import Path

LOG_FORMAT = "%(asctime)s %(levelname)s [rank %(rank)s] %(name)s: %(message)s"


class _RankFilter(logging.Filter):
    def __init__(self, rank: int) -> None:
        super().__init__()
        self.rank = rank

    def filter(self, record: logging.LogRecord) -> bool:
        record.rank = self.rank
        return True


_HANDLERS: list[tuple[logging.Logger, logging.Handler]] = []


def setup_logging(run_dir: Path, rank: int) -> None:
    """worker.log (rank 0; other ranks get worker.rank<r>.log) + stderr, for ours and Lightning's messages.

    Replaces what an earlier call installed, so several runs in one process (tests) do not log twice.
    """
    teardown_logging()
    run_dir.mkdir(parents=True, exist_ok=True)
    name = "worker.log" if rank == 0 else f"worker.rank{rank}.log"
    formatter = logging.Formatter(LOG_FORMAT, datefmt="%Y-%m-%d %H:%M:%S")
    file_handler = logging.FileHandler(run_dir / name)
    console = logging.StreamHandler(sys.stderr)
    both: tuple[logging.Handler, ...] = (file_handler, console)
    for handler in both:
        handler.setFormatter(formatter)
        handler.addFilter(_RankFilter(rank))
    ours = logging.getLogger("datascale")
    ours.setLevel(logging.INFO)
    ours.propagate = False
    targets: list[tuple[logging.Logger, logging.Handler]] = [(ours, file_handler), (ours, console)]
    # Lightning prints to the console itself; its messages and warnings also go to worker.log
    targets += [
        (logging.getLogger(n), file_handler) for n in ("pytorch_lightning", "lightning_fabric", "py.warnings")
    ]
    for logger, target in targets:
        logger.addHandler(target)
        _HANDLERS.append((logger, target))
    logging.captureWarnings(True)
    # expected: the run dir already holds resolved.yaml etc. when the CSV logger starts
    warnings.filterwarnings("ignore", message=r".*Experiment logs directory .* exists and is not empty.*")
    warnings.filterwarnings("ignore", message=r".*isinstance.treespec, LeafSpec.*")


def teardown_logging() -> None:
    for logger, handler in _HANDLERS:
        logger.removeHandler(handler)
    for handler in {h for _, h in _HANDLERS}:
        handler.close()
    _HANDLERS.clear()
    logging.captureWarnings(False)
