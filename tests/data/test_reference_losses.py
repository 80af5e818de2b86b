"""Reference losses of the held-out sets: the uniform loss ln V and the unigram entropy, in nats per token and
bits per byte, computed by the data stage and stored in DataArtifacts. The run identity (pinned in
tests/test_run_id.py) hashes the resolved config and the subset manifest, not the artifacts."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from data_fixtures import Prepared

from datascale.artifacts import DataArtifacts
from datascale.data.token_cache import TokenCache, reference_losses, unigram_entropy


def test_unigram_entropy_of_a_known_distribution():
    assert unigram_entropy(np.array([1, 1, 2, 0])) == pytest.approx(1.5 * math.log(2))  # p = 1/4, 1/4, 1/2
    assert unigram_entropy(np.array([5])) == 0.0
    assert unigram_entropy(np.ones(8)) == pytest.approx(math.log(8))
    with pytest.raises(ValueError, match="no tokens"):
        unigram_entropy(np.zeros(3))


def test_reference_losses_of_a_tiny_stream():
    # targets are tokens 1..n-1 (the first token is only ever an input): 0, 0, 1, 2 -> p = 1/2, 1/4, 1/4
    tokens = np.array([3, 0, 0, 1, 2], dtype=np.uint16)
    token_bytes = np.array([1, 2, 4, 0], dtype=np.int32)  # token 3 is a special token (EOS): 0 bytes
    ref = reference_losses(tokens, token_bytes, vocab_size=4)
    assert ref["n_tokens"] == 4 and ref["n_bytes"] == 1 + 1 + 2 + 4
    assert ref["uniform_nats"] == pytest.approx(math.log(4))
    assert ref["unigram_nats"] == pytest.approx(1.5 * math.log(2))
    # bits per byte = nats · targets / (bytes · ln 2), as the evaluation computes it
    assert ref["uniform_bpb"] == pytest.approx(2.0 * 4 / 8) and ref["unigram_bpb"] == pytest.approx(
        1.5 * 4 / 8
    )
    with pytest.raises(ValueError, match="at least 2 tokens"):
        reference_losses(tokens[:1], token_bytes, 4)


def test_prepare_stores_them_per_held_out_domain_and_split(prepared: Prepared, tmp_path: Path):
    art = prepared.artifacts
    assert set(art.reference_losses) == set(art.eval_caches)
    lengths = np.load(art.token_bytes_path)
    for domain, splits in art.eval_caches.items():
        for which, path in splits.items():
            ref = art.reference_losses[domain][which]
            cache = TokenCache.open(path)
            assert ref == reference_losses(cache.tokens, lengths, art.vocab_size)
            assert ref["uniform_nats"] == pytest.approx(math.log(art.vocab_size))
            assert 0 < ref["unigram_nats"] < ref["uniform_nats"]
            assert ref["n_tokens"] == cache.n_tokens - 1 and 0 < ref["n_bytes"] <= cache.n_bytes
            assert 0 < ref["unigram_bpb"] < ref["uniform_bpb"]
    # saved and loaded with the other artifacts; artifacts written before the field existed still load
    assert DataArtifacts.load(art.save(tmp_path / "a.json")).reference_losses == art.reference_losses
    old = {k: v for k, v in art.to_dict().items() if k != "reference_losses"}
    (tmp_path / "old.json").write_text(json.dumps(old))
    assert DataArtifacts.load(tmp_path / "old.json").reference_losses == {}
