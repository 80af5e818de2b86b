"""Exact deduplication and per-domain held-out sets (Hydra ``split`` group).

Validation and test sets depend on the corpus and this config only, never on a run seed or a subset size, so
every run of a study is scored on the same text. Dedup runs over the whole corpus before splitting, so no text
can sit in both a held-out set and the training pool.
"""

from __future__ import annotations

import hashlib
import re
import tempfile
import unicodedata
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from datatrove.pipeline.base import PipelineStep

from datascale.config_errors import ConfigError, require
from datascale.data.documents import BATCH_ROWS, text_bytes
from datascale.data.executor import DataExecutor, LocalExecutor
from datascale.storage import atomic_write

EVAL_SPLITS: tuple[str, ...] = ("val", "test")
_WHITESPACE = re.compile(r"\s+")


def normalise_text(text: str) -> str:
    """NFC + collapsed whitespace: texts that differ only in spacing or line endings count as duplicates."""
    return _WHITESPACE.sub(" ", unicodedata.normalize("NFC", text)).strip()


def text_key(text: str) -> str:
    return hashlib.sha256(normalise_text(text).encode("utf-8")).hexdigest()


#: Bytes of each text's sha256 kept as its dedup key (two uint64 columns): a collision among 10^9 distinct
#: texts has odds of about 10^-21.
DIGEST_BYTES = 16


def text_digests(texts: Iterable[str]) -> np.ndarray:
    """uint64[n, 2]: the first :data:`DIGEST_BYTES` bytes of the sha256 of each text's :func:`normalise_text`;
    a row of zeros where the normalised text is empty (such texts are dropped). Call it a batch at a time:
    it holds a bytes object per text until it returns."""
    empty = bytes(DIGEST_BYTES)
    keys = []
    for text in texts:
        normal = normalise_text(text)
        keys.append(hashlib.sha256(normal.encode("utf-8")).digest()[:DIGEST_BYTES] if normal else empty)
    return np.frombuffer(b"".join(keys), dtype="<u8").reshape(-1, 2).copy()


def first_occurrences(digests: np.ndarray) -> np.ndarray:
    """int64 rows (ascending) of the first occurrence of every distinct non-zero digest row of ``digests``
    (uint64[n, 2]): numpy arrays of a few dozen bytes per document, no Python object per document."""
    if not len(digests):
        return np.zeros(0, dtype=np.int64)
    order = np.lexsort((digests[:, 1], digests[:, 0]))  # rows grouped by digest
    new_run = np.ones(len(order), dtype=bool)
    for col in (0, 1):  # one sorted column at a time: 8 bytes a document, not 16
        sorted_col = digests[order, col]
        new_run[1:] &= sorted_col[1:] == sorted_col[:-1]
        del sorted_col
    np.logical_not(new_run, out=new_run)
    new_run[0] = True
    # the smallest row of each run of equal digests (whatever order the sort left ties in)
    first = np.minimum.reduceat(order, np.flatnonzero(new_run)).astype(np.int64)
    first = first[digests[first].any(axis=1)]  # the all-zero run: empty texts
    first.sort()
    return first


def open_documents(path: str) -> datasets.Dataset:
    """Documents another process wrote: a ``save_to_disk`` directory or one Arrow file (memory-mapped)."""
    return datasets.load_from_disk(path) if Path(path).is_dir() else datasets.Dataset.from_file(path)


def documents_on_disk(ds: datasets.Dataset, scratch: Path) -> str:
    """Where a task process can open ``ds``: its own Arrow file when that is all of it (a source's memory-
    mapped file), otherwise a copy saved under ``scratch`` (an in-memory or a selected Dataset)."""
    files = [str(f["filename"]) for f in ds.cache_files]
    if (
        len(files) == 1
        and getattr(ds, "_indices", None) is None
        and datasets.Dataset.from_file(files[0]).num_rows == len(ds)
    ):
        return files[0]
    ds.save_to_disk(str(scratch / "documents"))
    return str(scratch / "documents")


class DigestParts(PipelineStep):
    """The datatrove step: task ``rank`` of ``world_size`` writes the :func:`text_digests` of its contiguous
    range of the documents to ``<out>/<rank>.npy`` (atomically; datatrove skips a completed task)."""

    name = "digest"
    type = "datascale"

    def __init__(self, documents: str, out: str):
        super().__init__()
        self.documents, self.out = documents, out

    def run(self, data: Any = None, rank: int = 0, world_size: int = 1) -> Iterator[Any]:
        docs = open_documents(self.documents)
        n = len(docs)
        lo, hi = n * rank // world_size, n * (rank + 1) // world_size
        part = docs.select_columns(["text"]).select(range(lo, hi))  # contiguous: a slice, no index mapping
        digests = np.concatenate(
            [np.zeros((0, 2), dtype="<u8")]
            + [text_digests(batch["text"]) for batch in part.iter(batch_size=BATCH_ROWS)]
        )
        atomic_write(Path(self.out) / f"{rank:05d}.npy", lambda fh: np.save(fh, digests))
        self.stat_update("documents", value=hi - lo)
        yield from ()


def deduplicate(
    ds: datasets.Dataset, executor: DataExecutor | None = None, work: Path | None = None
) -> tuple[datasets.Dataset, int]:
    """Drop exact duplicates (by normalised-text digest, keeping the first) and empty texts; returns (ds,
    removed).

    The digests are computed by ``executor`` (a datatrove pipeline of :class:`DigestParts`: local processes by
    default, a SLURM array with ``data_executor=slurm``), each task over a contiguous range of the documents;
    with ``work`` a rebuild after a kill reruns only the tasks without a completion marker there (the caller
    removes ``work`` once the corpus is saved). This process then holds 16 bytes a document (plus the sort's
    indices), never a Python object per document.
    """
    executor = executor or LocalExecutor()
    tasks = min(max(1, len(ds)), executor.task_count(int(text_bytes(ds).sum())))
    if work is not None:
        work.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".dedup-", dir=work) as scratch:
        parts = Path(work or scratch) / f"tasks-{tasks}"
        step = DigestParts(documents_on_disk(ds, Path(scratch)), str(parts / "digests"))
        executor.run(step, tasks, parts)
        digests = np.empty((len(ds), 2), dtype="<u8")  # filled part by part: no second copy
        filled = 0
        for r in range(tasks):
            part = np.load(parts / "digests" / f"{r:05d}.npy", mmap_mode="r")
            if filled + len(part) > len(ds):
                break
            digests[filled : filled + len(part)] = part
            filled += len(part)
            del part
    if filled != len(ds):
        raise RuntimeError(f"dedup: digests for {filled} of {len(ds)} documents")
    keep = first_occurrences(digests)
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

    pool: np.ndarray
    """int64, ascending: one row per pool document (stored as a ``.npy`` file beside the splits record)."""
    eval: dict[str, dict[str, list[int]]]
    domains: list[str] = field(default_factory=list)
    train_domains: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The record's JSON part: the held-out lists (small) and the pool's length, not the pool itself."""
        return {
            "eval": self.eval,
            "domains": self.domains,
            "train_domains": self.train_domains,
            "pool_documents": len(self.pool),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], pool: np.ndarray) -> SplitAssignment:
        if len(pool) != data["pool_documents"]:
            raise ValueError(f"the pool array has {len(pool)} rows, its record says {data['pool_documents']}")
        return cls(pool, data["eval"], data["domains"], data["train_domains"])

    def all_indices(self) -> dict[str, Sequence[int] | np.ndarray]:
        """Every split by name: ``pool``, then ``<domain>/val`` and ``<domain>/test`` per domain in sorted
        order, whether the assignment was just made or read back from its record (stored with sorted keys), so
        what is drawn from the held-out documents in this order (the downstream suite) is the same."""
        out: dict[str, Sequence[int] | np.ndarray] = {"pool": self.pool}
        for domain in sorted(self.eval):
            for name in EVAL_SPLITS:
                out[f"{domain}/{name}"] = self.eval[domain][name]
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
        pool=np.sort(np.concatenate([np.zeros(0, np.int64), *pool])).astype(np.int64),
        eval=eval_sets,
        domains=corpus_domains,
        train_domains=train_domains,
    )
