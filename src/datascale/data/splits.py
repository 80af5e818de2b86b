"""Exact deduplication and per-domain held-out sets (Hydra ``split`` group).

Validation and test sets depend on the corpus and this config only, never on a run seed or a subset size, so
every run of a study is scored on the same text. Dedup runs over the whole corpus before splitting, so no text
can sit in both a held-out set and the training pool.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import asdict, dataclass, field
from typing import Any

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from datascale.config_errors import ConfigError, require
from datascale.data.documents import iter_batches, text_bytes

EVAL_SPLITS: tuple[str, ...] = ("val", "test")
_WHITESPACE = re.compile(r"\s+")


def normalise_text(text: str) -> str:
    """NFC + collapsed whitespace: texts that differ only in spacing or line endings count as duplicates."""
    return _WHITESPACE.sub(" ", unicodedata.normalize("NFC", text)).strip()


def text_key(text: str) -> str:
    return hashlib.sha256(normalise_text(text).encode("utf-8")).hexdigest()


def deduplicate(ds: datasets.Dataset) -> tuple[datasets.Dataset, int]:
    """Drop exact duplicates (by normalised-text hash, keeping the first) and empty texts; returns (ds,
    removed). Texts are read in batches; memory holds one 32-byte digest per distinct text."""
    seen: set[bytes] = set()
    keep: list[int] = []
    i = 0
    for batch in iter_batches(ds, ["text"]):
        for text in batch["text"]:
            normal = normalise_text(text)
            key = hashlib.sha256(normal.encode("utf-8")).digest()
            if normal and key not in seen:
                seen.add(key)
                keep.append(i)
            i += 1
    removed = len(ds) - len(keep)
    if removed == 0:
        return ds, 0
    return ds.select(keep).flatten_indices(), removed


def _domain_seed(domain: str) -> int:
    return int.from_bytes(hashlib.sha256(domain.encode("utf-8")).digest()[:8], "little")


@dataclass
class HeldoutSplit:
    """Per-domain validation and test sets of at least ``eval_bytes_per_domain`` bytes each; the rest
    trains."""

    seed: int = 1234
    eval_bytes_per_domain: int = 64_000
    train_domains: list[str] | None = None

    def __post_init__(self) -> None:
        require(
            isinstance(self.seed, int) and not isinstance(self.seed, bool) and self.seed >= 0,
            "seed",
            self.seed,
            "must be a non-negative integer",
        )
        require(
            isinstance(self.eval_bytes_per_domain, int)
            and not isinstance(self.eval_bytes_per_domain, bool)
            and self.eval_bytes_per_domain > 0,
            "eval_bytes_per_domain",
            self.eval_bytes_per_domain,
            "must be a positive integer",
        )
        if self.train_domains is not None:
            domains = [
                str(d)
                for d in (
                    self.train_domains if not isinstance(self.train_domains, str) else [self.train_domains]
                )
            ]
            require(
                len(domains) > 0 and len(set(domains)) == len(domains),
                "train_domains",
                domains,
                "must be null (all domains) or a non-empty list without repeats",
            )
            self.train_domains = domains

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class SplitAssignment:
    """Row indices into the deduplicated corpus: the training pool and per-domain val/test sets."""

    pool: list[int]
    eval: dict[str, dict[str, list[int]]]
    domains: list[str] = field(default_factory=list)
    train_domains: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SplitAssignment:
        return cls(**data)

    def all_indices(self) -> dict[str, list[int]]:
        """Every split by name (``pool``, ``<domain>/val``, ``<domain>/test``)."""
        out = {"pool": self.pool}
        for domain, sets in self.eval.items():
            for name, idx in sets.items():
                out[f"{domain}/{name}"] = idx
        return out


def domain_orders(ds: datasets.Dataset) -> dict[str, np.ndarray]:
    """Per domain (sorted): its rows of ``ds`` sorted by doc id. Arrow sorts the ids (UTF-8 byte order is
    code point order: Python's string order), so no Python string is made per document."""
    table = ds.select_columns(["doc_id", "domain"]).with_format("arrow")[:]
    domains = table.column("domain")
    out: dict[str, np.ndarray] = {}
    for domain in sorted(pc.unique(domains).to_pylist()):
        rows = np.flatnonzero(pc.equal(domains, domain).to_numpy(zero_copy_only=False))
        by_id = pc.sort_indices(table.column("doc_id").take(pa.array(rows))).to_numpy()
        out[domain] = rows[by_id]
    return out


def _held_out(
    idx: np.ndarray, order: np.ndarray, sizes: np.ndarray, target: int
) -> tuple[dict[str, list[int]], int]:
    """The first documents of ``order`` fill ``val`` up to ``target`` bytes, the next ``test``; returns the
    sets (corpus rows) and how many documents of the order they took."""
    sets: dict[str, list[int]] = {name: [] for name in EVAL_SPLITS}
    pos = 0
    for name in EVAL_SPLITS:
        size = 0
        while size < target and pos < len(order):
            i = int(idx[order[pos]])
            sets[name].append(i)
            size += int(sizes[i])
            pos += 1
    return sets, pos


def assign_splits(ds: datasets.Dataset, split: HeldoutSplit) -> SplitAssignment:
    """Held-out sets per domain from a seeded permutation of its documents (sorted by doc id first, so the
    input order does not matter); the first documents fill ``val`` up to the byte target, then ``test``."""
    orders, sizes = domain_orders(ds), text_bytes(ds)
    corpus_domains = sorted(orders)
    train_domains = corpus_domains if split.train_domains is None else list(split.train_domains)
    unknown = [d for d in train_domains if d not in corpus_domains]
    if unknown:
        raise ConfigError(
            "train_domains", split.train_domains, f"must be a subset of the corpus domains {corpus_domains}"
        )
    target = split.eval_bytes_per_domain
    pool: list[np.ndarray] = []
    eval_sets: dict[str, dict[str, list[int]]] = {}
    for domain, idx in orders.items():
        order = np.random.default_rng([split.seed, _domain_seed(domain)]).permutation(len(idx))
        sets, pos = _held_out(idx, order, sizes, target)
        rest = idx[order[pos:]]
        if int(sizes[sets["test"]].sum()) < target or (domain in train_domains and not len(rest)):
            raise ConfigError(
                "eval_bytes_per_domain",
                target,
                f"domain {domain!r} has {int(sizes[idx].sum())} bytes in {len(idx)} documents: too few for a "
                "val and a test set of this size plus training documents",
            )
        eval_sets[domain] = {name: sorted(v) for name, v in sets.items()}
        if domain in train_domains:
            pool.append(rest)
    return SplitAssignment(
        pool=np.sort(np.concatenate([np.zeros(0, np.int64), *pool])).tolist(),
        eval=eval_sets,
        domains=corpus_domains,
        train_domains=train_domains,
    )
