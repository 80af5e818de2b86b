from __future__ import annotations

import hashlib
import json
import unicodedata
from pathlib import Path

import datasets
import numpy as np
import pytest
from data_fixtures import Prepared

from datascale.config_errors import ConfigError
from datascale.data.documents import dataset_content_hash, documents_from_rows, make_document
from datascale.data.executor import LocalExecutor
from datascale.data.splits import (
    HeldoutSplit,
    SplitAssignment,
    assign_splits,
    deduplicate,
    first_occurrences,
    normalise_text,
    text_key,
)
from datascale.data.token_cache import TokenCache


def _corpus(n_per_domain: int = 30, domains: tuple[str, ...] = ("a", "b")) -> datasets.Dataset:
    rng = np.random.default_rng(0)
    rows = []
    for d in domains:
        for i in range(n_per_domain):
            words = " ".join(f"w{int(x)}" for x in rng.integers(0, 1000, size=150))
            rows.append(make_document(f"{d}:{i:03d}", f"{d} document {i}: {words}", d, "test"))
    return documents_from_rows(rows)


def test_prepared_splits_are_disjoint_without_cross_split_duplicates(prepared: Prepared) -> None:
    art = prepared.artifacts
    pool = TokenCache.open(art.train_cache)
    assert sorted(art.eval_caches) == ["code", "literature", "science"]
    sets = {"pool": set(pool.doc_ids)}
    for domain, caches in art.eval_caches.items():
        for which, path in caches.items():
            cache = TokenCache.open(path)
            sets[f"{domain}/{which}"] = set(cache.doc_ids)
            assert cache.n_bytes >= prepared.split.eval_bytes_per_domain
    names = sorted(sets)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert not sets[a] & sets[b], (a, b)
    # and no text occurs twice anywhere (dedup ran before splitting)
    docs = datasets.load_from_disk(str(Path(art.corpus_manifest).parent / "documents"))
    keys = [text_key(t) for t in docs["text"]]
    assert len(set(keys)) == len(keys)
    assert json.loads(Path(art.corpus_manifest).read_text())["documents"] == len(docs)


def test_dedup_keeps_first_and_normalises_whitespace() -> None:
    ds = documents_from_rows(
        [
            make_document("x:1", "Hello  world\n", "d", "s"),
            make_document("x:2", "other", "d", "s"),
            make_document("x:3", "Hello world", "e", "s"),
            make_document("x:4", "   \n", "d", "s"),
        ]
    )
    out, removed = deduplicate(ds)
    assert out["doc_id"] == ["x:1", "x:2"] and removed == 2


def _reference_dedup(ds: datasets.Dataset) -> list[int]:
    """The rows the data stage kept before dedup ran as datatrove tasks: a Python set of 32-byte digests."""
    seen: set[bytes] = set()
    keep = []
    for i, text in enumerate(ds["text"]):
        normal = normalise_text(text)
        key = hashlib.sha256(normal.encode("utf-8")).digest()
        if normal and key not in seen:
            seen.add(key)
            keep.append(i)
    return keep


def _planted(path: Path | None) -> datasets.Dataset:
    """300 distinct texts, then copies of earlier ones planted anywhere (exact, spacing/line endings changed,
    NFD instead of NFC) and empty or whitespace-only texts: duplicates cross every task boundary."""
    rng = np.random.default_rng(5)
    words = [" ".join(f"w{int(x)}" for x in rng.integers(0, 50, 8)) for _ in range(300)]
    texts = [f"doc {i} caf\u00e9 {w}" for i, w in enumerate(words)]
    for k in range(120):
        j = int(rng.integers(0, len(texts)))
        src = texts[int(rng.integers(0, 300))]
        variant = [
            src,
            "  " + src.replace(" ", " \r\n\t ") + "\n",
            unicodedata.normalize("NFD", src),
            "" if k % 2 else " \n\t ",
        ][k % 4]
        texts.insert(j, variant)
    rows = [make_document(f"p:{i:04d}", t, "ab"[i % 2], "test") for i, t in enumerate(texts)]
    return documents_from_rows(rows, path)


def test_first_occurrences_of_digests_are_the_first_rows_of_each_non_zero_digest() -> None:
    rng = np.random.default_rng(1)
    for _ in range(200):  # few distinct values: many repeats, zero rows (empty texts) among them
        digests = rng.integers(0, 3, (int(rng.integers(0, 30)), 2)).astype("<u8")
        seen: set[tuple[int, int]] = set()
        expected = []
        for i, row in enumerate(map(tuple, digests.tolist())):
            if row != (0, 0) and row not in seen:
                seen.add(row)
                expected.append(i)
        assert first_occurrences(digests).tolist() == expected


@pytest.mark.parametrize(("tasks", "on_disk"), [(1, False), (2, False), (3, True)])
def test_dedup_tasks_keep_exactly_the_rows_of_the_reference(
    tmp_path: Path, tasks: int, on_disk: bool
) -> None:
    ds = _planted(tmp_path / "docs.arrow" if on_disk else None)
    reference = _reference_dedup(ds)
    assert len(reference) == 300 and len(ds) == 420  # 90 planted copies and 30 empty texts to drop
    # some copies come before their original: the first occurrence kept is then the spaced or NFD variant
    assert any(ds[i]["text"] != normalise_text(ds[i]["text"]) for i in reference)
    out, removed = deduplicate(ds, LocalExecutor(tasks=tasks), tmp_path / "work")
    assert out["doc_id"] == [ds[i]["doc_id"] for i in reference] and removed == len(ds) - len(reference)
    assert dataset_content_hash(out) == dataset_content_hash(ds, reference)  # the same corpus_hash
    assert len(list((tmp_path / "work" / f"tasks-{tasks}" / "digests").glob("*.npy"))) == tasks


def test_a_resumed_dedup_reruns_only_the_unfinished_task(tmp_path: Path) -> None:
    ds = _planted(tmp_path / "docs.arrow")
    work = tmp_path / "work"
    first, _ = deduplicate(ds, LocalExecutor(tasks=3), work)
    parts = work / "tasks-3"
    stamps = {r: (parts / "digests" / f"{r:05d}.npy").stat().st_mtime_ns for r in range(3)}
    (parts / "digests" / "00001.npy").unlink()  # task 1 "was killed": no digests, no completion marker
    (parts / "datatrove" / "completions" / "00001").unlink()
    again, _ = deduplicate(ds, LocalExecutor(tasks=3), work)
    assert again["doc_id"] == first["doc_id"] == [ds[i]["doc_id"] for i in _reference_dedup(ds)]
    kept = [(parts / "digests" / f"{r:05d}.npy").stat().st_mtime_ns for r in (0, 2)]
    assert kept == [stamps[0], stamps[2]]  # tasks 0 and 2 were not run again
    assert (parts / "digests" / "00001.npy").exists()


def test_heldout_sets_ignore_input_order_but_follow_the_split_seed() -> None:
    ds = _corpus()
    split = HeldoutSplit(seed=7, eval_bytes_per_domain=3000)

    def held(data: datasets.Dataset, s: HeldoutSplit) -> dict[str, list[str]]:
        a = assign_splits(data, s)
        return {
            f"{d}/{w}": sorted(data[i]["doc_id"] for i in idx)
            for d, sets in a.eval.items()
            for w, idx in sets.items()
        }

    base = held(ds, split)
    shuffled = ds.shuffle(seed=123).flatten_indices()
    assert held(shuffled, split) == base
    assert held(ds, HeldoutSplit(seed=8, eval_bytes_per_domain=3000)) != base
    assert all(len(v) >= 2 for v in base.values())


def test_split_order_is_the_same_fresh_and_read_back_from_its_record() -> None:
    """The record is stored with sorted keys ("test" before "val"); what draws from the held-out documents in
    the order of ``all_indices`` (the downstream suite) must see one order either way."""
    fresh = assign_splits(_corpus(), HeldoutSplit(eval_bytes_per_domain=3000))
    stored = json.loads(json.dumps(fresh.to_dict(), sort_keys=True))
    read_back = SplitAssignment.from_dict(stored, fresh.pool)
    assert list(stored["eval"]["a"]) == ["test", "val"]  # what made the orders differ
    names = list(fresh.all_indices())
    assert names == ["pool", "a/val", "a/test", "b/val", "b/test"]
    assert list(read_back.all_indices()) == names
    fresh_rows = [list(v) for v in fresh.all_indices().values()]
    assert [list(v) for v in read_back.all_indices().values()] == fresh_rows


def test_train_domains_limits_the_pool_not_the_heldout_sets() -> None:
    ds = _corpus()
    a = assign_splits(ds, HeldoutSplit(eval_bytes_per_domain=3000, train_domains=["a"]))
    assert {ds[i]["domain"] for i in a.pool} == {"a"}
    assert sorted(a.eval) == ["a", "b"] and a.eval["b"]["val"] and a.eval["b"]["test"]
    with pytest.raises(
        ConfigError, match=r"^train_domains=\['zz'\]: must be a subset of the corpus domains \['a', 'b'\]"
    ):
        assign_splits(ds, HeldoutSplit(train_domains=["zz"]))


def test_split_errors_name_field_and_value() -> None:
    with pytest.raises(ConfigError, match=r"^eval_bytes_per_domain=10000000: domain 'a' has \d+ bytes"):
        assign_splits(_corpus(), HeldoutSplit(eval_bytes_per_domain=10_000_000))
    with pytest.raises(ConfigError, match=r"^eval_bytes_per_domain=0: must be a positive integer"):
        HeldoutSplit(eval_bytes_per_domain=0)
    with pytest.raises(ConfigError, match=r"^seed=-1: "):
        HeldoutSplit(seed=-1)
