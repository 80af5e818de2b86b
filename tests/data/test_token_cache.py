from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from datascale.data import token_cache
from datascale.data.documents import content_hash
from datascale.data.token_cache import TokenCache, build_token_cache_from_batches
from datascale.data.tokenizer import BPETokenizer, TrainedTokenizer

TEXTS = [f"Document {i}: " + "to be or not to be, that is the question. " * (i + 1) for i in range(12)] + [
    "é✓"
]
IDS = [f"t:{i}" for i in range(len(TEXTS))]
HASH = content_hash(IDS, ["d"] * len(TEXTS), TEXTS)


@pytest.fixture(scope="module")
def tok(tmp_path_factory: pytest.TempPathFactory) -> TrainedTokenizer:
    return BPETokenizer(vocab_size=300).train(TEXTS, tmp_path_factory.mktemp("tok") / "tokenizer.json")


def _build(
    root: Path,
    tok: TrainedTokenizer,
    texts: list[str] = TEXTS,
    chash: str = HASH,
    tok_hash: str | None = None,
) -> TokenCache:
    batch = {"doc_id": IDS[: len(texts)], "domain": [""] * len(texts), "text": texts}
    return build_token_cache_from_batches(
        root, [batch], chash, tok.tokenizer, tok_hash or tok.hash, tok.eos_id, n_docs=len(texts)
    )


def test_cache_layout_round_trips_every_document(tmp_path: Path, tok: TrainedTokenizer) -> None:
    cache = _build(tmp_path, tok)
    assert cache.built
    again = TokenCache.open(cache.path)
    assert isinstance(again.tokens, np.memmap) and again.tokens.dtype == np.uint16
    assert again.offsets.dtype == np.int64 and len(again.offsets) == len(TEXTS) + 1
    assert list(again.doc_ids) == IDS and again.doc_ids[-1] == IDS[-1] and again.doc_ids[1:3] == IDS[1:3]
    assert again.doc_ids.positions([IDS[5], IDS[2]]) == [5, 2]
    assert list(again.doc_domains) == [""] * len(TEXTS)
    assert again.n_bytes == sum(len(t.encode()) for t in TEXTS)
    assert again.meta["tokenizer_hash"] == tok.hash and again.content_hash == HASH
    for i, text in enumerate(TEXTS):
        doc = again.doc_tokens(i)
        assert doc[-1] == tok.eos_id and tok.eos_id not in doc[:-1]
        assert tok.tokenizer.decode(doc[:-1].tolist()) == text
    assert sorted(p.name for p in cache.path.iterdir()) == sorted(token_cache.FILES)


def test_second_call_tokenises_nothing(tmp_path: Path, tok: TrainedTokenizer) -> None:
    first = _build(tmp_path, tok)
    before = dict(token_cache.STATS)
    second = _build(tmp_path, tok)
    assert not second.built and second.path == first.path
    assert before == token_cache.STATS
    other = _build(tmp_path, tok, tok_hash="another-tokenizer")  # same text, other tokenizer: other cache
    assert other.built and other.path != first.path
    assert token_cache.STATS["documents_tokenised"] == before["documents_tokenised"] + len(TEXTS)


def test_concurrent_builders_build_once(tmp_path: Path, tok: TrainedTokenizer) -> None:
    """Separate lock file handles conflict even within one process, as they do across processes."""
    before = token_cache.STATS["caches_built"]
    barrier = threading.Barrier(3)
    results: list[TokenCache] = []

    def worker() -> None:
        barrier.wait()
        results.append(_build(tmp_path, tok))

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert token_cache.STATS["caches_built"] == before + 1
    assert sum(r.built for r in results) == 1 and len({r.path for r in results}) == 1
    assert not list(tmp_path.glob(".tmp-*"))


def test_failed_build_leaves_nothing_behind(tmp_path: Path, tok: TrainedTokenizer) -> None:
    with pytest.raises(AttributeError):  # a None text fails half-way through the build
        _build(tmp_path, tok, texts=[*TEXTS[:3], None], chash="broken")  # type: ignore[list-item]
    assert [p for p in tmp_path.iterdir() if p.suffix != ".lock"] == []
    assert _build(tmp_path, tok, texts=TEXTS[:3], chash="fixed").n_docs == 3
