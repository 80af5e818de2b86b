"""Tokenise a set of documents once into a memory-mapped cache directory, keyed by content and tokenizer.

The key is sha256(content hash of the documents + tokenizer hash), so a cache can never be reused for other
text or another tokenizer. A cache is built in a temporary directory and renamed into place under a file lock:
readers see a complete cache or none, and two processes never tokenise the same documents twice.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, overload

import numpy as np
from filelock import FileLock
from tokenizers import Tokenizer
from tqdm.auto import tqdm

from datascale.data.documents import Batch
from datascale.storage import atomic_directory

log = logging.getLogger("datascale.data")

FORMAT_VERSION = 3  # 3: doc ids and domains as arrays (doc_ids.bin, doc_domains.npy), not JSON lists
CHUNK_BYTES = 1 << 20  # texts per encode_batch call: ~1 MB of documents
#: How much work this process did; tests and logs use it to show that a cached call tokenises nothing.
STATS: dict[str, int] = {"caches_built": 0, "documents_tokenised": 0}
#: Files of a cache directory.
FILES = ("doc_domains.npy", "doc_id_offsets.npy", "doc_ids.bin", "domains.json", "meta.json", "offsets.npy",
         "tokens.npy")  # fmt: skip


def cache_key(content_hash: str, tokenizer_hash: str) -> str:
    return hashlib.sha256(f"{content_hash}\n{tokenizer_hash}\n{FORMAT_VERSION}".encode()).hexdigest()


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= 65535 else np.dtype(np.uint32)


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity), at least 1."""
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


class _Column(Sequence[str]):
    """A read-only column of strings kept as arrays: ``item(i)`` reads one; slices are lists."""

    def item(self, i: int) -> str:
        raise NotImplementedError

    @overload
    def __getitem__(self, i: int) -> str: ...

    @overload
    def __getitem__(self, i: slice) -> list[str]: ...

    def __getitem__(self, i: int | slice) -> str | list[str]:
        if isinstance(i, slice):
            return [self.item(j) for j in range(*i.indices(len(self)))]
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(i)
        return self.item(i)


class DocIds(_Column):
    """The documents' ids, read from one UTF-8 blob and an offsets array (no Python string per document
    until one is asked for)."""

    def __init__(self, blob: np.ndarray, offsets: np.ndarray) -> None:
        self.blob, self.offsets = blob, offsets

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def item(self, i: int) -> str:
        return self.blob[int(self.offsets[i]) : int(self.offsets[i + 1])].tobytes().decode("utf-8")

    def __iter__(self) -> Iterator[str]:
        """Every id in order, decoded 65,536 at a time."""
        for a in range(0, len(self), 1 << 16):
            b = min(a + (1 << 16), len(self))
            data = self.blob[int(self.offsets[a]) : int(self.offsets[b])].tobytes()
            ends = (self.offsets[a : b + 1] - self.offsets[a]).tolist()
            yield from (data[ends[k] : ends[k + 1]].decode("utf-8") for k in range(b - a))

    def positions(self, wanted: Sequence[str]) -> list[int]:
        """The position of each id in ``wanted`` (one pass over the ids; memory for ``wanted`` only)."""
        need = set(wanted)
        found = {doc_id: i for i, doc_id in enumerate(self) if doc_id in need}
        missing = [d for d in wanted if d not in found]
        if missing:
            raise KeyError(f"{len(missing)} doc ids are not in this token cache, e.g. {missing[0]!r}")
        return [found[d] for d in wanted]


class DocDomains(_Column):
    """The documents' domains: a code per document (``codes``) into the sorted domain ``names``."""

    def __init__(self, names: list[str], codes: np.ndarray) -> None:
        self.names, self.codes = names, codes

    def __len__(self) -> int:
        return len(self.codes)

    def item(self, i: int) -> str:
        return self.names[int(self.codes[i])]

    def indices(self) -> dict[str, np.ndarray]:
        """Document positions per domain present (sorted by name)."""
        positions = {name: np.flatnonzero(self.codes == k) for k, name in enumerate(self.names)}
        return {name: idx for name, idx in positions.items() if len(idx)}


@dataclass
class TokenCache:
    """An opened cache: ``tokens`` (memmap, every document followed by EOS), ``offsets`` (n_docs + 1), ids,
    meta."""

    path: Path
    tokens: np.ndarray
    offsets: np.ndarray
    doc_ids: DocIds
    meta: dict[str, Any]
    doc_domains: DocDomains
    """The domain of every document (in cache order)."""
    built: bool = field(default=False, compare=False)  # True when this call did the tokenising

    @classmethod
    def open(cls, path: Path | str) -> TokenCache:
        path = Path(path)
        meta = json.loads((path / "meta.json").read_text())
        tokens = np.load(path / "tokens.npy", mmap_mode="r")
        offsets = np.load(path / "offsets.npy")
        blob = (
            np.memmap(path / "doc_ids.bin", dtype=np.uint8, mode="r")
            if meta["id_bytes"]
            else np.zeros(0, np.uint8)
        )
        doc_ids = DocIds(blob, np.load(path / "doc_id_offsets.npy"))
        domains = DocDomains(
            json.loads((path / "domains.json").read_text()), np.load(path / "doc_domains.npy")
        )
        if (
            len(offsets) != len(doc_ids) + 1
            or int(offsets[-1]) != len(tokens)
            or len(tokens) != meta["n_tokens"]
            or len(domains) != len(doc_ids)
            or int(doc_ids.offsets[-1]) != len(blob)
        ):
            raise ValueError(
                f"{path}: token cache is inconsistent (offsets/doc ids/domains/tokens/meta disagree)"
            )
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


def _encode(
    tokenizer: Tokenizer, texts: list[str], eos_id: int, dtype: np.dtype
) -> tuple[np.ndarray, np.ndarray]:
    """(ids of every text followed by EOS, tokens per document): runs in a worker thread; the tokenizer
    releases the GIL while it encodes, so threads use every core."""
    encodings = tokenizer.encode_batch_fast(texts, add_special_tokens=False)
    lengths = np.fromiter((len(e.ids) + 1 for e in encodings), dtype=np.int64, count=len(encodings))
    ids = np.fromiter(
        itertools.chain.from_iterable((*e.ids, eos_id) for e in encodings),
        dtype=dtype,
        count=int(lengths.sum()),
    )
    return ids, lengths


def _chunks(batches: Iterable[Batch]) -> Iterator[tuple[list[str], list[str], list[str], int]]:
    """Re-cut document batches into (ids, domains, texts, UTF-8 bytes) chunks of about CHUNK_BYTES."""
    ids: list[str] = []
    domains: list[str] = []
    texts: list[str] = []
    size = 0
    for batch in batches:
        for doc_id, domain, text in zip(batch["doc_id"], batch["domain"], batch["text"], strict=True):
            ids.append(doc_id)
            domains.append(domain)
            texts.append(text)
            size += len(text.encode("utf-8"))
            if size >= CHUNK_BYTES:
                yield ids, domains, texts, size
                ids, domains, texts, size = [], [], [], 0
    if texts:
        yield ids, domains, texts, size


@dataclass
class _Writer:
    """Appends tokens and doc ids to files as they are produced; per-document lengths and domain codes are
    numpy arrays (8 + 2 bytes a document)."""

    tmp: Path
    tokens: BinaryIO
    ids: BinaryIO
    lengths: list[np.ndarray] = field(default_factory=list)
    id_lengths: list[np.ndarray] = field(default_factory=list)
    codes: list[np.ndarray] = field(default_factory=list)
    domain_codes: dict[str, int] = field(default_factory=dict)
    n_bytes: int = 0

    def write(
        self, chunk: tuple[list[str], list[str], list[str], int], encoded: tuple[np.ndarray, np.ndarray]
    ) -> None:
        doc_ids, domains, _, size = chunk
        self.tokens.write(encoded[0].tobytes())
        self.lengths.append(encoded[1])
        raw = [d.encode("utf-8") for d in doc_ids]
        self.ids.write(b"".join(raw))
        self.id_lengths.append(np.fromiter(map(len, raw), dtype=np.int64, count=len(raw)))
        codes = [self.domain_codes.setdefault(d, len(self.domain_codes)) for d in domains]
        self.codes.append(np.asarray(codes, dtype=np.int64))
        self.n_bytes += size

    def finish(self, dtype: np.dtype) -> np.ndarray:
        """Write the index files; returns the token offsets."""
        lengths = np.concatenate([np.zeros(1, np.int64), *self.lengths])
        offsets = np.cumsum(lengths)
        np.save(self.tmp / "offsets.npy", offsets)
        np.save(
            self.tmp / "doc_id_offsets.npy",
            np.cumsum(np.concatenate([np.zeros(1, np.int64), *self.id_lengths])),
        )
        names = sorted(self.domain_codes)
        remap = np.zeros(max(1, len(names)), dtype=np.int64)
        for new, name in enumerate(names):
            remap[self.domain_codes[name]] = new
        codes = remap[np.concatenate(self.codes)] if self.codes else np.zeros(0, np.int64)
        np.save(self.tmp / "doc_domains.npy", codes.astype(np.uint16 if len(names) < 65536 else np.uint32))
        (self.tmp / "domains.json").write_text(json.dumps(names))
        return offsets


def write_cache_files(
    tmp: Path, batches: Iterable[Batch], tokenizer: Tokenizer, eos_id: int, workers: int, bar: Any = None
) -> dict[str, Any]:
    """Tokenise the documents ``batches`` yields into the cache files in ``tmp`` (every file but meta.json):
    ~1 MB chunks encoded on ``workers`` threads, ids written in document order as they come back (at most
    2 x workers chunks in flight: bounded memory). Returns the counts meta.json records."""
    dtype = token_dtype(tokenizer.get_vocab_size(with_added_tokens=True))
    with (
        open(tmp / "tokens.bin", "wb") as tokens,
        open(tmp / "doc_ids.bin", "wb") as ids,
        ThreadPoolExecutor(workers) as pool,
    ):
        writer = _Writer(tmp, tokens, ids)
        pending: deque[tuple[Any, Future]] = deque()
        for chunk in _chunks(batches):
            pending.append((chunk, pool.submit(_encode, tokenizer, chunk[2], eos_id, dtype)))
            while pending and (len(pending) > 2 * workers or pending[0][1].done()):
                done, future = pending.popleft()
                writer.write(done, future.result())
                if bar is not None:
                    bar.update(len(done[0]))
        for done, future in pending:
            writer.write(done, future.result())
            if bar is not None:
                bar.update(len(done[0]))
    offsets = writer.finish(dtype)
    _to_npy(tmp / "tokens.bin", tmp / "tokens.npy", dtype, [(tmp / "tokens.bin", int(offsets[-1]))])
    return _counts(tmp, offsets, writer.n_bytes, dtype) | {"workers": workers}


def _counts(tmp: Path, offsets: np.ndarray, n_bytes: int, dtype: np.dtype) -> dict[str, Any]:
    return {
        "n_docs": len(offsets) - 1,
        "n_tokens": int(offsets[-1]),
        "n_bytes": n_bytes,
        "id_bytes": (tmp / "doc_ids.bin").stat().st_size,
        "dtype": dtype.name,
    }


def write_part(
    out: Path, batches: Iterable[Batch], tokenizer: Tokenizer, eos_id: int, workers: int = 1
) -> None:
    """One part of a cache built in parts (a task of a sharded build): the cache files of its documents,
    with the counts in meta.json; written atomically (complete or absent), skipped if already there."""
    if (out / "meta.json").exists():
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_directory(out) as tmp:
        counts = write_cache_files(tmp, batches, tokenizer, eos_id, workers)
        (tmp / "meta.json").write_text(json.dumps(counts, indent=2, sort_keys=True))


def merge_parts(tmp: Path, parts: Sequence[Path]) -> dict[str, Any]:
    """The cache files of the parts' documents, parts in order (tokens and ids copied in blocks; offsets
    shifted; domain codes re-mapped to the sorted union of the parts' domains). Returns meta.json's counts."""
    opened = [TokenCache.open(p) for p in parts]
    dtype = np.dtype(opened[0].tokens.dtype) if opened else np.dtype(np.uint16)
    names = sorted({n for c in opened for n in c.doc_domains.names})
    offsets, id_offsets, codes = [np.zeros(1, np.int64)], [np.zeros(1, np.int64)], []
    with open(tmp / "doc_ids.bin", "wb") as ids:
        for cache in opened:
            offsets.append(cache.offsets[1:] + offsets[-1][-1])
            id_offsets.append(cache.doc_ids.offsets[1:] + id_offsets[-1][-1])
            ids.write(cache.doc_ids.blob.tobytes())
            remap = np.asarray([names.index(n) for n in cache.doc_domains.names] or [0], dtype=np.int64)
            codes.append(remap[cache.doc_domains.codes.astype(np.int64)])
    merged = np.concatenate(offsets)
    np.save(tmp / "offsets.npy", merged)
    np.save(tmp / "doc_id_offsets.npy", np.concatenate(id_offsets))
    np.save(tmp / "doc_domains.npy", np.concatenate([np.zeros(0, np.int64), *codes]).astype(np.uint16))
    (tmp / "domains.json").write_text(json.dumps(names))
    _to_npy(
        None,
        tmp / "tokens.npy",
        dtype,
        [(p / "tokens.npy", c.n_tokens) for p, c in zip(parts, opened, strict=True)],
    )
    return _counts(tmp, merged, sum(c.n_bytes for c in opened), dtype) | {"parts": len(parts)}


def _to_npy(raw: Path | None, out: Path, dtype: np.dtype, sources: Sequence[tuple[Path, int]]) -> None:
    """The token files ``sources`` ((path, tokens): raw ``.bin`` or ``.npy``) one after the other as one
    ``.npy``, copied through memmaps in blocks (never a full copy in memory); ``raw`` is deleted after."""
    n = sum(count for _, count in sources)
    tokens = np.lib.format.open_memmap(out, mode="w+", dtype=dtype, shape=(n,))
    pos, step = 0, 1 << 24
    for path, count in sources:
        if count == 0:
            continue
        source = (
            np.load(path, mmap_mode="r") if path.suffix == ".npy" else np.memmap(path, dtype=dtype, mode="r")
        )
        for start in range(0, count, step):
            block = source[start : start + step]
            tokens[pos : pos + len(block)] = block
            pos += len(block)
        del source
    tokens.flush()
    del tokens
    if raw is not None:
        raw.unlink()


def open_or_build(
    root: Path,
    content_hash: str,
    tokenizer_hash: str,
    name: str,
    fill: Callable[[Path], dict[str, Any]],
    **meta: Any,
) -> TokenCache:
    """Open the cache of (``content_hash``, ``tokenizer_hash``) under ``root``, building it first with
    ``fill(tmp)`` (writes the cache files, returns their counts) if needed: file-locked, atomic (a build
    that fails, a full disk included, leaves nothing a later call trusts)."""
    key = cache_key(content_hash, tokenizer_hash)
    root = Path(root)
    final = root / key[:32]
    root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root / f"{key[:32]}.lock")):
        if (final / "meta.json").exists():
            return TokenCache.open(final)
        start = time.perf_counter()
        with atomic_directory(final) as tmp:
            counts = fill(tmp)
            seconds = time.perf_counter() - start
            identity = {
                "key": key,
                "name": name,
                "content_hash": content_hash,
                "tokenizer_hash": tokenizer_hash,
            }
            meta |= {
                "format_version": FORMAT_VERSION,
                **identity,
                "build_seconds": round(seconds, 3),
                **counts,
            }
            (tmp / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
        _record_build(meta, seconds)
    cache = TokenCache.open(final)
    cache.built = True
    return cache


def _record_build(meta: dict[str, Any], seconds: float) -> None:
    STATS["caches_built"] += 1
    STATS["documents_tokenised"] += meta["n_docs"]
    log.info(
        "token cache %s: %d docs -> %d tokens (%.2f bytes/token) in %.1f s (%.0f tokens/s)",
        meta["name"] or meta["key"][:12],
        meta["n_docs"],
        meta["n_tokens"],
        meta["n_bytes"] / max(1, meta["n_tokens"]),
        seconds,
        meta["n_tokens"] / max(seconds, 1e-9),
    )


def build_token_cache_from_batches(
    root: Path,
    batches: Iterable[Batch],
    content_hash: str,
    tokenizer: Tokenizer,
    tokenizer_hash: str,
    eos_id: int,
    name: str = "",
    progress: bool = False,
    n_docs: int | None = None,
    workers: int | None = None,
) -> TokenCache:
    """Open the cache for these documents and tokenizer, building it first if needed (atomic, file-locked).

    ``batches`` yields the documents (``doc_id``, ``domain``, ``text`` lists) in cache order; they are read
    once, only when the cache must be built, and tokenised on ``workers`` threads (default: every usable
    core). ``content_hash`` must be :func:`datascale.data.documents.content_hash` of the documents: it is
    trusted as their identity, so the caller computes it from the same documents it passes.
    """

    def fill(tmp: Path) -> dict[str, Any]:
        with tqdm(total=n_docs, desc=f"tokenise {name}".strip(), unit="doc", disable=not progress) as bar:
            return write_cache_files(tmp, batches, tokenizer, eos_id, workers or usable_cores(), bar)

    vocab_size = tokenizer.get_vocab_size(with_added_tokens=True)
    return open_or_build(root, content_hash, tokenizer_hash, name, fill, eos_id=eos_id, vocab_size=vocab_size)


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
