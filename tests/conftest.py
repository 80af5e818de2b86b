"""Shared test setup: offline everything, caches in tmp dirs, W&B disabled unless a test opts in."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = Path(os.environ.get("DATASCALE_SHARED", REPO_ROOT.parent / "shared"))
REFERENCE_DIR = SHARED_DIR / "reference"


@pytest.fixture(autouse=True, scope="session")
def _offline_env(tmp_path_factory: pytest.TempPathFactory) -> None:
    home = tmp_path_factory.mktemp("env")
    os.environ.setdefault("WANDB_MODE", "disabled")
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["HF_DATASETS_OFFLINE"] = "1"
    os.environ["HF_HOME"] = str(home / "hf")
    os.environ["HF_DATASETS_CACHE"] = str(home / "hf" / "datasets")
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    for var in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR"):
        os.environ[var] = str(home / var.lower())
    os.environ.pop("WANDB_API_KEY", None)
    os.environ["MPLBACKEND"] = "Agg"
