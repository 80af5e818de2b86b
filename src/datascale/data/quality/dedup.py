"""Deduplication of the training pool (Hydra ``dedup`` group): exact (normalised text) and near duplicates.

The corpus stage already drops exact duplicates of the raw corpus, but a degraded pool may hold planted
copies, and web-like text is full of near-duplicates (templated READMEs, mirrored docs). Both transforms keep
the first document of each group in pool order, so the result does not depend on anything but the pool.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any

import datasets

from datascale.config_errors import require
from datascale.data.documents import column
from datascale.data.quality.base import (
    is_int,
    library_versions,
    require_nonempty_str,
    require_seed,
    select_rows,
)
from datascale.data.splits import normalise_text, text_key
from datascale.data.transforms import TransformReport

DEDUP_VERSION = 1
#: datasketch's permutation scheme (explicit: its default may change between versions).
MINHASH_SCHEME = "affine32"
_WORD = re.compile(r"\w+")


@dataclass
class ExactDedup:
    """Drop documents whose normalised text (NFC, collapsed whitespace) equals an earlier document's."""

    name: str = "exact"

    def __post_init__(self) -> None:
        require_nonempty_str("name", self.name)

    def fingerprint(self) -> dict[str, Any]:
        return {"name": self.name, "transform": "exact_dedup", "version": DEDUP_VERSION}

    def apply(self, docs: datasets.Dataset) -> tuple[datasets.Dataset, TransformReport]:
        first: dict[str, str] = {}
        keep: list[int] = []
        removed: dict[str, str] = {}
        for i, (doc_id, text) in enumerate(zip(column(docs, "doc_id"), column(docs, "text"), strict=True)):
            key = text_key(text)
            if key in first:
                removed[doc_id] = f"exact_duplicate_of:{first[key]}"
                continue
            first[key] = doc_id
            keep.append(i)
        out = select_rows(docs, keep)
        stats = {"groups_with_duplicates": len(set(removed.values()))}
        return out, TransformReport(self.name, {}, len(docs), len(out), removed, {}, stats)


def word_shingles(text: str, size: int) -> set[bytes]:
    """Lower-cased word ``size``-grams of the normalised text (shorter texts: one shingle of all words)."""
    words = _WORD.findall(normalise_text(text).lower())
    if len(words) <= size:
        return {" ".join(words).encode("utf-8")}
    return {" ".join(words[i : i + size]).encode("utf-8") for i in range(len(words) - size + 1)}


@dataclass
class MinHashDedup:
    """Near-duplicate removal with MinHash signatures and LSH (datasketch).

    Documents are visited in pool order; each is looked up among the documents kept so far, and dropped as a
    near duplicate of the earliest candidate whose estimated Jaccard similarity of word shingles is at least
    ``threshold`` (LSH candidates are checked, so its false positives are not removed). Clusters are stars
    around the kept document, so a chain a~b~c with a !~ c keeps c.
    """

    threshold: float = 0.8
    num_perm: int = 128
    shingle_size: int = 5
    seed: int = 1
    name: str = "minhash"

    def __post_init__(self) -> None:
        require(
            isinstance(self.threshold, int | float)
            and not isinstance(self.threshold, bool)
            and 0 < self.threshold < 1,
            "threshold",
            self.threshold,
            "must be a number in (0, 1): the Jaccard similarity at or above which documents are duplicates",
        )
        require(
            is_int(self.num_perm) and self.num_perm >= 16,
            "num_perm",
            self.num_perm,
            "must be an integer >= 16",
        )
        require(
            is_int(self.shingle_size) and self.shingle_size >= 1,
            "shingle_size",
            self.shingle_size,
            "must be a positive integer (words per shingle)",
        )
        require_seed(self.seed)
        require_nonempty_str("name", self.name)

    def settings(self) -> dict[str, Any]:
        return {
            "threshold": float(self.threshold),
            "num_perm": self.num_perm,
            "shingle_size": self.shingle_size,
            "seed": self.seed,
        }

    def fingerprint(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "transform": "minhash_dedup",
            "version": DEDUP_VERSION,
            **self.settings(),
            "scheme": MINHASH_SCHEME,
            "libraries": library_versions("datasketch"),
        }

    def signatures(self, texts: list[str]) -> list[Any]:
        """One MinHash per text (all sharing one set of permutations, drawn from ``seed``)."""
        from datasketch import MinHash

        template = MinHash(num_perm=self.num_perm, seed=self.seed, scheme=MINHASH_SCHEME)
        out = []
        for text in texts:
            mh = MinHash(
                num_perm=self.num_perm,
                seed=self.seed,
                permutations=template.permutations,
                scheme=MINHASH_SCHEME,
            )
            mh.update_batch(sorted(word_shingles(text, self.shingle_size)))
            out.append(mh)
        return out

    def apply(self, docs: datasets.Dataset) -> tuple[datasets.Dataset, TransformReport]:
        from datasketch import MinHashLSH

        start = time.perf_counter()
        ids = column(docs, "doc_id")
        signatures = self.signatures(column(docs, "text"))
        lsh = MinHashLSH(threshold=self.threshold, num_perm=self.num_perm)
        position = {doc_id: i for i, doc_id in enumerate(ids)}
        keep: list[int] = []
        removed: dict[str, str] = {}
        for i, (doc_id, sig) in enumerate(zip(ids, signatures, strict=True)):
            candidates = sorted(lsh.query(sig), key=position.__getitem__)
            match = next(
                (c for c in candidates if signatures[position[c]].jaccard(sig) >= self.threshold), None
            )
            if match is not None:
                removed[doc_id] = f"near_duplicate_of:{match}"
                continue
            lsh.insert(doc_id, sig)
            keep.append(i)
        out = select_rows(docs, keep)
        stats = {
            "clusters": len(set(removed.values())),
            "seconds": round(time.perf_counter() - start, 3),
        }
        return out, TransformReport(self.name, self.settings(), len(docs), len(out), removed, {}, stats)
