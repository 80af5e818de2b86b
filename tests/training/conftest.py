"""Session fixtures for training tests: one tiny corpus and data cache, built with the real data pipeline."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from training_fixtures import tiny_artifacts, write_corpus

from datascale.artifacts import DataArtifacts


@pytest.fixture(scope="session")
def corpus_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="session")
def make_artifacts(
    corpus_files: Path, tmp_path_factory: pytest.TempPathFactory
) -> Callable[[int], DataArtifacts]:
    """``make_artifacts(U)``: DataArtifacts of a U-token subset (all stages cached; subsets nested across
    calls)."""
    cache = tmp_path_factory.mktemp("cache")
    return lambda unique_tokens: tiny_artifacts(corpus_files, cache, unique_tokens)
