"""Helpers shared by the quality transforms: settings checks, library versions, rebuilding document sets."""

from __future__ import annotations

import importlib.metadata
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import datasets

from datascale.config_errors import require
from datascale.data.documents import COLUMNS, DOCUMENT_FEATURES, column


def as_list(value: Any) -> list[Any]:
    """Hydra hands lists over as ListConfig; a lone string means one item."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return list(value)


def plain(value: Any) -> Any:
    """DictConfig / ListConfig (or any mapping / sequence) as plain dicts and lists, recursively."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        return [plain(v) for v in value]
    return value


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def require_seed(value: Any, field: str = "seed") -> None:
    require(is_int(value) and value >= 0, field, value, "must be a non-negative integer")


def require_nonempty_str(field: str, value: Any) -> None:
    require(isinstance(value, str) and bool(value), field, value, "must be a non-empty string")


def library_versions(*names: str) -> dict[str, str | None]:
    """Installed versions of the distributions a transform's output depends on (part of its fingerprint)."""
    versions: dict[str, str | None] = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def select_rows(docs: datasets.Dataset, keep: Sequence[int]) -> datasets.Dataset:
    """The documents at ``keep`` (in that order) as a plain (index-free) Dataset; ``docs`` if all are kept.

    In memory: a pool read from a finished cache dir must not get new Arrow files written next to it."""
    if len(keep) == len(docs) and list(keep) == list(range(len(docs))):
        return docs
    return docs.select(list(keep), keep_in_memory=True).flatten_indices(keep_in_memory=True)


def all_columns(docs: datasets.Dataset) -> dict[str, list[Any]]:
    return {name: column(docs, name) for name in COLUMNS}


def from_columns(columns: Mapping[str, Iterable[Any]]) -> datasets.Dataset:
    """A document Dataset from column lists, with :data:`DOCUMENT_FEATURES`."""
    return datasets.Dataset.from_dict(
        {name: list(columns[name]) for name in COLUMNS}, features=DOCUMENT_FEATURES
    )
