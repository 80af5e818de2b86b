from __future__ import annotations

import json
from pathlib import Path

import datasets
import numpy as np
import pytest
from data_fixtures import Prepared

from datascale.config_errors import ConfigError
from datascale.data.documents import documents_from_rows, make_document
from datascale.data.splits import HeldoutSplit, assign_splits, deduplicate, text_key
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
