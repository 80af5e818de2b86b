"""Nested training subsets by exact unique-token budget (Hydra ``subset`` group), their manifests and checks.

A subset of U tokens is made of one *segment* per domain. Each domain gets an exact token budget
``u_d = w_d × U`` (the last domain takes the rounding rest) and its segment is a prefix of that domain's own
seeded document order, cut so it has exactly ``u_d`` tokens (the last document truncated). The weights ``w_d``
are the pool's own token shares (``stratify``, the default: every size has the same composition) or given
(a mixture). With ``stratify=false`` there is one segment over the whole pool in one seeded order (the
composition then drifts with U). Within one composition, U1 < U2 means every segment of U1 is a prefix of the
same domain's segment of U2; nesting is verified, not assumed: each new manifest written to a manifest
directory is checked against all the others there, token streams included.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
from filelock import FileLock

from datascale.config_errors import ConfigError, require, require_positive_int
from datascale.data.token_cache import TokenCache
from datascale.storage import atomic_write_json, canonical_json_hash

log = logging.getLogger("datascale.data")

#: The segment name of an unstratified subset (one order over the whole pool).
WHOLE_POOL = "*"


class NestingError(ValueError):
    """Two subsets that should be prefixes of one another are not."""


@dataclass
class SizeSubset:
    """A training subset of exactly ``unique_tokens`` tokens with a fixed domain composition."""

    unique_tokens: int = 16_000
    """U: tokens in the subset."""
    order_seed: int = 0
    """Seed of the document orders every subset of this composition is a prefix of."""
    stratify: bool = True
    """Every size has the pool's own domain shares (by tokens); false: one order over the whole pool."""
    weights: dict[str, float] | None = None
    """A mixture: each domain's share of U (sums to 1; domains left out get none). Overrides ``stratify``."""
    allow_repeat: bool = False
    """Let a domain whose pool is smaller than its budget repeat its documents (the manifest says how
    often)."""

    def __post_init__(self) -> None:
        require_positive_int("unique_tokens", self.unique_tokens)
        require(
            isinstance(self.order_seed, int)
            and not isinstance(self.order_seed, bool)
            and self.order_seed >= 0,
            "order_seed",
            self.order_seed,
            "must be a non-negative integer",
        )
        require(isinstance(self.stratify, bool), "stratify", self.stratify, "must be true or false")
        require(
            isinstance(self.allow_repeat, bool), "allow_repeat", self.allow_repeat, "must be true or false"
        )
        if self.weights is not None:
            self.weights = _checked_weights(self.weights)

    @property
    def composition(self) -> dict[str, Any]:
        """What decides which documents a size gets, apart from U: the key of the set of subsets that nest."""
        mode = "mixture" if self.weights else "stratified" if self.stratify else "unstratified"
        return {"mode": mode, "weights": self.weights or {}, "allow_repeat": self.allow_repeat}


def _checked_weights(weights: Mapping[str, Any]) -> dict[str, float]:
    require(
        isinstance(weights, Mapping) and len(weights) > 0,
        "weights",
        weights,
        "must be a mapping {domain: share}, e.g. {literature: 0.5, code: 0.5}",
    )
    for domain, w in weights.items():
        require(
            isinstance(w, int | float) and not isinstance(w, bool) and w >= 0,
            f"weights.{domain}",
            w,
            "must be a number >= 0",
        )
    total = float(sum(weights.values()))
    require(
        math.isclose(total, 1.0, abs_tol=1e-6), "weights", dict(weights), f"must sum to 1 (sum is {total:g})"
    )
    return {str(d): float(w) for d, w in sorted(weights.items()) if w > 0}


@dataclass
class Segment:
    """One domain's part of a subset: a prefix of that domain's seeded order (repeated if allowed)."""

    domain: str
    unique_tokens: int
    doc_ids: list[str]
    last_doc_tokens: int
    """Tokens kept from the last (truncated) document."""
    pool_tokens: int
    """Tokens of this domain in the training pool."""
    token_hash: str
    """sha256 of the segment's exact token stream (as little-endian uint32)."""

    @property
    def repeats(self) -> float:
        """How many times the segment holds its domain's pool (> 1 only with ``allow_repeat``)."""
        return self.unique_tokens / self.pool_tokens if self.pool_tokens else math.nan


@dataclass
class SubsetManifest:
    """Which pool documents, in which order, make up a subset, and the hash of its exact token stream."""

    unique_tokens: int
    order_seed: int
    pool_hash: str  # content hash of the training-pool token cache
    tokenizer_hash: str
    composition: dict[str, Any]
    segments: list[Segment]
    token_hash: str  # sha256 of the exact token stream (segments in order)
    pool_tokens: int  # tokens in the whole training pool
    manifest_hash: str = ""

    def compute_hash(self) -> str:
        return canonical_json_hash({k: v for k, v in self.to_dict().items() if k != "manifest_hash"})

    def __post_init__(self) -> None:
        self.segments = [s if isinstance(s, Segment) else Segment(**s) for s in self.segments]
        if not self.manifest_hash:
            self.manifest_hash = self.compute_hash()

    @property
    def doc_ids(self) -> list[str]:
        """Every document of the stream in order (a repeated document appears again)."""
        return [d for s in self.segments for d in s.doc_ids]

    @property
    def n_docs(self) -> int:
        return sum(len(s.doc_ids) for s in self.segments)

    def domains(self) -> dict[str, dict[str, Any]]:
        """Per domain: unique tokens, share of U, pool tokens and repeats (for the run record)."""
        return {
            s.domain: {
                "unique_tokens": s.unique_tokens,
                "share": s.unique_tokens / self.unique_tokens,
                "pool_tokens": s.pool_tokens,
                "repeats": s.repeats,
            }
            for s in self.segments
        }

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
    """The one seeded order of pool documents that every unstratified subset of this seed is a prefix of."""
    return np.random.default_rng(order_seed).permutation(n_docs)


def domain_order(indices: np.ndarray, order_seed: int, domain: str) -> np.ndarray:
    """A domain's own seeded order of its documents (seeded by the order seed and the domain's name)."""
    salt = int.from_bytes(hashlib.sha256(domain.encode("utf-8")).digest()[:8], "little")
    return indices[np.random.default_rng([order_seed, salt]).permutation(len(indices))]


def stream_hash(tokens: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(tokens, dtype="<u4").tobytes()).hexdigest()


def _stream(cache: TokenCache, doc_index: Sequence[int], last_doc_tokens: int) -> np.ndarray:
    parts = [cache.doc_tokens(i) for i in doc_index]
    if parts:
        parts[-1] = parts[-1][:last_doc_tokens]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=cache.tokens.dtype)


def domain_budgets(unique_tokens: int, shares: Mapping[str, float]) -> dict[str, int]:
    """Exact token budgets per domain (sorted): ``floor(w_d U)``, the last domain takes the rest (sum = U)."""
    domains = sorted(shares)
    budgets = {d: math.floor(shares[d] * unique_tokens) for d in domains[:-1]}
    budgets[domains[-1]] = unique_tokens - sum(budgets.values())
    return budgets


def _pool_domain_indices(cache: TokenCache) -> dict[str, np.ndarray]:
    return cache.doc_domains.indices()


def _shares(cache: TokenCache, subset: SizeSubset, by_domain: Mapping[str, np.ndarray]) -> dict[str, float]:
    if subset.weights:
        unknown = sorted(set(subset.weights) - set(by_domain))
        require(not unknown, "weights", unknown, f"unknown domain: the training pool has {sorted(by_domain)}")
        return dict(subset.weights)
    lengths = cache.doc_lengths()
    return {d: float(lengths[idx].sum()) / cache.n_tokens for d, idx in by_domain.items()}


def _segment(cache: TokenCache, domain: str, order: np.ndarray, budget: int, allow_repeat: bool) -> Segment:
    """The first ``budget`` tokens of ``order`` (cycled through again when repeats are allowed)."""
    lengths = cache.doc_lengths()[order]
    pool_tokens = int(lengths.sum())
    if budget > pool_tokens and not allow_repeat:
        name = "unique_tokens" if domain == WHOLE_POOL else f"domain {domain!r}"
        raise ConfigError(
            "unique_tokens",
            budget,
            f"{name} has only {pool_tokens} tokens in the training pool: lower unique_tokens or its weight, "
            "or set subset.allow_repeat=true",
        )
    cycles = max(1, math.ceil(budget / pool_tokens))
    order = np.tile(order, cycles)
    cum = np.cumsum(np.tile(lengths, cycles))
    k = int(np.searchsorted(cum, budget))  # first position where the cumulative count reaches the budget
    before = int(cum[k - 1]) if k > 0 else 0
    chosen = [int(i) for i in order[: k + 1]] if budget > 0 else []
    tokens = _stream(cache, chosen, budget - before)
    assert len(tokens) == budget, (len(tokens), budget)
    return Segment(
        domain=domain,
        unique_tokens=budget,
        doc_ids=[cache.doc_ids[i] for i in chosen],
        last_doc_tokens=budget - before,
        pool_tokens=pool_tokens,
        token_hash=stream_hash(tokens),
    )


def make_subset(cache: TokenCache, subset: SizeSubset) -> SubsetManifest:
    """One segment per domain (or one over the whole pool), each exactly its budget; the stream is exactly
    U."""
    u = subset.unique_tokens
    if u > cache.n_tokens and not subset.allow_repeat:
        raise ConfigError("unique_tokens", u, f"must be <= {cache.n_tokens} (tokens in the training pool)")
    if subset.composition["mode"] == "unstratified":
        order = document_order(cache.n_docs, subset.order_seed)
        segments = [_segment(cache, WHOLE_POOL, order, u, subset.allow_repeat)]
    else:
        by_domain = _pool_domain_indices(cache)
        budgets = domain_budgets(u, _shares(cache, subset, by_domain))
        segments = [
            _segment(cache, d, domain_order(by_domain[d], subset.order_seed, d), b, subset.allow_repeat)
            for d, b in budgets.items()
        ]
    manifest = SubsetManifest(
        unique_tokens=u,
        order_seed=subset.order_seed,
        pool_hash=cache.content_hash,
        tokenizer_hash=cache.tokenizer_hash,
        composition=subset.composition,
        segments=segments,
        token_hash="",
        pool_tokens=cache.n_tokens,
    )
    manifest.token_hash = stream_hash(_manifest_stream(cache, manifest))
    manifest.manifest_hash = manifest.compute_hash()
    return manifest


def _manifest_stream(cache: TokenCache, manifest: SubsetManifest) -> np.ndarray:
    positions = _segment_positions(cache, manifest)
    parts = [
        _stream(cache, pos, s.last_doc_tokens) for s, pos in zip(manifest.segments, positions, strict=True)
    ]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=cache.tokens.dtype)


def load_subset_tokens(cache: TokenCache, manifest: SubsetManifest) -> np.ndarray:
    """The subset's token stream: exactly ``unique_tokens`` tokens, checked against the manifest's hash."""
    if cache.content_hash != manifest.pool_hash or cache.tokenizer_hash != manifest.tokenizer_hash:
        raise ValueError(
            f"{cache.path}: token cache (pool {cache.content_hash[:12]}, tokenizer "
            f"{cache.tokenizer_hash[:12]}) is not the one the subset manifest was made from "
            f"(pool {manifest.pool_hash[:12]}, tokenizer {manifest.tokenizer_hash[:12]})"
        )
    tokens = _manifest_stream(cache, manifest)
    if len(tokens) != manifest.unique_tokens or stream_hash(tokens) != manifest.token_hash:
        raise ValueError(
            f"subset unique_tokens={manifest.unique_tokens}: token stream does not match its manifest"
        )
    return tokens


def _check_same_family(ordered: Sequence[SubsetManifest]) -> None:
    first = ordered[0]
    key = (first.pool_hash, first.tokenizer_hash, first.order_seed, canonical_json_hash(first.composition))
    for m in ordered[1:]:
        if (m.pool_hash, m.tokenizer_hash, m.order_seed, canonical_json_hash(m.composition)) != key:
            raise NestingError(
                f"subsets unique_tokens={first.unique_tokens} and {m.unique_tokens} come from different "
                "pools, tokenizers, order seeds or compositions: they cannot be nested"
            )


def _check_segment_prefix(small: SubsetManifest, large: SubsetManifest, a: Segment, b: Segment) -> None:
    n = len(a.doc_ids)
    head = b.doc_ids[:n]
    where = "" if a.domain == WHOLE_POOL else f" (domain {a.domain!r})"
    if (
        a.unique_tokens > b.unique_tokens
        or head[: n - 1] != a.doc_ids[: n - 1]
        or head[-1:] != a.doc_ids[-1:]
    ):
        j = next((i for i, (x, y) in enumerate(zip(a.doc_ids, head, strict=False)) if x != y), len(head))
        raise NestingError(
            f"subset unique_tokens={small.unique_tokens} is not a prefix of "
            f"unique_tokens={large.unique_tokens}{where}: "
            f"document {j} is {a.doc_ids[j] if j < n else None!r} vs {head[j] if j < len(head) else None!r}"
        )
    if n == len(b.doc_ids) and a.last_doc_tokens > b.last_doc_tokens:
        raise NestingError(
            f"subset unique_tokens={small.unique_tokens} keeps more of its last document than "
            f"unique_tokens={large.unique_tokens}{where}"
        )


def _segment_positions(cache: TokenCache, manifest: SubsetManifest) -> list[list[int]]:
    """Each segment's documents as positions in the cache (one pass over the cache's ids)."""
    flat = cache.doc_ids.positions(manifest.doc_ids)
    bounds = np.cumsum([0, *(len(s.doc_ids) for s in manifest.segments)])
    return [flat[int(a) : int(b)] for a, b in itertools.pairwise(bounds)]


def _segment_streams(cache: TokenCache, manifest: SubsetManifest) -> dict[str, np.ndarray]:
    positions = _segment_positions(cache, manifest)
    return {
        s.domain: _stream(cache, pos, s.last_doc_tokens)
        for s, pos in zip(manifest.segments, positions, strict=True)
    }


def verify_nested(manifests: Sequence[SubsetManifest], cache: TokenCache | None = None) -> None:
    """Raise :class:`NestingError` unless every smaller subset is, segment by segment, a prefix of every
    larger one of the same composition.

    Doc ids are compared always; with ``cache`` the token streams are too (each segment's ``token_hash``
    against the hash of the same-length prefix of the largest subset's segment).
    """
    if not manifests:
        return
    ordered = sorted(manifests, key=lambda m: m.unique_tokens)
    _check_same_family(ordered)
    for small, large in itertools.pairwise(ordered):
        segments = {s.domain: s for s in large.segments}
        for a in small.segments:
            b = segments.get(a.domain)
            if b is None:
                raise NestingError(f"subset unique_tokens={large.unique_tokens} has no domain {a.domain!r}")
            _check_segment_prefix(small, large, a, b)
    if cache is None:
        return
    largest = _segment_streams(cache, ordered[-1])
    for m in ordered[:-1]:
        for s in m.segments:
            if stream_hash(largest[s.domain][: s.unique_tokens]) != s.token_hash:
                where = "" if s.domain == WHOLE_POOL else f" (domain {s.domain!r})"
                raise NestingError(
                    f"token stream of unique_tokens={m.unique_tokens}{where} is not a prefix of the stream "
                    f"of unique_tokens={ordered[-1].unique_tokens}"
                )


def manifest_dir(root: Path, manifest: SubsetManifest) -> Path:
    """Where all subsets of one (pool, tokenizer, order seed, composition) live: the set that must nest."""
    mix = canonical_json_hash(manifest.composition)[:8]
    name = (
        f"pool-{manifest.pool_hash[:16]}_tok-{manifest.tokenizer_hash[:16]}_order-{manifest.order_seed}"
        f"_{manifest.composition['mode']}-{mix}"
    )
    return Path(root) / name


def manifest_path(root: Path, manifest: SubsetManifest) -> Path:
    return manifest_dir(root, manifest) / f"unique_tokens-{manifest.unique_tokens}.json"


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
            "subset unique_tokens=%d (%s): %d documents, domains %s; nesting verified against %d others",
            manifest.unique_tokens,
            manifest.composition["mode"],
            manifest.n_docs,
            {s.domain: s.unique_tokens for s in manifest.segments},
            len(others),
        )
    return path, manifest
