from __future__ import annotations

import numpy as np
import pytest
from quality_fixtures import docs, random_text, vocabulary

from datascale.config_errors import ConfigError
from datascale.data.documents import column
from datascale.data.quality.dedup import ExactDedup, MinHashDedup, word_shingles

WORDS = vocabulary("w", 3000)


def _text(seed: int, n_words: int = 240) -> str:
    return random_text(np.random.default_rng(seed), WORDS, n_words)


def _replace_words(text: str, positions: range | list[int], seed: int) -> str:
    words = text.split(" ")
    rng = np.random.default_rng(seed)
    for p in positions:
        words[p] = "zz" + "".join(rng.choice(list("abcdefgh"), size=6))
    return " ".join(words)


def _jaccard(a: str, b: str) -> float:
    sa, sb = word_shingles(a, 5), word_shingles(b, 5)
    return len(sa & sb) / len(sa | sb)


def test_exact_dedup_matches_normalised_text_and_keeps_the_first() -> None:
    pool = docs(("a", "Hello  world.\n"), ("b", "Other text."), ("c", "Hello world."), ("d", "hello world."))
    out, report = ExactDedup().apply(pool)
    assert column(out, "doc_id") == ["a", "b", "d"]  # case is not normalised away
    assert report.removed == {"c": "exact_duplicate_of:a"}
    assert report.stats["groups_with_duplicates"] == 1


def test_minhash_finds_planted_near_duplicates_and_spares_the_rest() -> None:
    originals = [(f"doc{i}", _text(i)) for i in range(30)]
    near = _replace_words(originals[3][1], [10, 100], seed=1)  # two words changed: Jaccard ~0.96
    near_b = _replace_words(originals[7][1], [50], seed=2)
    assert _jaccard(near, originals[3][1]) > 0.9
    pool = docs(*originals, ("doc3-copy", near), ("doc7-copy", near_b), ("doc7-copy2", near_b + " Thanks."))
    out, report = MinHashDedup().apply(pool)
    assert report.removed == {
        "doc3-copy": "near_duplicate_of:doc3",
        "doc7-copy": "near_duplicate_of:doc7",
        "doc7-copy2": "near_duplicate_of:doc7",
    }
    assert column(out, "doc_id") == [d for d, _ in originals]
    assert report.stats["clusters"] == 2


def test_minhash_threshold_decides_a_moderately_similar_pair() -> None:
    base = _text(100)
    n_words = len(base.split(" "))
    partial = _replace_words(base, range(0, n_words, 6), seed=3)  # every 6th word changed: Jaccard ~0.3
    similar = _replace_words(base, range(n_words - 40, n_words), seed=4)  # the last 40 words changed
    assert 0.55 < _jaccard(base, similar) < 0.75 and _jaccard(base, partial) < 0.4
    pool = docs(("base", base), ("similar", similar), ("partial", partial))
    assert MinHashDedup(threshold=0.5).apply(pool)[1].removed == {"similar": "near_duplicate_of:base"}
    assert MinHashDedup(threshold=0.8).apply(pool)[1].removed == {}


def test_minhash_keeps_the_first_in_pool_order_and_is_deterministic() -> None:
    a = _text(5)
    b = _replace_words(a, [20], seed=9)
    forward = MinHashDedup().apply(docs(("x", a), ("y", b)))[1].removed
    backward = MinHashDedup().apply(docs(("y", b), ("x", a)))[1].removed
    assert forward == {"y": "near_duplicate_of:x"} and backward == {"x": "near_duplicate_of:y"}
    assert MinHashDedup().apply(docs(("x", a), ("y", b)))[1].removed == forward


def test_short_texts_are_one_shingle() -> None:
    assert word_shingles("Hello, World!", 5) == {b"hello world"}
    assert len(word_shingles("a b c d e f g", 5)) == 3


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [({"threshold": 1.0}, "threshold"), ({"num_perm": 8}, "num_perm"), ({"shingle_size": 0}, "shingle_size")],
)
def test_minhash_invalid_settings(kwargs: dict, field: str) -> None:
    with pytest.raises(ConfigError) as err:
        MinHashDedup(**kwargs)
    assert err.value.field == field


def test_minhash_fingerprint_has_scheme_and_version() -> None:
    fp = MinHashDedup(threshold=0.7).fingerprint()
    assert fp["threshold"] == 0.7 and fp["scheme"] == "affine32" and fp["libraries"]["datasketch"]
