"""Helpers shared by the data tests (a plain module: `conftest` is not importable by name across test
dirs)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from datascale.artifacts import DataArtifacts
from datascale.data.sources import BuiltinCorpus
from datascale.data.splits import HeldoutSplit
from datascale.data.subsets import SizeSubset
from datascale.data.tokenizer import BPETokenizer

SMALL_CAP = 60_000  # bytes per domain: ~20 documents each, builds in well under a second
SMALL_DOC = 3_000


@dataclass
class Prepared:
    cache_dir: Path
    source: BuiltinCorpus
    split: HeldoutSplit
    tokenizer: BPETokenizer
    subset: SizeSubset
    artifacts: DataArtifacts


def small_builtin() -> BuiltinCorpus:
    return BuiltinCorpus(max_bytes_per_domain=SMALL_CAP, max_doc_bytes=SMALL_DOC)
