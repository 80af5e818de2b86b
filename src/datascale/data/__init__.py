"""Data preparation: documents -> dedup/splits -> tokenizer -> token caches -> nested subsets (torch-free).

Submodules are imported lazily so that ``import datascale.data`` stays cheap; the main entry points are
re-exported here: ``from datascale.data import prepare_data``. The data stage's output contract,
:class:`datascale.artifacts.DataArtifacts`, lives outside this package so training ranks need not import it.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "DOCUMENT_FEATURES": "documents",
    "BuiltinCorpus": "sources",
    "LocalFiles": "sources",
    "HubDataset": "sources",
    "HeldoutSplit": "splits",
    "BPETokenizer": "tokenizer",
    "token_byte_lengths": "tokenizer",
    "TokenCache": "token_cache",
    "SizeSubset": "subsets",
    "SubsetManifest": "subsets",
    "load_subset_tokens": "subsets",
    "verify_nested": "subsets",
    "prepare_data": "prepare",
    "prepare_from_config": "prepare",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"datascale.data.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'datascale.data' has no attribute {name!r}")
