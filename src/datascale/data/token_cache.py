"""Tokenise a set of documents once into a memory-mapped cache directory, keyed by content and tokenizer.

The key is sha256(content hash of the documents + tokenizer hash), so a cache can never be reused for other
text or another tokenizer. A cache is built in a temporary directory and renamed into place under a file lock:
readers see a complete cache or none, and two processes never tokenise the same documents twice.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from filelock import FileLock
from tokenizers import Tokenizer
from tqdm.auto import tqdm

from datascale.storage import atomic_directory

log = logging.getLogger("datascale.data")

FORMAT_VERSION = 2  # 2: doc_domains.json (the domain of every document, for stratified subsets)
CHUNK_BYTES = 1 << 20  # texts per encode_batch call: ~1 MB of documents
#: How much work this process did; tests and logs use it to show that a cached call tokenises nothing.
STATS: dict[str, int] = {"caches_built": 0, "documents_tokenised": 0}


def cache_key(content_hash: str, tokenizer_hash: str) -> str:
    return hashlib.sha256(f"{content_hash}\n{tokenizer_hash}\n{FORMAT_VERSION}".encode()).hexdigest()


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= 65535 else np.dtype(np.uint32)


@dataclass
class TokenCache:
    """An opened cache: ``tokens`` (memmap, every document followed by EOS), ``offsets`` (n_docs + 1), ids,
    meta."""

    path: Path
    tokens: np.ndarray
    offsets: np.ndarray
    doc_ids: list[str]
    meta: dict[str, Any]
    doc_domains: list[str] = field(default_factory=list)
    """The domain of every document (in cache order)."""
    built: bool = field(default=False, compare=False)  # True when this call did the tokenising

    @classmethod
    def open(cls, path: Path | str) -> TokenCache:
        path = Path(path)
        meta = json.loads((path / "meta.json").read_text())
        tokens = np.load(path / "tokens.npy", mmap_mode="r")
        offsets = np.load(path / "offsets.npy")
        doc_ids = json.loads((path / "doc_ids.json").read_text())
        if (
            len(offsets) != len(doc_ids) + 1
            or int(offsets[-1]) != len(tokens)
            or len(tokens) != meta["n_tokens"]
        ):
            raise ValueError(f"{path}: token cache is inconsistent (offsets/doc_ids/tokens/meta disagree)")
        domains = json.loads((path / "doc_domains.json").read_text())
        if len(domains) != len(doc_ids):
            raise ValueError(f"{path}: token cache is inconsistent (doc_domains/doc_ids disagree)")
        return cls(path=path, tokens=tokens, offsets=offsets, doc_ids=doc_ids, meta=meta, doc_domains=domains)

    @property
    def n_docs(self) -> int:
        return len(self.doc_ids)

    @property
    def n_tokens(self) -> int:
        return int(self.meta["n_tokens"])

    @property
    def n_bytes(self) -> int:
        return int(self.meta["n_bytes"])

    @property
    def content_hash(self) -> str:
        return str(self.meta["content_hash"])

    @property
    def tokenizer_hash(self) -> str:
        return str(self.meta["tokenizer_hash"])

    def doc_tokens(self, i: int) -> np.ndarray:
        """Tokens of document ``i``, its trailing EOS included."""
        return self.tokens[int(self.offsets[i]) : int(self.offsets[i + 1])]

    def doc_lengths(self) -> np.ndarray:
        return np.diff(self.offsets)


def _tokenise_into(
    tmp: Path,
    texts: Sequence[str],
    tokenizer: Tokenizer,
    eos_id: int,
    dtype: np.dtype,
    progress: bool,
    desc: str,
) -> tuple[np.ndarray, int]:
    """Encode in ~1 MB batches, streaming ids to a raw file (bounded memory); returns (offsets, n_bytes)."""
    offsets = np.zeros(len(texts) + 1, dtype=np.int64)
    n_bytes, pos, i = 0, 0, 0
    raw = tmp / "tokens.bin"
    with open(raw, "wb") as out, tqdm(total=len(texts), desc=desc, unit="doc", disable=not progress) as bar:
        while i < len(texts):
            batch: list[str] = []
            size = 0
            while i + len(batch) < len(texts) and (not batch or size < CHUNK_BYTES):
                text = texts[i + len(batch)]
                batch.append(text)
                size += len(text.encode("utf-8"))
            encodings = tokenizer.encode_batch(batch, add_special_tokens=False)
            for j, enc in enumerate(encodings):
                ids = np.asarray([*enc.ids, eos_id], dtype=dtype)
                out.write(ids.tobytes())
                pos += len(ids)
                offsets[i + j + 1] = pos
            n_bytes += size
            i += len(batch)
            bar.update(len(batch))
    if pos == 0:
        np.save(tmp / "tokens.npy", np.zeros(0, dtype=dtype))
    else:  # raw file -> .npy through two memmaps: no full copy in memory
        tokens = np.lib.format.open_memmap(tmp / "tokens.npy", mode="w+", dtype=dtype, shape=(pos,))
        tokens[:] = np.memmap(raw, dtype=dtype, mode="r")
        tokens.flush()
        del tokens
    raw.unlink()
    return offsets, n_bytes


def build_token_cache(
    root: Path,
    doc_ids: Sequence[str],
    texts: Sequence[str],
    content_hash: str,
    tokenizer: Tokenizer,
    tokenizer_hash: str,
    eos_id: int,
    name: str = "",
    progress: bool = False,
    domains: Sequence[str] | None = None,
) -> TokenCache:
    """Open the cache for these documents and tokenizer, building it first if needed (atomic, file-locked).

    ``content_hash`` must be :func:`datascale.data.documents.content_hash` of the documents: it is trusted as
    their identity, so the caller computes it from the same texts it passes.
    """
    domains = list(domains) if domains is not None else [""] * len(doc_ids)
    if not len(doc_ids) == len(texts) == len(domains):
        raise ValueError(f"{len(doc_ids)} doc ids for {len(texts)} texts and {len(domains)} domains")
    key = cache_key(content_hash, tokenizer_hash)
    root = Path(root)
    final = root / key[:32]
    root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root / f"{key[:32]}.lock")):
        if (final / "meta.json").exists():
            return TokenCache.open(final)
        start = time.perf_counter()
        with atomic_directory(final) as tmp:
            vocab_size = tokenizer.get_vocab_size(with_added_tokens=True)
            dtype = token_dtype(vocab_size)
            offsets, n_bytes = _tokenise_into(
                tmp, texts, tokenizer, eos_id, dtype, progress, f"tokenise {name}".strip()
            )
            np.save(tmp / "offsets.npy", offsets)
            (tmp / "doc_ids.json").write_text(json.dumps(list(doc_ids)))
            (tmp / "doc_domains.json").write_text(json.dumps(domains))
            meta = {
                "format_version": FORMAT_VERSION,
                "key": key,
                "name": name,
                "content_hash": content_hash,
                "tokenizer_hash": tokenizer_hash,
                "n_docs": len(doc_ids),
                "n_tokens": int(offsets[-1]),
                "n_bytes": n_bytes,
                "dtype": dtype.name,
                "eos_id": eos_id,
                "vocab_size": vocab_size,
            }
            (tmp / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
        STATS["caches_built"] += 1
        STATS["documents_tokenised"] += len(texts)
        elapsed = time.perf_counter() - start
        log.info(
            "token cache %s: %d docs -> %d tokens (%.2f bytes/token) in %.1f s (%.0f tokens/s)",
            name or key[:12],
            len(texts),
            int(offsets[-1]),
            n_bytes / max(1, int(offsets[-1])),
            elapsed,
            int(offsets[-1]) / max(elapsed, 1e-9),
        )
    cache = TokenCache.open(final)
    cache.built = True
    return cache


def unigram_entropy(counts: np.ndarray) -> float:
    """Entropy in nats of the distribution ``counts / counts.sum()`` (zero counts contribute nothing)."""
    counts = np.asarray(counts, dtype=np.float64)
    total = float(counts.sum())
    if total <= 0:
        raise ValueError("unigram_entropy: no tokens")
    p = counts[counts > 0] / total
    return float(-np.sum(p * np.log(p)))


def reference_losses(tokens: np.ndarray, token_bytes: np.ndarray, vocab_size: int) -> dict[str, float]:
    """Losses of two models that learnt (almost) nothing, on the targets an evaluation scores (tokens 1..n-1).

    Why: a loss means little without its floor and ceiling. ``uniform_nats`` = ln V is the loss of a uniform
    prediction over the vocabulary (where every curve starts: L0 of an envelope law); ``unigram_nats`` is the
    entropy of the set's own token frequencies, the loss of a model that knows only those (a model that
    reads context must go below it). ``*_bpb``: the same in bits per byte with the byte lengths bits per byte
    uses (nats · targets / (bytes · ln 2)). ``n_tokens``/``n_bytes``: the targets and their bytes.
    """
    targets = np.asarray(tokens[1:], dtype=np.int64)
    if targets.size == 0:
        raise ValueError("reference_losses: needs at least 2 tokens")
    counts = np.bincount(targets, minlength=int(vocab_size))
    n_bytes = int(np.dot(counts[: len(token_bytes)], np.asarray(token_bytes, dtype=np.int64)[: len(counts)]))
    uniform, unigram = float(np.log(vocab_size)), unigram_entropy(counts)
    per_byte = targets.size / (n_bytes * float(np.log(2.0))) if n_bytes > 0 else float("nan")
    return {
        "uniform_nats": uniform,
        "unigram_nats": unigram,
        "uniform_bpb": uniform * per_byte,
        "unigram_bpb": unigram * per_byte,
        "n_tokens": int(targets.size),
        "n_bytes": n_bytes,
    }
