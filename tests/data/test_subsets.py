from __future__ import annotations

import dataclasses
import itertools
import json
from pathlib import Path

import numpy as np
import pytest
from data_fixtures import Prepared

from datascale.config_errors import ConfigError
from datascale.data.subsets import (
    NestingError,
    SizeSubset,
    SubsetManifest,
    load_subset_tokens,
    make_subset,
    manifest_path,
    verify_nested,
    write_subset_manifest,
)
from datascale.data.token_cache import TokenCache


@pytest.fixture(scope="module")
def pool(prepared: Prepared) -> TokenCache:
    return TokenCache.open(prepared.artifacts.train_cache)


def test_subset_has_exactly_u_tokens(pool: TokenCache) -> None:
    first_doc = int(pool.doc_lengths()[np.random.default_rng(0).permutation(pool.n_docs)[0]])
    for u in (1, 777, first_doc, first_doc + 1, 20_000, pool.n_tokens):
        manifest = make_subset(pool, SizeSubset(unique_tokens=u))
        tokens = load_subset_tokens(pool, manifest)
        assert len(tokens) == u == manifest.unique_tokens
        assert 1 <= manifest.last_doc_tokens <= len(pool.doc_tokens(pool.doc_ids.index(manifest.doc_ids[-1])))
    assert make_subset(pool, SizeSubset(unique_tokens=first_doc)).n_docs == 1  # a boundary needs no extra doc
    assert make_subset(pool, SizeSubset(unique_tokens=pool.n_tokens)).n_docs == pool.n_docs


def test_subsets_nest_as_token_prefixes(pool: TokenCache) -> None:
    budgets = [500, 3_000, 3_001, 12_000, 30_000]
    manifests = [make_subset(pool, SizeSubset(unique_tokens=u, order_seed=3)) for u in budgets]
    verify_nested(manifests, pool)
    streams = [load_subset_tokens(pool, m) for m in manifests]
    for small, large in itertools.pairwise(streams):
        np.testing.assert_array_equal(large[: len(small)], small)
    other_seed = make_subset(pool, SizeSubset(unique_tokens=30_000, order_seed=4))
    assert other_seed.doc_ids[:5] != manifests[-1].doc_ids[:5]


def test_verify_nested_catches_a_broken_order(pool: TokenCache) -> None:
    small = make_subset(pool, SizeSubset(unique_tokens=5_000))
    large = make_subset(pool, SizeSubset(unique_tokens=15_000))
    swapped = large.doc_ids.copy()
    swapped[0], swapped[1] = swapped[1], swapped[0]
    broken = dataclasses.replace(large, doc_ids=swapped, manifest_hash="")
    with pytest.raises(
        NestingError, match=r"unique_tokens=5000 is not a prefix of unique_tokens=15000: document 0"
    ):
        verify_nested([broken, small])
    # same doc ids but a different token stream: only the token check can see it
    fake = dataclasses.replace(small, token_hash="0" * 64, manifest_hash="")
    verify_nested([fake, large])
    with pytest.raises(NestingError, match="token stream of unique_tokens=5000 is not a prefix"):
        verify_nested([fake, large], pool)
    reseeded = make_subset(pool, SizeSubset(unique_tokens=15_000, order_seed=1))
    with pytest.raises(NestingError, match="different pools, tokenizers or order seeds"):
        verify_nested([small, reseeded])


def test_manifest_round_trip_and_tamper_check(tmp_path: Path, pool: TokenCache) -> None:
    manifest = make_subset(pool, SizeSubset(unique_tokens=4_321, order_seed=2))
    path = manifest.save(tmp_path / "m.json")
    data = json.loads(path.read_text())
    assert {
        "unique_tokens",
        "order_seed",
        "pool_hash",
        "tokenizer_hash",
        "doc_ids",
        "last_doc_tokens",
        "token_hash",
        "manifest_hash",
        "n_docs",
        "pool_tokens",
    } <= set(data)
    assert SubsetManifest.load(path) == manifest
    data["doc_ids"] = data["doc_ids"][::-1]
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="manifest_hash does not match"):
        SubsetManifest.load(path)


def test_written_manifests_are_verified_against_their_directory(tmp_path: Path, pool: TokenCache) -> None:
    p1, m1 = write_subset_manifest(tmp_path, pool, SizeSubset(unique_tokens=2_000))
    p2, _ = write_subset_manifest(tmp_path, pool, SizeSubset(unique_tokens=8_000))
    assert p1.parent == p2.parent and p1 == manifest_path(tmp_path, m1)
    assert write_subset_manifest(tmp_path, pool, SizeSubset(unique_tokens=2_000)) == (p1, m1)  # reused
    # a manifest from another order planted in the directory breaks the next write
    planted = make_subset(pool, SizeSubset(unique_tokens=9_000, order_seed=5))
    dataclasses.replace(planted, order_seed=0, manifest_hash="").save(p1.parent / "unique_tokens-9000.json")
    with pytest.raises(NestingError):
        write_subset_manifest(tmp_path, pool, SizeSubset(unique_tokens=10_000))
    assert not (p1.parent / "unique_tokens-10000.json").exists()


def test_subset_config_errors(pool: TokenCache) -> None:
    with pytest.raises(ConfigError) as err:
        make_subset(pool, SizeSubset(unique_tokens=pool.n_tokens + 1))
    assert str(err.value) == (
        f"unique_tokens={pool.n_tokens + 1}: must be <= {pool.n_tokens} (tokens in the training pool)"
    )
    for bad in (0, -5, "10", True, 1.5):
        with pytest.raises(ConfigError, match=rf"^unique_tokens={bad!r}: must be a positive integer$"):
            SizeSubset(unique_tokens=bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"^order_seed=-1: "):
        SizeSubset(order_seed=-1)
