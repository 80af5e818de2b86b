"""Where a run's wall time goes, torch-free: the launcher's hand-over of its clock to the worker, and the
per-run overheads the record carries next to the training time.

The Hydra job starts each run's worker with two timestamps in its environment (``time.time()``): when the job
began the run (before validation and data preparation) and when it started the worker command. The worker
counts its start-up from the second, so interpreter start and imports are in ``startup_s``; a worker started
by hand counts from its own process's start.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping

#: When the Hydra job began the run's current attempt (before validating and preparing its data).
JOB_STARTED_ENV = "DATASCALE_JOB_STARTED_AT"
#: When the Hydra job started the worker command (the process whose start-up ``startup_s`` measures).
SPAWNED_ENV = "DATASCALE_SPAWNED_AT"
#: How the worker process started (the record's ``worker_start``): set to ``fork`` by a forked worker
#: (``datascale.orchestration.preload``); absent: ``exec``, a fresh interpreter.
WORKER_START_ENV = "DATASCALE_WORKER_START"


def worker_start(env: Mapping[str, str] | None = None) -> str:
    """``fork`` (from a preloaded parent), ``fork (not preloaded)``, or ``exec`` (a fresh interpreter)."""
    return (os.environ if env is None else env).get(WORKER_START_ENV) or "exec"


def process_start_time() -> float:
    """This process's start (``time.time()`` scale); now, where the OS does not say."""
    try:
        import psutil

        return float(psutil.Process().create_time())
    except Exception:  # psutil missing or the process table unreadable: the caller's clock starts now
        return time.time()


def launch_times(env: Mapping[str, str] | None = None) -> tuple[float | None, float]:
    """(when the job began the run or None when started by hand, when the worker command started)."""
    env = os.environ if env is None else env

    def stamp(name: str) -> float | None:
        try:
            return float(env[name])
        except (KeyError, ValueError):
            return None

    spawned = stamp(SPAWNED_ENV)
    return stamp(JOB_STARTED_ENV), process_start_time() if spawned is None else spawned
