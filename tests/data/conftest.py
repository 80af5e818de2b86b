"""Fixtures for the data tests: offline HF caches in tmp, one small built-in corpus prepared once per
session."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"  # before anything imports datasets / huggingface_hub in this directory
os.environ["HF_DATASETS_OFFLINE"] = "1"

import datasets
from data_fixtures import Prepared, small_builtin

from datascale.data.prepare import prepare_data
from datascale.data.splits import HeldoutSplit
from datascale.data.subsets import SizeSubset
from datascale.data.tokenizer import BPETokenizer


@pytest.fixture(autouse=True, scope="session")
def hf_offline_tmp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """HF caches in a tmp dir and offline, also when datasets was imported (and read its env) earlier."""
    home = tmp_path_factory.mktemp("hf")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HOME", str(home))
        mp.setenv("HF_DATASETS_CACHE", str(home / "datasets"))
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("HF_DATASETS_OFFLINE", "1")
        mp.setattr(datasets.config, "HF_CACHE_HOME", str(home))
        mp.setattr(datasets.config, "HF_DATASETS_CACHE", home / "datasets")
        mp.setattr(datasets.config, "DOWNLOADED_DATASETS_PATH", home / "datasets" / "downloads")
        mp.setattr(datasets.config, "EXTRACTED_DATASETS_PATH", home / "datasets" / "downloads" / "extracted")
        mp.setattr(datasets.config, "HF_HUB_OFFLINE", True)
        yield home


@pytest.fixture(scope="session")
def prepared(tmp_path_factory: pytest.TempPathFactory, hf_offline_tmp: Path) -> Prepared:
    """The small built-in corpus through every stage once per session (~2 s)."""
    cache_dir = tmp_path_factory.mktemp("datacache")
    source, split = small_builtin(), HeldoutSplit(eval_bytes_per_domain=6_000)
    tokenizer, subset = BPETokenizer(vocab_size=600), SizeSubset(unique_tokens=20_000)
    artifacts = prepare_data(source, split, tokenizer, subset, cache_dir, progress=False)
    return Prepared(cache_dir, source, split, tokenizer, subset, artifacts)
