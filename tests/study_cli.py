"""Running a study as a user does: ``python -m datascale.launch --config-dir sweeps --config-name <study>``.

A plain module for the end-to-end, launcher and scale-out tests (``conftest`` is not importable by name).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from datascale import SWEEPS_DIR


def launch_study(
    study: str,
    results: Path,
    cache: Path,
    *overrides: str,
    env: dict[str, str] | None = None,
    timeout: int = 900,
) -> subprocess.CompletedProcess:
    """The study in a subprocess with its results and data cache in the given directories; output captured."""
    cmd = [
        sys.executable, "-m", "datascale.launch", "--config-dir", str(SWEEPS_DIR), "--config-name", study,
        f"paths.results_dir={results}", f"paths.cache_dir={cache}", *overrides,
    ]  # fmt: skip
    run_env = {**os.environ, "WANDB_MODE": "disabled", **(env or {})}
    return subprocess.run(cmd, capture_output=True, text=True, env=run_env, timeout=timeout)
