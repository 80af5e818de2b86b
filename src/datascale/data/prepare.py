"""Glue: source -> documents -> dedup/splits -> tokenizer -> token caches -> subset manifest, cached and
locked.

Every stage is stored under ``cache_dir`` by a content key (what went in + its config), built in a temporary
place and renamed into position under a file lock, so parallel Hydra jobs can call :func:`prepare_data` at
once: one builds, the others wait and reuse. A fully cached call loads no documents and tokenises nothing.

CLI: ``python -m datascale.data.prepare [--unique-tokens N [N ...]] [hydra overrides ...]``.
"""

from __future__ import annotations

import argparse
import errno
import json
import logging
import shutil
import sys
import tempfile
import time
from collections.abc import Collection, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import tokenizers
from filelock import FileLock

from datascale.artifacts import DataArtifacts
from datascale.config_errors import ConfigError
from datascale.configs import instantiate_group
from datascale.data.documents import (
    BATCH_ROWS,
    Batch,
    dataset_content_hash,
    domain_stats,
    iter_batches,
    text_bytes,
    validate_documents,
)
from datascale.data.downstream import DownstreamSuite, build_suite
from datascale.data.executor import DataExecutor, LocalExecutor, tokenise_pool
from datascale.data.sources import DocumentSource
from datascale.data.splits import HeldoutSplit, SplitAssignment, assign_splits, deduplicate
from datascale.data.subsets import SizeSubset, SubsetManifest, verify_nested, write_subset_manifest
from datascale.data.token_cache import TokenCache, build_token_cache_from_batches, cache_key, reference_losses
from datascale.data.tokenizer import BPETokenizer, TrainedTokenizer, token_byte_lengths
from datascale.data.transforms import TRANSFORM_GROUPS, Identity, PoolTransform, TransformReport
from datascale.storage import atomic_directory, atomic_write, atomic_write_json, canonical_json_hash

log = logging.getLogger("datascale.data")

#: The ``none`` leaf of the downstream group.
NO_SUITE = DownstreamSuite(enabled=False)
#: Bump a stage's version when its output format or rules change; it is part of that stage's cache key.
STAGE_VERSIONS = {"corpus": 1, "splits": 2, "tokenizer": 1}  # splits 2: the pool in a .npy file
GROUPS = ("source", "split", "tokenizer", "subset")


# ---------------------------------------------------------------------------------------------- helpers


@contextmanager
def _prefixed(group: str) -> Iterator[None]:
    """ConfigErrors raised inside a stage name their config group (``subset.unique_tokens=...``)."""
    try:
        yield
    except ConfigError as err:
        raise err.prefixed(group) from None


@contextmanager
def _quiet_datasets(progress: bool) -> Iterator[None]:
    was_enabled = datasets.utils.are_progress_bars_disabled() is False
    if not progress and was_enabled:
        datasets.utils.disable_progress_bars()
    try:
        yield
    finally:
        if not progress and was_enabled:
            datasets.utils.enable_progress_bars()


class _Corpus:
    """The deduplicated corpus on disk; documents are only read when a stage has to be built."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.manifest: dict[str, Any] = json.loads((path / "manifest.json").read_text())

    @property
    def hash(self) -> str:
        return str(self.manifest["corpus_hash"])

    @cached_property
    def documents(self) -> datasets.Dataset:
        """Memory-mapped from the corpus directory: read in batches, never as whole columns."""
        return datasets.load_from_disk(str(self.path / "documents"))


# ---------------------------------------------------------------------------------------------- stages


def _corpus_stage(source: DocumentSource, root: Path, progress: bool, executor: DataExecutor) -> _Corpus:
    fingerprint = source.fingerprint()
    key = canonical_json_hash({"source": fingerprint, "version": STAGE_VERSIONS["corpus"]})
    final = root / key[:24]
    root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root / f"{key[:24]}.lock")):
        if (final / "manifest.json").exists():
            log.info("corpus: cached %s", final)
            return _Corpus(final)
        # the dedup tasks' digests and completion markers: a build killed mid-dedup reruns only the tasks
        # that had not finished (the source loads the same documents again: same fingerprint)
        work = root / f".work-{key[:24]}-dedup"
        # the source's Arrow files (memory-mapped, not in memory) live next to the corpus until it is saved
        with tempfile.TemporaryDirectory(prefix=".load-", dir=root) as scratch:
            _build_corpus(source, fingerprint, Path(scratch), final, progress, executor, work)
        shutil.rmtree(work, ignore_errors=True)
    return _Corpus(final)


def _build_corpus(
    source: DocumentSource,
    fingerprint: str,
    scratch: Path,
    final: Path,
    progress: bool,
    executor: DataExecutor,
    work: Path,
) -> None:
    start = time.perf_counter()
    with _quiet_datasets(progress):
        raw = source.load(scratch)
        validate_documents(raw)
        docs, removed = deduplicate(raw, executor, work)
    stats = domain_stats(docs)
    provenance = source.provenance()
    manifest = {
        "corpus_hash": dataset_content_hash(docs),
        "source_fingerprint": fingerprint,
        "source": provenance,
        "versions": {
            **provenance.get("versions", {}),
            "python": sys.version.split()[0],
            "datasets": datasets.__version__,
            "tokenizers": tokenizers.__version__,
        },
        "documents": len(docs),
        "bytes": sum(s["bytes"] for s in stats.values()),
        "raw_documents": len(raw),
        "duplicates_removed": removed,
        "domains": stats,
        **_bad_records(source),
        "build_seconds": round(time.perf_counter() - start, 3),
    }
    with atomic_directory(final) as tmp, _quiet_datasets(progress):
        docs.save_to_disk(str(tmp / "documents"))
        atomic_write_json(tmp / "manifest.json", manifest)
    log.info(
        "corpus: %d documents (%d duplicates removed), %.2f MB in %s, built in %.1f s",
        len(docs),
        removed,
        manifest["bytes"] / 1e6,
        sorted(stats),
        manifest["build_seconds"],
    )


def _bad_records(source: DocumentSource) -> dict[str, Any]:
    """The records a source skipped (``on_bad_record=skip``) for the corpus manifest, if it skipped any."""
    bad = getattr(source, "bad_records", None)  # only LocalFiles reads records that can be malformed
    return {"bad_records": asdict(bad)} if bad else {}


def _with_pool_path(record: dict[str, Any], root: Path) -> dict[str, Any]:
    """The record as stored, plus ``pool_path`` (absolute; not stored, so the cache can move)."""
    return {**record, "pool_path": str(root / record["pool_file"])}


def _assignment(splits: dict[str, Any]) -> SplitAssignment:
    """The split's assignment, its pool memory-mapped from the ``.npy`` file (int64, ascending)."""
    return SplitAssignment.from_dict(splits["assignment"], np.load(splits["pool_path"], mmap_mode="r"))


def _split_stage(corpus: _Corpus, split: HeldoutSplit, root: Path) -> dict[str, Any]:
    """The split record ``<key>.json`` (held-out lists, content hashes) and its pool ``<key>.pool.npy``."""
    key = canonical_json_hash(
        {"corpus": corpus.hash, "split": asdict(split), "version": STAGE_VERSIONS["splits"]}
    )
    path = root / f"{key[:24]}.json"
    root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root / f"{key[:24]}.lock")):
        if path.exists():
            return _with_pool_path(json.loads(path.read_text()), root)
        assignment = assign_splits(corpus.documents, split)
        hashes = {
            name: dataset_content_hash(corpus.documents, idx)
            for name, idx in assignment.all_indices().items()
        }
        # the held-out sets' domains (the pool's are in its token cache: no list per pool document here)
        domains = {
            f"{d}/{n}": [d] * len(idx) for d, sets in assignment.eval.items() for n, idx in sets.items()
        }
        pool_file = f"{key[:24]}.pool.npy"
        record = {
            "corpus_hash": corpus.hash,
            "split": asdict(split),
            "assignment": assignment.to_dict(),
            "pool_file": pool_file,
            "content_hashes": hashes,
            "doc_domains": domains,
        }
        atomic_write(
            root / pool_file, lambda fh: np.save(fh, assignment.pool)
        )  # before the record: it marks done
        atomic_write_json(path, record)
        log.info(
            "splits: pool %d documents; held out per domain: %s",
            len(assignment.pool),
            {d: {n: len(v) for n, v in s.items()} for d, s in assignment.eval.items()},
        )
        return _with_pool_path(record, root)


def _tokenizer_stage(
    corpus: _Corpus, splits: dict[str, Any], config: BPETokenizer, root: Path, progress: bool
) -> tuple[TrainedTokenizer, Path]:
    pool_hash = splits["content_hashes"]["pool"]
    pool = _assignment(splits).pool
    sample = config.sample(text_bytes(corpus.documents)[pool])
    identity: dict[str, Any] = {
        "pool": pool_hash,
        "tokenizer": config.to_dict(),
        "tokenizers": tokenizers.__version__,
        "version": STAGE_VERSIONS["tokenizer"],
    }
    if sample is not None:  # a pool within the sample size trains on all of it: the key of before
        identity["sample"] = sample.record
    key = canonical_json_hash(identity)
    final = root / key[:24]
    root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root / f"{key[:24]}.lock")):
        if not (final / "tokenizer.json").exists():
            docs = pool if sample is None else pool[sample.positions]
            _train_tokenizer(corpus, docs, config, final, {**identity, "pool_hash": pool_hash}, progress)
        else:
            log.info("tokenizer: cached %s", final)
    return TrainedTokenizer.load(final / "tokenizer.json", config.eos_token), final / "token_bytes.npy"


def _train_tokenizer(
    corpus: _Corpus,
    docs: np.ndarray,
    config: BPETokenizer,
    final: Path,
    identity: dict[str, Any],
    progress: bool,
) -> None:
    """Train on the corpus rows ``docs`` (read in batches); write tokenizer.json, token_bytes.npy and
    meta.json (with the sample drawn, if any) atomically."""
    texts = (t for batch in iter_batches(corpus.documents, ["text"], docs) for t in batch["text"])
    with atomic_directory(final) as tmp:
        trained = config.train(texts, tmp / "tokenizer.json", length=len(docs), progress=progress)
        np.save(tmp / "token_bytes.npy", token_byte_lengths(trained.tokenizer))
        meta = {
            "pool_hash": identity["pool_hash"],
            "config": config.to_dict(),
            "tokenizer_hash": trained.hash,
            "vocab_size": trained.vocab_size,
            "eos_id": trained.eos_id,
        }
        if "sample" in identity:
            meta["sample"] = identity["sample"]
        atomic_write_json(tmp / "meta.json", meta)


@dataclass
class TrainingPool:
    """The documents the subsets are drawn from: the split's pool, after the pool transforms (if any)."""

    documents: datasets.Dataset
    """The documents (memory-mapped): the corpus itself, or the transformed pool."""
    path: Path
    """Where ``documents`` were saved (``datasets.load_from_disk`` reads them back in another process)."""
    indices: np.ndarray | None
    """The pool's rows of ``documents`` in order (the untransformed pool: int64, memory-mapped), or None (all
    of them)."""
    content_hash: str
    manifest_path: str = ""
    """``pool/<key>/manifest.json`` with each transform's report; empty when no transform ran."""
    transforms: list[dict[str, Any]] = field(default_factory=list)
    """Per transform: group, name, params, documents in and out, removed per reason (for the run record)."""
    indices_file: str = ""
    """The ``.npy`` file ``indices`` is memory-mapped from (task processes map it too: no copy each)."""

    def batches(self) -> Iterator[Batch]:
        """The pool's documents in order, :data:`~datascale.data.documents.BATCH_ROWS` at a time."""
        return iter_batches(self.documents, ["doc_id", "domain", "text"], self.indices)

    def doc_ids_among(self, doc_ids: Collection[str]) -> set[str]:
        """Which of ``doc_ids`` (a few: the held-out documents') are pool documents. The pool's ids are read
        in Arrow batches and matched by Arrow: no Python object per pool document."""
        wanted = pa.array(sorted(doc_ids), type=pa.string())
        in_pool = None
        if self.indices is not None:
            in_pool = np.zeros(len(self.documents), dtype=bool)
            in_pool[self.indices] = True
        found: set[str] = set()
        start = 0
        columns = self.documents.select_columns(["doc_id"]).with_format("arrow")
        for batch in columns.iter(batch_size=BATCH_ROWS):
            ids = batch["doc_id"]
            hit = pc.is_in(ids, value_set=wanted).to_numpy(zero_copy_only=False)
            if in_pool is not None:
                hit &= in_pool[start : start + len(ids)]
            found.update(ids.filter(pa.array(hit)).to_pylist())
            start += len(ids)
        return found


def _split_pool(corpus: _Corpus, splits: dict[str, Any]) -> TrainingPool:
    pool = _assignment(splits).pool
    return TrainingPool(
        corpus.documents,
        corpus.path / "documents",
        pool,
        splits["content_hashes"]["pool"],
        indices_file=splits["pool_path"],
    )


def _transform_summary(group: str, report: TransformReport) -> dict[str, Any]:
    return {
        "group": group,
        "name": report.name,
        "params": report.params,
        "input_docs": report.input_docs,
        "output_docs": report.output_docs,
        "removed": report.counts,
        "marked": len(report.marked),
    }


def _pool_stage(
    corpus: _Corpus, splits: dict[str, Any], transforms: dict[str, PoolTransform], root: Path, progress: bool
) -> TrainingPool:
    """Apply the pool transforms (cached by content + fingerprints); the split's pool itself if there are
    none."""
    base = _split_pool(corpus, splits)
    active = {g: t for g, t in transforms.items() if not isinstance(t, Identity)}
    if not active:
        return base
    fingerprints = {g: t.fingerprint() for g, t in active.items()}
    key = canonical_json_hash({"pool": base.content_hash, "transforms": fingerprints, "version": 1})[:24]
    final = root / key
    root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root / f"{key}.lock")):
        if not (final / "manifest.json").exists():
            _build_pool(corpus, splits, active, fingerprints, base.content_hash, final, progress)
        manifest = json.loads((final / "manifest.json").read_text())
        docs = datasets.load_from_disk(str(final / "documents"))
    return TrainingPool(
        docs,
        final / "documents",
        None,
        manifest["content_hash"],
        str(final / "manifest.json"),
        [_transform_summary(r["group"], TransformReport.from_dict(r["report"])) for r in manifest["reports"]],
    )


def _build_pool(
    corpus: _Corpus,
    splits: dict[str, Any],
    transforms: dict[str, PoolTransform],
    fingerprints: dict[str, Any],
    input_hash: str,
    final: Path,
    progress: bool,
) -> None:
    start = time.perf_counter()
    with _quiet_datasets(progress):
        docs = corpus.documents.select(_assignment(splits).pool)
    reports = []
    for group, transform in transforms.items():
        with _prefixed(group):
            docs, report = transform.apply(docs)
        validate_documents(docs)
        reports.append({"group": group, "report": report.to_dict()})
        log.info(
            "pool %s=%s: %d -> %d documents %s",
            group,
            report.name,
            report.input_docs,
            report.output_docs,
            report.counts or "",
        )
    manifest = {
        "input_pool_hash": input_hash,
        "transforms": fingerprints,
        "reports": reports,
        "content_hash": dataset_content_hash(docs),
        "documents": len(docs),
        "domains": domain_stats(docs),
        "build_seconds": round(time.perf_counter() - start, 3),
    }
    with atomic_directory(final) as tmp, _quiet_datasets(progress):
        docs.save_to_disk(str(tmp / "documents"))
        atomic_write_json(tmp / "manifest.json", manifest)


def _downstream_stage(
    corpus: _Corpus, splits: dict[str, Any], pool: TrainingPool, suite: DownstreamSuite, root: Path
) -> str:
    """Build (or reuse) the downstream tasks from the held-out documents; the manifest path, or ""."""
    if not suite.enabled:
        return ""
    key = canonical_json_hash(
        {"splits": splits["content_hashes"], "pool": pool.content_hash, **suite.to_dict()}
    )
    final = root / key[:24]
    root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root / f"{key[:24]}.lock")):
        if not (final / "manifest.json").exists():
            sets = _assignment(splits).all_indices()
            held = [i for name, idx in sets.items() if name != "pool" for i in idx]
            docs = corpus.documents.select(held).to_list()
            tasks, manifest = build_suite(docs, pool.doc_ids_among({d["doc_id"] for d in docs}), suite)
            with atomic_directory(final) as tmp:
                atomic_write_json(tmp / "tasks.json", tasks)
                atomic_write_json(tmp / "manifest.json", manifest)
            log.info("downstream: %s", {k: v["sizes"] for k, v in manifest["tasks"].items()})
    return str(final / "manifest.json")


def _cache(
    root: Path,
    name: str,
    batches: Iterable[Batch],
    n_docs: int,
    chash: str,
    tok: TrainedTokenizer,
    progress: bool,
) -> TokenCache:
    """The token cache of the documents ``batches`` yields (read only if it is not built yet)."""
    final = root / cache_key(chash, tok.hash)[:32]
    if (final / "meta.json").exists():
        return TokenCache.open(final)
    return build_token_cache_from_batches(
        root, batches, chash, tok.tokenizer, tok.hash, tok.eos_id, name, progress, n_docs
    )


def _token_cache_stage(
    corpus: _Corpus,
    splits: dict[str, Any],
    pool: TrainingPool,
    tok: TrainedTokenizer,
    root: Path,
    progress: bool,
    executor: DataExecutor,
) -> dict[str, TokenCache]:
    """Token caches of the held-out sets (from the split, on this process's threads) and of the training pool
    (after its transforms; built by ``executor``, a datatrove pipeline)."""
    caches: dict[str, TokenCache] = {}
    for name, idx in _assignment(splits).all_indices().items():
        if name != "pool":
            batches = iter_batches(corpus.documents, ["doc_id", "domain", "text"], idx)
            caches[name] = _cache(
                root, name, batches, len(idx), splits["content_hashes"][name], tok, progress
            )
    sizes = text_bytes(pool.documents)
    n_bytes = int(sizes[pool.indices].sum() if pool.indices is not None else sizes.sum())
    rows = pool.indices_file or pool.indices  # the file: each datatrove task maps it, none gets a copy
    caches["pool"] = tokenise_pool(root, pool.path, rows, pool.content_hash, tok, executor, n_bytes)
    return caches


def _reference_losses(
    caches: dict[str, TokenCache], token_bytes: Path, vocab_size: int
) -> dict[str, dict[str, dict[str, float]]]:
    """Per held-out domain and split: uniform (ln V) and unigram-entropy losses in nats/token and bits/byte.

    Computed on every call rather than cached: one bincount over each held-out set, milliseconds.
    """
    lengths = np.load(token_bytes)
    out: dict[str, dict[str, dict[str, float]]] = {}
    for name, cache in sorted(caches.items()):
        if name != "pool" and cache.n_tokens >= 2:
            domain, which = name.split("/")
            out.setdefault(domain, {})[which] = reference_losses(cache.tokens, lengths, vocab_size)
    return out


# ----------------------------------------------------------------------------------------------- public


def _prepare(
    source: DocumentSource,
    split: HeldoutSplit,
    tokenizer: BPETokenizer,
    subset: SizeSubset,
    cache_dir: Path,
    progress: bool,
    transforms: dict[str, PoolTransform] | None = None,
    downstream: DownstreamSuite | None = None,
    data_executor: DataExecutor | None = None,
) -> tuple[DataArtifacts, list[dict[str, Any]]]:
    start = time.perf_counter()
    cache_dir = Path(cache_dir).expanduser().resolve()
    executor = data_executor or LocalExecutor()
    with _prefixed("source"):
        corpus = _corpus_stage(source, cache_dir / "corpus", progress, executor)
    with _prefixed("split"):
        splits = _split_stage(corpus, split, cache_dir / "splits")
    pool = _pool_stage(corpus, splits, dict(transforms or {}), cache_dir / "pool", progress)
    with _prefixed("downstream"):
        suite_manifest = _downstream_stage(
            corpus, splits, pool, downstream or NO_SUITE, cache_dir / "downstream"
        )
    with _prefixed("tokenizer"):  # trained on the untransformed pool: every quality condition shares it
        tok, token_bytes = _tokenizer_stage(corpus, splits, tokenizer, cache_dir / "tokenizers", progress)
    caches = _token_cache_stage(corpus, splits, pool, tok, cache_dir / "tokens", progress, executor)
    with _prefixed("subset"):
        manifest_file, manifest = write_subset_manifest(cache_dir / "subsets", caches["pool"], subset)
    eval_caches: dict[str, dict[str, str]] = {}
    for name, cache in caches.items():
        if name != "pool":
            domain, which = name.split("/")
            eval_caches.setdefault(domain, {})[which] = str(cache.path)
    artifacts = DataArtifacts(
        corpus_hash=corpus.hash,
        corpus_manifest=str(corpus.path / "manifest.json"),
        tokenizer_path=str(tok.path),
        tokenizer_hash=tok.hash,
        vocab_size=tok.vocab_size,
        eos_id=tok.eos_id,
        token_bytes_path=str(token_bytes),
        train_cache=str(caches["pool"].path),
        eval_caches=eval_caches,
        subset_manifest=str(manifest_file),
        subset_hash=manifest.manifest_hash,
        unique_tokens=manifest.unique_tokens,
        train_domains=sorted(caches["pool"].doc_domains.indices()),
        pool_manifest=pool.manifest_path,
        pool_transforms=pool.transforms,
        subset_domains=manifest.domains(),
        downstream_manifest=suite_manifest,
        reference_losses=_reference_losses(caches, token_bytes, tok.vocab_size),
    )
    rows = summarize(caches)
    _log_summary(rows, start, corpus, tok, manifest)
    return artifacts, rows


def _log_summary(
    rows: list[dict[str, Any]], start: float, corpus: _Corpus, tok: TrainedTokenizer, manifest: SubsetManifest
) -> None:
    for row in rows:
        log.info(
            "data %-12s pool %5d docs %9d tokens | val %4d docs %7d tokens | test %4d docs %7d tokens",
            row["domain"],
            row["pool_docs"],
            row["pool_tokens"],
            row["val_docs"],
            row["val_tokens"],
            row["test_docs"],
            row["test_tokens"],
        )
    log.info(
        "data ready in %.1f s: corpus %s, tokenizer %s (vocab %d), subset unique_tokens=%d (%d docs) %s",
        time.perf_counter() - start,
        corpus.hash[:12],
        tok.hash[:12],
        tok.vocab_size,
        manifest.unique_tokens,
        manifest.n_docs,
        manifest.manifest_hash[:12],
    )


def prepare_data(
    source: DocumentSource,
    split: HeldoutSplit,
    tokenizer: BPETokenizer,
    subset: SizeSubset,
    cache_dir: Path,
    progress: bool = True,
    transforms: dict[str, PoolTransform] | None = None,
    downstream: DownstreamSuite | None = None,
    data_executor: DataExecutor | None = None,
) -> DataArtifacts:
    """Run (or reuse) every data stage for these configs and return the artifacts a training run needs.

    ``transforms`` maps a transform group (:data:`~datascale.data.transforms.TRANSFORM_GROUPS`) to its leaf;
    they run on the training pool in that order. Safe to call from parallel jobs (stages are file-locked); a
    fully cached call reads no documents and tokenises nothing. ConfigErrors name their group
    (``subset.unique_tokens=...``).
    """
    return _prepare(
        source, split, tokenizer, subset, cache_dir, progress, transforms, downstream, data_executor
    )[0]


def summarize(caches: dict[str, TokenCache]) -> list[dict[str, Any]]:
    """Per domain: documents, tokens and bytes in the pool and in the val/test sets (logs and the CLI
    table)."""
    pool = caches["pool"]
    by_domain = pool.doc_domains.indices()
    lengths = pool.doc_lengths()
    held_out = {name.split("/")[0] for name in caches if name != "pool"}
    rows = []
    for domain in sorted(held_out | set(by_domain)):
        idx = by_domain.get(domain, np.zeros(0, dtype=np.int64))
        row: dict[str, Any] = {
            "domain": domain,
            "pool_docs": len(idx),
            "pool_tokens": int(lengths[idx].sum()),
        }
        for which in ("val", "test"):
            cache = caches.get(f"{domain}/{which}")
            row[f"{which}_docs"] = cache.n_docs if cache else 0
            row[f"{which}_tokens"] = cache.n_tokens if cache else 0
            row[f"{which}_bytes"] = cache.n_bytes if cache else 0
        rows.append(row)
    return rows


def instantiate_data_configs(cfg: Any) -> dict[str, Any]:
    """``cfg.source``, ``cfg.split``, ``cfg.tokenizer``, ``cfg.subset`` and the pool transforms present as
    objects; bad values fail here, before any compute, with the group in the field name."""
    objects: dict[str, Any] = {group: instantiate_group(cfg, group) for group in GROUPS}
    if "downstream" in cfg:
        objects["downstream"] = instantiate_group(cfg, "downstream", DownstreamSuite)
    if "data_executor" in cfg:
        objects["data_executor"] = instantiate_group(cfg, "data_executor")
    objects["transforms"] = {
        group: instantiate_group(cfg, group, PoolTransform) for group in TRANSFORM_GROUPS if group in cfg
    }
    return objects


def prepare_from_config(cfg: Any, progress: bool = True) -> DataArtifacts:
    """:func:`prepare_data` for a composed project config (groups source/split/tokenizer/subset,
    paths.cache_dir)."""
    return _prepare_from_config(cfg, progress)[0]


def _prepare_from_config(cfg: Any, progress: bool) -> tuple[DataArtifacts, list[dict[str, Any]]]:
    objects = instantiate_data_configs(cfg)
    return _prepare(**objects, cache_dir=Path(str(cfg.paths.cache_dir)), progress=progress)


# ------------------------------------------------------------------------------------------------- CLI

USAGE = (
    "python -m datascale.data.prepare [--help] [--unique-tokens N [N ...]] [--no-progress] "
    "[hydra overrides ...]"
)


def _parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """argparse cannot tell `--unique-tokens 1000 2000 source=local_files` apart; numbers are taken first."""
    parser = argparse.ArgumentParser(
        prog="python -m datascale.data.prepare",
        usage=USAGE,
        description="Build (or reuse) the corpus, splits, tokenizer, token caches and nested subsets, "
        "verify the "
        "nesting and print a summary. Every stage is cached under paths.cache_dir.",
    )
    parser.add_argument(
        "--unique-tokens",
        metavar="N",
        nargs="+",
        type=int,
        help="one or more subset budgets (default: subset.unique_tokens of the config)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument(
        "overrides", nargs="*", help="Hydra overrides, e.g. tokenizer.vocab_size=8192 source=local_files"
    )
    budgets: list[str] = []
    rest: list[str] = []
    args = list(argv)
    i = 0
    while i < len(args):
        if args[i] == "--unique-tokens":
            i += 1
            while i < len(args) and args[i].replace("_", "").isdigit():
                budgets.append(args[i].replace("_", ""))
                i += 1
            if not budgets:
                parser.error("--unique-tokens needs at least one integer")
            continue
        rest.append(args[i])
        i += 1
    ns = parser.parse_args(rest)
    ns.unique_tokens = [int(b) for b in budgets] or None
    return ns


def _prepare_budgets(
    cfg: Any, budgets: Sequence[int], progress: bool
) -> tuple[list[tuple[DataArtifacts, SubsetManifest]], list[dict[str, Any]]]:
    """Prepare the data for every subset budget; (artifacts, manifest) per budget and the summary rows."""
    from omegaconf import OmegaConf

    results: list[tuple[DataArtifacts, SubsetManifest]] = []
    rows: list[dict[str, Any]] = []
    for budget in budgets:
        OmegaConf.update(cfg, "subset.unique_tokens", budget, merge=False)
        artifacts, rows = _prepare_from_config(cfg, progress=progress)
        results.append((artifacts, SubsetManifest.load(Path(artifacts.subset_manifest))))
    return results, rows


def disk_full_message(cfg: Any) -> str:
    """One line for a disk that filled during a build: every stage writes atomically, so nothing is kept."""
    return (
        f"no space left under paths.cache_dir={cfg.paths.cache_dir}: the stage being built was discarded "
        "(every stage is written atomically: a later run trusts nothing half-written); free space, run again"
    )


def main(argv: Sequence[str] | None = None, conf_dir: Path | None = None) -> int:
    """CLI entry point; returns the exit code (2 for a bad config value)."""
    from hydra import compose, initialize_config_dir
    from rich.console import Console
    from rich.table import Table

    import datascale

    ns = _parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    console = Console(
        width=None if sys.stdout.isatty() else 120
    )  # logs and pipes: don't squeeze to 80 columns
    with initialize_config_dir(version_base="1.3", config_dir=str(conf_dir or datascale.CONF_DIR)):
        cfg = compose("config", overrides=list(ns.overrides))
    budgets = ns.unique_tokens or [int(cfg.subset.unique_tokens)]
    try:
        results, rows = _prepare_budgets(cfg, budgets, progress=not ns.no_progress)
    except ConfigError as err:
        console.print(f"[red]config error:[/red] {err}", highlight=False)
        return 2
    except OSError as err:
        if err.errno != errno.ENOSPC:
            raise
        console.print(f"[red]disk full:[/red] {disk_full_message(cfg)}", highlight=False, soft_wrap=True)
        return 1
    first = results[0][0]
    pool = TokenCache.open(first.train_cache)
    verify_nested([m for _, m in results], pool)

    table = Table(
        title=f"corpus {first.corpus_hash[:12]}  tokenizer {first.tokenizer_hash[:12]} "
        f"(vocab {first.vocab_size})"
    )
    for col in (
        "domain",
        "pool docs",
        "pool tokens",
        "val docs",
        "val tokens",
        "test docs",
        "test tokens",
        "val bytes/token",
    ):
        table.add_column(col, justify="left" if col == "domain" else "right", no_wrap=True)
    for row in rows:
        table.add_row(
            row["domain"],
            f"{row['pool_docs']:,}",
            f"{row['pool_tokens']:,}",
            f"{row['val_docs']:,}",
            f"{row['val_tokens']:,}",
            f"{row['test_docs']:,}",
            f"{row['test_tokens']:,}",
            f"{row['val_bytes'] / max(1, row['val_tokens']):.2f}",
        )
    console.print(table)
    subsets = Table(
        title=f"subsets ({results[0][1].composition['mode']}, order_seed {results[0][1].order_seed}, "
        f"pool {pool.n_tokens:,} tokens): nested, verified"
    )
    for col in ("unique_tokens", "docs", "domain shares", "% of pool", "subset hash"):
        subsets.add_column(col, justify="right")
    for _, m in sorted(results, key=lambda r: r[1].unique_tokens):
        subsets.add_row(
            f"{m.unique_tokens:,}",
            f"{m.n_docs:,}",
            " ".join(f"{d}={v['share']:.2f}" for d, v in m.domains().items()),
            f"{100 * m.unique_tokens / m.pool_tokens:.1f}",
            m.manifest_hash[:12],
        )
    console.print(subsets)
    console.print(f"manifests: {Path(first.subset_manifest).parent}", highlight=False, soft_wrap=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
