"""Nested training subsets by exact unique-token budget (Hydra ``subset`` group), their manifests and checks.

Every subset of one (pool, tokenizer, order_seed) is a prefix of one seeded document order, cut so the token
stream has exactly U tokens (the last document truncated): D1 < D2 means D1 is inside D2. Nesting is verified,
not assumed: each new manifest written to a manifest directory is checked against all the others there, token
streams included.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
from filelock import FileLock

from datascale.config_errors import ConfigError, require
from datascale.data.atomic import atomic_write_json
from datascale.data.documents import canonical_json_hash
from datascale.data.token_cache import TokenCache

log = logging.getLogger("datascale.data")


class NestingError(ValueError):
    """Two subsets that should be prefixes of one another are not."""


@dataclass
class SizeSubset:
    """A training subset of exactly ``unique_tokens`` tokens, a prefix of the ``order_seed`` document
    order."""

    unique_tokens: int = 16_000
    order_seed: int = 0

    def __post_init__(self) -> None:
        require(
            isinstance(self.unique_tokens, int)
            and not isinstance(self.unique_tokens, bool)
            and self.unique_tokens > 0,
            "unique_tokens",
            self.unique_tokens,
            "must be a positive integer",
        )
        require(
            isinstance(self.order_seed, int)
            and not isinstance(self.order_seed, bool)
            and self.order_seed >= 0,
            "order_seed",
            self.order_seed,
            "must be a non-negative integer",
        )


@dataclass
class SubsetManifest:
    """Which pool documents, in which order, make up a subset, and the hash of its exact token stream."""

    unique_tokens: int
    order_seed: int
    pool_hash: str  # content hash of the training-pool token cache
    tokenizer_hash: str
    doc_ids: list[str]  # in stream order
    last_doc_tokens: int  # tokens kept from the last (truncated) document
    token_hash: str  # sha256 of the exact token stream (as little-endian uint32)
    n_docs: int
    pool_tokens: int  # tokens in the whole training pool
    manifest_hash: str = ""

    def compute_hash(self) -> str:
        return canonical_json_hash({k: v for k, v in asdict(self).items() if k != "manifest_hash"})

    def __post_init__(self) -> None:
        if not self.manifest_hash:
            self.manifest_hash = self.compute_hash()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SubsetManifest:
        known = {f.name for f in fields(cls)}
        manifest = cls(**{k: v for k, v in data.items() if k in known})
        if manifest.manifest_hash != manifest.compute_hash():
            raise ValueError(
                f"subset manifest unique_tokens={manifest.unique_tokens}: manifest_hash does not match "
                "its content (edited or corrupt)"
            )
        return manifest

    def save(self, path: Path) -> Path:
        atomic_write_json(Path(path), self.to_dict())
        return Path(path)

    @classmethod
    def load(cls, path: Path) -> SubsetManifest:
        return cls.from_dict(json.loads(Path(path).read_text()))


def document_order(n_docs: int, order_seed: int) -> np.ndarray:
    """The one seeded order of pool documents that every subset of this seed is a prefix of."""
    return np.random.default_rng(order_seed).permutation(n_docs)


def stream_hash(tokens: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(tokens, dtype="<u4").tobytes()).hexdigest()


def _stream(cache: TokenCache, doc_index: Sequence[int], last_doc_tokens: int) -> np.ndarray:
    parts = [cache.doc_tokens(i) for i in doc_index]
    if parts:
        parts[-1] = parts[-1][:last_doc_tokens]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=cache.tokens.dtype)


def make_subset(cache: TokenCache, subset: SizeSubset) -> SubsetManifest:
    """Documents in the seeded order until the count reaches U; the last one is cut so the stream is exactly
    U."""
    u, pool_tokens = subset.unique_tokens, cache.n_tokens
    if u > pool_tokens:
        raise ConfigError("unique_tokens", u, f"must be <= {pool_tokens} (tokens in the training pool)")
    order = document_order(cache.n_docs, subset.order_seed)
    cum = np.cumsum(cache.doc_lengths()[order])
    k = int(np.searchsorted(cum, u))  # first position where the cumulative count reaches u
    before = int(cum[k - 1]) if k > 0 else 0
    chosen = [int(i) for i in order[: k + 1]]
    tokens = _stream(cache, chosen, u - before)
    assert len(tokens) == u, (len(tokens), u)
    return SubsetManifest(
        unique_tokens=u,
        order_seed=subset.order_seed,
        pool_hash=cache.content_hash,
        tokenizer_hash=cache.tokenizer_hash,
        doc_ids=[cache.doc_ids[i] for i in chosen],
        last_doc_tokens=u - before,
        token_hash=stream_hash(tokens),
        n_docs=len(chosen),
        pool_tokens=pool_tokens,
    )


def load_subset_tokens(cache: TokenCache, manifest: SubsetManifest) -> np.ndarray:
    """The subset's token stream: exactly ``unique_tokens`` tokens, checked against the manifest's hash."""
    if cache.content_hash != manifest.pool_hash or cache.tokenizer_hash != manifest.tokenizer_hash:
        raise ValueError(
            f"{cache.path}: token cache (pool {cache.content_hash[:12]}, tokenizer "
            f"{cache.tokenizer_hash[:12]}) is not the one the subset manifest was made from "
            f"(pool {manifest.pool_hash[:12]}, tokenizer {manifest.tokenizer_hash[:12]})"
        )
    index = {doc_id: i for i, doc_id in enumerate(cache.doc_ids)}
    tokens = _stream(cache, [index[d] for d in manifest.doc_ids], manifest.last_doc_tokens)
    if len(tokens) != manifest.unique_tokens or stream_hash(tokens) != manifest.token_hash:
        raise ValueError(
            f"subset unique_tokens={manifest.unique_tokens}: token stream does not match its manifest"
        )
    return tokens


def verify_nested(manifests: Sequence[SubsetManifest], cache: TokenCache | None = None) -> None:
    """Raise :class:`NestingError` unless every smaller subset is a prefix of every larger one.

    Doc ids are compared always; with ``cache`` the token streams are too (each manifest's ``token_hash``
    against the hash of the same-length prefix of the largest stream).
    """
    if not manifests:
        return
    ordered = sorted(manifests, key=lambda m: m.unique_tokens)
    first = ordered[0]
    for m in ordered[1:]:
        same = (m.pool_hash, m.tokenizer_hash, m.order_seed) == (
            first.pool_hash,
            first.tokenizer_hash,
            first.order_seed,
        )
        if not same:
            raise NestingError(
                f"subsets unique_tokens={first.unique_tokens} and {m.unique_tokens} come from different "
                "pools, tokenizers or order seeds: they cannot be nested"
            )
    for small, large in itertools.pairwise(ordered):
        n = small.n_docs
        head = large.doc_ids[:n]
        if len(head) < n or head[: n - 1] != small.doc_ids[: n - 1] or head[-1] != small.doc_ids[-1]:
            j = next(
                (i for i, (a, b) in enumerate(zip(small.doc_ids, head, strict=False)) if a != b), len(head)
            )
            raise NestingError(
                f"subset unique_tokens={small.unique_tokens} is not a prefix of "
                f"unique_tokens={large.unique_tokens}: "
                f"document {j} is {small.doc_ids[j]!r} vs {head[j] if j < len(head) else None!r}"
            )
        if n == large.n_docs and small.last_doc_tokens > large.last_doc_tokens:
            raise NestingError(
                f"subset unique_tokens={small.unique_tokens} keeps more of its last document than "
                f"unique_tokens={large.unique_tokens}"
            )
    if cache is not None:
        largest = load_subset_tokens(cache, ordered[-1])
        for m in ordered[:-1]:
            if stream_hash(largest[: m.unique_tokens]) != m.token_hash:
                raise NestingError(
                    f"token stream of unique_tokens={m.unique_tokens} is not a prefix of the stream "
                    f"of unique_tokens={ordered[-1].unique_tokens}"
                )


def manifest_dir(root: Path, pool_hash: str, tokenizer_hash: str, order_seed: int) -> Path:
    """Where all subsets of one (pool, tokenizer, order seed) live: the set that must nest."""
    return Path(root) / f"pool-{pool_hash[:16]}_tok-{tokenizer_hash[:16]}_order-{order_seed}"


def manifest_path(root: Path, manifest: SubsetManifest) -> Path:
    return manifest_dir(root, manifest.pool_hash, manifest.tokenizer_hash, manifest.order_seed) / (
        f"unique_tokens-{manifest.unique_tokens}.json"
    )


def write_subset_manifest(root: Path, cache: TokenCache, subset: SizeSubset) -> tuple[Path, SubsetManifest]:
    """Make (or re-check) the manifest of ``subset`` under ``root``; a new one is verified against every
    manifest already in its directory (file-locked, so parallel jobs see a consistent set)."""
    manifest = make_subset(cache, subset)
    path = manifest_path(root, manifest)
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path.parent / ".lock")):
        if path.exists():
            existing = SubsetManifest.load(path)
            if existing.manifest_hash != manifest.manifest_hash:
                raise NestingError(
                    f"{path}: stored manifest differs from the one recomputed from the pool; the cache "
                    "is corrupt or was made by other code: delete the directory to rebuild"
                )
            return path, existing
        others = [SubsetManifest.load(p) for p in sorted(path.parent.glob("unique_tokens-*.json"))]
        verify_nested([*others, manifest], cache)
        manifest.save(path)
        log.info(
            "subset unique_tokens=%d: %d documents (last cut to %d tokens); "
            "nesting verified against %d others",
            manifest.unique_tokens,
            manifest.n_docs,
            manifest.last_doc_tokens,
            len(others),
        )
    return path, manifest
