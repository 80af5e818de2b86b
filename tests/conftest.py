"""Shared test setup: offline everything, caches in a tmp dir, W&B disabled unless a test opts in.

The environment is set at import time, before any test module imports `datasets` or `wandb` (both read it
then).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = Path(os.environ.get("DATASCALE_SHARED", REPO_ROOT.parent / "shared"))
REFERENCE_DIR = SHARED_DIR / "reference"

_HOME = Path(tempfile.mkdtemp(prefix="datascale-tests-"))
os.environ["WANDB_MODE"] = os.environ.get("DATASCALE_TEST_WANDB_MODE", "disabled")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["HF_HOME"] = str(_HOME / "hf")
os.environ["HF_DATASETS_CACHE"] = str(_HOME / "hf" / "datasets")
os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ["MPLBACKEND"] = "Agg"
os.environ.pop("WANDB_API_KEY", None)
for _var in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR"):
    os.environ[_var] = str(_HOME / _var.lower())
