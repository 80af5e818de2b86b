"""The data stage at corpus scale, in small: bad records by policy, the tokenizer's seeded sample, compact
token-cache indexes, parallel tokenisation equal to one thread, and a disk that fills mid-build."""

from __future__ import annotations

import errno
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from datascale.artifacts import DataArtifacts
from datascale.config_errors import ConfigError
from datascale.data import token_cache
from datascale.data.executor import LocalExecutor, SlurmExecutor, TokeniseParts
from datascale.data.prepare import _assignment, _Corpus, _split_stage, prepare_data
from datascale.data.sources import LocalFiles
from datascale.data.splits import HeldoutSplit
from datascale.data.subsets import SizeSubset
from datascale.data.token_cache import TokenCache, build_token_cache_from_batches
from datascale.data.tokenizer import BPETokenizer

WORDS = [
    "the",
    "of",
    "and",
    "to",
    "in",
    "a",
    "is",
    "that",
    "for",
    "it",
    "as",
    "was",
    "with",
    "be",
    "by",
    "on",
    "not",
    "he",
    "this",
    "are",
    "or",
    "his",
    "from",
    "at",
    "which",
]


def _text(i: int) -> str:
    rng = np.random.default_rng(i)
    return " ".join(WORDS[k] for k in rng.integers(0, len(WORDS), 60 + i % 40)) + f" document {i}."


def _corpus(path: Path, n: int, bad: dict[int, str] | None = None) -> Path:
    """``n`` JSON lines of two domains; line ``k`` (from 1) replaced by ``bad[k]``."""
    lines = [json.dumps({"text": _text(i), "domain": "ab"[i % 2]}) for i in range(n)]
    for k, line in (bad or {}).items():
        lines[k - 1] = line
    path.write_text("\n".join(lines) + "\n")
    return path


def _prepare(
    files: Path, cache: Path, tokenizer: BPETokenizer | None = None, executor: object = None, **source: object
) -> object:
    return prepare_data(
        LocalFiles(paths=[str(files)], domain_field="domain", **source),  # type: ignore[arg-type]
        HeldoutSplit(eval_bytes_per_domain=3000),
        tokenizer or BPETokenizer(vocab_size=300),
        SizeSubset(unique_tokens=5000),
        cache,
        progress=False,
        data_executor=executor,  # type: ignore[arg-type]
    )


BAD = {
    1500: '{"text": "cut',  # not JSON
    1700: '["a", "list"]',  # JSON, not an object
    1900: '{"text": 7, "domain": "a"}',  # text not a string
    2100: '{"body": "no text", "domain": "a"}',  # no text field
    2300: '{"text": "no domain"}',  # no domain field
}


def test_bad_records_deep_in_a_file_stop_with_file_line_and_field(tmp_path: Path) -> None:
    files = _corpus(tmp_path / "big.jsonl", 3000, {2300: BAD[2300]})
    with pytest.raises(ConfigError) as err:
        LocalFiles(paths=[str(files)], domain_field="domain").load()
    message = str(err.value)
    assert message.startswith(
        "domain_field='domain': must name a non-empty string field; record big.jsonl#2299 "
    )
    assert "(line 2300)" in message and "on_bad_record=skip" in message and "\n" not in message


def test_skipped_bad_records_are_counted_in_the_corpus_manifest(tmp_path: Path) -> None:
    files = _corpus(tmp_path / "big.jsonl", 3000, BAD)
    with pytest.raises(ConfigError, match=r"line 1500 is not valid JSON"):
        LocalFiles(paths=[str(files)], domain_field="domain").load()
    artifacts = _prepare(files, tmp_path / "cache", on_bad_record="skip")
    manifest = json.loads(Path(artifacts.corpus_manifest).read_text())  # type: ignore[attr-defined]
    bad = manifest["bad_records"]
    assert bad["count"] == len(BAD) and manifest["raw_documents"] == 3000 - len(BAD)
    assert bad["by_field"] == {"paths": 2, "text_field": 2, "domain_field": 1}
    assert [e.split(":")[0] for e in bad["examples"]] == [f"big.jsonl (line {k})" for k in sorted(BAD)]
    # the good records keep their ids (the index of their line among non-blank lines)
    pool = TokenCache.open(artifacts.train_cache)  # type: ignore[attr-defined]
    assert "local:big.jsonl#1500" in set(pool.doc_ids) | _held_out_ids(artifacts)
    assert "local:big.jsonl#1499" not in set(pool.doc_ids) | _held_out_ids(artifacts)


def _held_out_ids(artifacts: object) -> set[str]:
    paths = [p for s in artifacts.eval_caches.values() for p in s.values()]  # type: ignore[attr-defined]
    return {d for p in paths for d in TokenCache.open(p).doc_ids}


def test_on_bad_record_is_validated() -> None:
    with pytest.raises(ConfigError, match=r"^on_bad_record='drop': must be one of \['error', 'skip'\]$"):
        LocalFiles(paths=[__file__], format="text", on_bad_record="drop")


def test_tokenizer_trains_on_a_seeded_sample_of_a_large_pool(tmp_path: Path) -> None:
    sizes = np.full(1000, 500)
    config = BPETokenizer(vocab_size=300, train_sample_bytes=100_000)
    sample = config.sample(sizes)
    assert sample is not None and sample.record["documents"] == 200 and sample.record["bytes"] == 100_000
    assert np.all(np.diff(sample.positions) > 0)  # pool order
    again = BPETokenizer(vocab_size=300, train_sample_bytes=100_000).sample(sizes)
    assert again is not None and again.record == sample.record
    other = BPETokenizer(vocab_size=300, train_sample_bytes=100_000, sample_seed=1).sample(sizes)
    assert other is not None and other.record["positions_sha256"] != sample.record["positions_sha256"]
    assert BPETokenizer(vocab_size=300, train_sample_bytes=500_000).sample(sizes) is None  # fits: all of it
    assert "train_sample_bytes" not in config.to_dict()  # counts only through the sample: same key as before


def test_a_sampled_tokenizer_records_its_sample(tmp_path: Path) -> None:
    files = _corpus(tmp_path / "c.jsonl", 400)
    whole = _prepare(files, tmp_path / "cache")
    sampled = _prepare(files, tmp_path / "cache", BPETokenizer(vocab_size=300, train_sample_bytes=20_000))
    meta = json.loads((Path(sampled.tokenizer_path).parent / "meta.json").read_text())
    assert (
        meta["sample"]["bytes"] >= 20_000 and meta["sample"]["documents"] < meta["sample"]["pool_documents"]
    )
    assert "sample" not in json.loads((Path(whole.tokenizer_path).parent / "meta.json").read_text())  # type: ignore[attr-defined]
    assert sampled.tokenizer_hash != whole.tokenizer_hash  # type: ignore[attr-defined]


def _batches(n: int) -> list[dict[str, list[str]]]:
    docs = [(f"t:{i}", "ab"[i % 3 == 0], _text(i)) for i in range(n)]
    return [
        {
            "doc_id": [d[0] for d in docs[k : k + 50]],
            "domain": [d[1] for d in docs[k : k + 50]],
            "text": [d[2] for d in docs[k : k + 50]],
        }
        for k in range(0, n, 50)
    ]


def test_threads_tokenise_exactly_as_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tok = BPETokenizer(vocab_size=300).train([_text(i) for i in range(200)], tmp_path / "tok.json")
    monkeypatch.setattr(token_cache, "CHUNK_BYTES", 2000)  # many chunks in flight
    caches = [
        build_token_cache_from_batches(
            tmp_path / f"w{w}", _batches(600), "h", tok.tokenizer, tok.hash, tok.eos_id, workers=w
        )
        for w in (1, 3)
    ]
    one, three = caches
    assert np.array_equal(one.tokens, three.tokens) and np.array_equal(one.offsets, three.offsets)
    assert list(three.doc_ids) == [f"t:{i}" for i in range(600)]
    assert (
        three.doc_domains.names == ["a", "b"] and three.doc_domains[0] == "b" and three.doc_domains[1] == "a"
    )
    assert set(three.doc_domains.indices()) == {"a", "b"} and three.meta["workers"] == 3


def test_a_full_disk_mid_build_leaves_nothing_a_later_run_trusts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tok = BPETokenizer(vocab_size=300).train([_text(i) for i in range(50)], tmp_path / "tok.json")
    real_save = np.save

    def full(path: object, *args: object, **kwargs: object) -> None:
        if str(path).endswith("doc_domains.npy"):
            raise OSError(errno.ENOSPC, "No space left on device")
        real_save(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(token_cache.np, "save", full)
    root = tmp_path / "tokens"
    with pytest.raises(OSError, match="No space left"):
        build_token_cache_from_batches(root, _batches(100), "h", tok.tokenizer, tok.hash, tok.eos_id)
    assert [p.name for p in root.iterdir() if p.suffix != ".lock"] == []  # no half-written cache
    monkeypatch.setattr(token_cache.np, "save", real_save)
    cache = build_token_cache_from_batches(root, _batches(100), "h", tok.tokenizer, tok.hash, tok.eos_id)
    assert cache.built and cache.n_docs == 100


def _cache_files(path: str) -> dict[str, bytes]:
    return {name: (Path(path) / name).read_bytes() for name in token_cache.FILES if name != "meta.json"}


def test_datatrove_tasks_build_the_same_cache_as_one(tmp_path: Path) -> None:
    """The pool cut into 3 datatrove tasks (3 processes) and merged: byte for byte the one-task cache."""
    files = _corpus(tmp_path / "c.jsonl", 600)
    one = _prepare(files, tmp_path / "one")
    three = _prepare(files, tmp_path / "three", executor=LocalExecutor(tasks=3))
    assert _cache_files(three.train_cache) == _cache_files(one.train_cache)  # type: ignore[attr-defined]
    assert json.loads((Path(three.train_cache) / "meta.json").read_text())["tasks"] == 3
    assert three.subset_hash == one.subset_hash  # type: ignore[attr-defined]
    assert not list((tmp_path / "three" / "tokens").glob(".work-*"))  # merged: the parts are gone


def test_a_killed_build_resumes_only_its_unfinished_tasks(tmp_path: Path) -> None:
    """datatrove's completion markers: a rerun runs only the task that had not finished."""
    files = _corpus(tmp_path / "c.jsonl", 300)
    docs = tmp_path / "docs"
    LocalFiles(paths=[str(files)], domain_field="domain").load().save_to_disk(str(docs))
    tok = BPETokenizer(vocab_size=300).train([_text(i) for i in range(50)], tmp_path / "tok.json")
    step = TokeniseParts(str(docs), None, str(tok.path), "<|endoftext|>", str(tmp_path / "work" / "parts"), 1)
    executor = LocalExecutor(tasks=3)
    executor.run(step, 3, tmp_path / "work")
    parts = [tmp_path / "work" / "parts" / f"{r:05d}" for r in range(3)]
    stamps = [(p / "meta.json").stat().st_mtime_ns for p in parts]
    shutil.rmtree(parts[1])  # task 1 "was killed": no part, no completion marker
    (tmp_path / "work" / "datatrove" / "completions" / "00001").unlink()
    executor.run(step, 3, tmp_path / "work")
    assert (parts[1] / "meta.json").exists()
    assert [(p / "meta.json").stat().st_mtime_ns for p in (parts[0], parts[2])] == [stamps[0], stamps[2]]


def test_data_executor_fields_are_validated() -> None:
    with pytest.raises(ConfigError, match=r"^tasks=0: must be null or >= 1$"):
        LocalExecutor(tasks=0)
    with pytest.raises(ConfigError, match=r"^partition='': must be a SLURM partition name$"):
        SlurmExecutor(partition="")
    assert LocalExecutor(min_task_bytes=1000).task_count(10**9) == token_cache.usable_cores()
    assert LocalExecutor().task_count(1000) == 1


def test_the_split_pool_is_an_array_file_with_the_assignment_of_before(tmp_path: Path) -> None:
    """The splits record keeps the held-out lists and points at ``<key>.pool.npy`` (int64, ascending); the
    pool, the corpus and every hash are what the record held as a JSON list before (values from the commit
    before this change on this corpus, with a planted spacing-only copy and a blank record)."""
    files = _corpus(tmp_path / "c.jsonl", 400)
    lines = files.read_text().splitlines()
    tenth = json.loads(lines[9])["text"]
    lines += [json.dumps({"text": "  " + tenth.replace(" ", "\n  ") + "\t", "domain": "b"}),
              json.dumps({"text": " \n ", "domain": "a"})]  # fmt: skip
    files.write_text("\n".join(lines) + "\n")
    artifacts: DataArtifacts = _prepare(files, tmp_path / "cache")  # type: ignore[assignment]
    (record_path,) = (tmp_path / "cache" / "splits").glob("*.json")
    record = json.loads(record_path.read_text())
    assert "pool" not in record["assignment"] and record["pool_file"] == f"{record_path.stem}.pool.npy"
    pool = np.load(record_path.with_name(record["pool_file"]), mmap_mode="r")
    assert pool.dtype == np.int64 and np.all(np.diff(pool) > 0)
    assert len(pool) == record["assignment"]["pool_documents"] == 358
    assert hashlib.sha256(json.dumps(pool.tolist()).encode()).hexdigest() == (
        "113fd24cbdc38587fa663b59ff637cb6928bd038e06f20aba90342beb6191712"
    )
    assert artifacts.corpus_hash == "59dc9d931e020ffcd5a10aecb7b279b12e0b8ffaa35461d0d841ca9b3b67ba9f"
    assert record["content_hashes"]["pool"] == (
        "eaafe71ae8015813069eacf2994e4debbc2d0e05dc42306c9fb32329cf12633d"
    )
    # read back from the cache: the same assignment, the pool memory-mapped
    splits = _split_stage(
        _Corpus(Path(artifacts.corpus_manifest).parent),
        HeldoutSplit(eval_bytes_per_domain=3000),
        tmp_path / "cache" / "splits",
    )
    again = _assignment(splits)
    assert isinstance(again.pool, np.memmap) and np.array_equal(again.pool, pool)
    assert again.eval == record["assignment"]["eval"]
    assert not list((tmp_path / "cache" / "corpus").glob(".work-*"))  # the dedup tasks' digests are gone
