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
        manifest = make_subset(pool, SizeSubset(unique_tokens=u, stratify=False))
        tokens = load_subset_tokens(pool, manifest)
        assert len(tokens) == u == manifest.unique_tokens
        (segment,) = manifest.segments
        assert 1 <= segment.last_doc_tokens <= len(pool.doc_tokens(pool.doc_ids.index(segment.doc_ids[-1])))
    assert (
        make_subset(pool, SizeSubset(unique_tokens=first_doc, stratify=False)).n_docs == 1
    )  # a boundary needs no extra doc
    assert make_subset(pool, SizeSubset(unique_tokens=pool.n_tokens, stratify=False)).n_docs == pool.n_docs


def test_subsets_nest_as_token_prefixes(pool: TokenCache) -> None:
    budgets = [500, 3_000, 3_001, 12_000, 30_000]
    manifests = [
        make_subset(pool, SizeSubset(unique_tokens=u, order_seed=3, stratify=False)) for u in budgets
    ]
    verify_nested(manifests, pool)
    streams = [load_subset_tokens(pool, m) for m in manifests]
    for small, large in itertools.pairwise(streams):
        np.testing.assert_array_equal(large[: len(small)], small)
    other_seed = make_subset(pool, SizeSubset(unique_tokens=30_000, order_seed=4, stratify=False))
    assert other_seed.doc_ids[:5] != manifests[-1].doc_ids[:5]


def test_verify_nested_catches_a_broken_order(pool: TokenCache) -> None:
    small = make_subset(pool, SizeSubset(unique_tokens=5_000, stratify=False))
    large = make_subset(pool, SizeSubset(unique_tokens=15_000, stratify=False))
    swapped = large.segments[0].doc_ids.copy()
    swapped[0], swapped[1] = swapped[1], swapped[0]
    broken_segment = dataclasses.replace(large.segments[0], doc_ids=swapped)
    broken = dataclasses.replace(large, segments=[broken_segment], manifest_hash="")
    with pytest.raises(
        NestingError, match=r"unique_tokens=5000 is not a prefix of unique_tokens=15000: document 0"
    ):
        verify_nested([broken, small])
    # same doc ids but a different token stream: only the token check can see it
    fake_segment = dataclasses.replace(small.segments[0], token_hash="0" * 64)
    fake = dataclasses.replace(small, segments=[fake_segment], manifest_hash="")
    verify_nested([fake, large])
    with pytest.raises(NestingError, match="token stream of unique_tokens=5000 is not a prefix"):
        verify_nested([fake, large], pool)
    reseeded = make_subset(pool, SizeSubset(unique_tokens=15_000, order_seed=1, stratify=False))
    with pytest.raises(NestingError, match="different pools, tokenizers, order seeds or compositions"):
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
        "composition",
        "segments",
        "token_hash",
        "manifest_hash",
        "pool_tokens",
    } <= set(data)
    assert SubsetManifest.load(path) == manifest
    data["segments"] = data["segments"][::-1]
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


def _domain_token_shares(pool: TokenCache) -> dict[str, float]:
    lengths, domains = pool.doc_lengths(), np.asarray(pool.doc_domains)
    return {d: float(lengths[domains == d].sum()) / pool.n_tokens for d in sorted(set(pool.doc_domains))}


def test_stratified_subsets_have_the_pools_shares_at_every_size(pool: TokenCache) -> None:
    shares = _domain_token_shares(pool)
    assert len(shares) == 3
    manifests = [make_subset(pool, SizeSubset(unique_tokens=u)) for u in (600, 2_000, 8_000, 30_000)]
    for m in manifests:
        got = {d: v["unique_tokens"] for d, v in m.domains().items()}
        assert sum(got.values()) == m.unique_tokens == len(load_subset_tokens(pool, m))
        for d, share in shares.items():  # exact budgets: floor(w U), the last domain takes the rest
            assert abs(got[d] - share * m.unique_tokens) < len(shares), (d, got[d], share)
        for s in m.segments:  # every document of a segment is of its domain
            assert {pool.doc_domains[pool.doc_ids.index(i)] for i in s.doc_ids} == {s.domain}
    verify_nested(manifests, pool)
    for small, large in itertools.pairwise(manifests):  # per domain a token-stream prefix
        for a, b in zip(small.segments, large.segments, strict=True):
            assert b.doc_ids[: len(a.doc_ids) - 1] == a.doc_ids[:-1]


def test_unstratified_order_drifts_in_composition(pool: TokenCache) -> None:
    """The reason stratification is the default: one order over the pool mixes size with composition."""
    small = make_subset(pool, SizeSubset(unique_tokens=600, stratify=False))
    index = {d: i for i, d in enumerate(pool.doc_ids)}
    domains = {pool.doc_domains[index[d]] for d in small.doc_ids}
    assert len(domains) < 3  # 600 tokens are one or two documents: whole domains are missing


def test_mixture_weights_give_exact_token_shares_and_nest(pool: TokenCache, tmp_path: Path) -> None:
    domains = sorted(set(pool.doc_domains))
    weights = {domains[0]: 0.25, domains[1]: 0.75}
    paths = []
    for u in (1_000, 4_000, 9_999):
        path, m = write_subset_manifest(tmp_path, pool, SizeSubset(unique_tokens=u, weights=weights))
        paths.append(path)
        got = {d: v["unique_tokens"] for d, v in m.domains().items()}
        assert got == {domains[0]: u // 4, domains[1]: u - u // 4}  # exact, and no third domain
    assert len({p.parent for p in paths}) == 1  # one nesting family, verified on every write
    _, stratified = write_subset_manifest(tmp_path, pool, SizeSubset(unique_tokens=1_000))
    assert manifest_path(tmp_path, stratified).parent != paths[0].parent


def test_mixture_errors_name_the_field_and_what_is_allowed(pool: TokenCache) -> None:
    domains = sorted(set(pool.doc_domains))
    with pytest.raises(ConfigError, match=r"^weights=.*: must sum to 1 \(sum is 0\.9\)$"):
        SizeSubset(weights={domains[0]: 0.5, domains[1]: 0.4})
    with pytest.raises(ConfigError, match=r"^weights\.x=-0\.5: must be a number >= 0$"):
        SizeSubset(weights={domains[0]: 1.5, "x": -0.5})
    with pytest.raises(ConfigError, match=r"^weights=\['poetry'\]: unknown domain: the training pool has \["):
        make_subset(pool, SizeSubset(unique_tokens=1_000, weights={"poetry": 0.5, domains[0]: 0.5}))
    small = min(domains, key=lambda d: _domain_token_shares(pool)[d])
    budget = int(pool.n_tokens * 0.9)
    with pytest.raises(ConfigError, match=rf"domain '{small}' has only \d+ tokens.*allow_repeat=true$"):
        make_subset(pool, SizeSubset(unique_tokens=budget, weights={small: 1.0}))


def test_repetition_when_allowed_is_exact_and_recorded(pool: TokenCache) -> None:
    domain = sorted(set(pool.doc_domains))[0]
    pool_tokens = int(_domain_token_shares(pool)[domain] * pool.n_tokens + 0.5)
    u = int(pool_tokens * 2.5)
    m = make_subset(pool, SizeSubset(unique_tokens=u, weights={domain: 1.0}, allow_repeat=True))
    assert len(load_subset_tokens(pool, m)) == u
    assert m.domains()[domain]["repeats"] == pytest.approx(2.5, rel=1e-3)
