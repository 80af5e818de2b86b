from __future__ import annotations

import re
from collections import Counter

import numpy as np
import pytest
from quality_fixtures import docs, random_text, vocabulary

from datascale.config_errors import ConfigError
from datascale.data.documents import DocumentError, column, dataset_content_hash
from datascale.data.quality import degrade as dg
from datascale.data.quality.degrade import Degrade

WORDS = vocabulary("v", 500)
KINDS_THAT_EDIT = ("typos", "word_noise", "shuffle", "boilerplate")


@pytest.fixture(scope="module")
def pool():
    rng = np.random.default_rng(0)
    return docs(*[(f"doc{i:02d}", random_text(rng, WORDS, 120)) for i in range(40)])


@pytest.mark.parametrize("kind", dg.KINDS)
def test_exactly_round_p_n_documents_are_corrupted_and_marked(pool, kind: str) -> None:
    out, report = Degrade(kind=kind, fraction=0.3, seed=1).apply(pool)
    assert report.stats["selected"] == 12 and set(report.marked.values()) == {kind}
    before = dict(zip(column(pool, "doc_id"), column(pool, "text"), strict=True))
    after = dict(zip(column(out, "doc_id"), column(out, "text"), strict=True))
    if kind == "duplicates":
        assert len(out) == 52 and len(report.marked) == 12
        for copy_id in report.marked:
            original = copy_id.removesuffix("#dup1")
            assert after[copy_id] == before[original]  # strength 0: exact copies
        assert after.keys() - report.marked.keys() == before.keys()
    else:
        assert len(out) == 40 and len(report.marked) == 12
        changed = {d for d in before if after[d] != before[d]}
        assert changed == set(report.marked)  # every marked doc changed, nothing else did
    assert (report.input_docs, report.output_docs) == (40, len(out))


def test_same_seed_same_output_other_seed_other_output(pool) -> None:
    first, report = Degrade(kind="mix", fraction=0.25, seed=3).apply(pool)
    again, report_again = Degrade(kind="mix", fraction=0.25, seed=3).apply(pool)
    other, report_other = Degrade(kind="mix", fraction=0.25, seed=4).apply(pool)
    assert dataset_content_hash(first) == dataset_content_hash(again) and report.marked == report_again.marked
    assert dataset_content_hash(first) != dataset_content_hash(other)
    assert set(report.marked) != set(report_other.marked)


def test_mix_deals_the_kinds_evenly_and_keeps_copies_next_to_originals(pool) -> None:
    out, report = Degrade(kind="mix", fraction=0.5, seed=0).apply(pool)
    counts = Counter(report.stats["kinds"].values())
    assert sum(report.stats["kinds"].values()) == 20 and max(counts) - min(counts) <= 1
    assert report.stats["kinds"] == {
        "typos": 4,
        "word_noise": 4,
        "shuffle": 4,
        "duplicates": 4,
        "boilerplate": 4,
    }
    ids = column(out, "doc_id")
    for copy_id in (d for d, k in report.marked.items() if k == "duplicates"):
        assert ids[ids.index(copy_id) - 1] == copy_id.removesuffix("#dup1")


def test_rounding_is_half_up_and_fraction_zero_changes_nothing(pool) -> None:
    ten = pool.select(range(10))
    assert Degrade(kind="typos", fraction=0.25).apply(ten)[1].stats["selected"] == 3  # 2.5 -> 3
    out, report = Degrade(kind="typos", fraction=0.0).apply(pool)
    assert report.marked == {} and dataset_content_hash(out) == dataset_content_hash(pool)


def test_word_noise_replaces_words_at_the_requested_rate() -> None:
    rng = np.random.default_rng(0)
    text = " ".join(WORDS[i] for i in rng.integers(0, len(WORDS), size=4000))
    noisy = dg.replace_words(text, np.random.default_rng(1), 0.3, vocabulary("q", 200))
    changed = sum(a != b for a, b in zip(text.split(), noisy.split(), strict=True))
    assert 0.27 < changed / 4000 < 0.33


def test_typos_change_letters_at_about_the_requested_rate() -> None:
    text = " ".join(["abcde"] * 4000)
    assert dg.add_typos(text, np.random.default_rng(0), 0.0) == text
    noisy = dg.add_typos(text, np.random.default_rng(0), 0.05)
    changed = sum(a != b for a, b in zip(text.split(), noisy.split(), strict=True)) / 4000
    # a word changes when one of its 5 letters is hit: 1 - 0.95**5 = 0.226, less the edits that change nothing
    # (a letter replaced by itself: 1/4 * 1/26 of hits)
    assert 0.19 < changed < 0.25
    assert all(set(word) <= set("abcdefghijklmnopqrstuvwxyz") for word in noisy.split())


def test_shuffle_keeps_the_words_and_moves_spans() -> None:
    text = " ".join(f"w{i}" for i in range(80))
    shuffled = dg.shuffle_spans(text, np.random.default_rng(0), 1.0, 8)
    assert sorted(shuffled.split()) == sorted(text.split()) and shuffled != text
    assert dg.shuffle_spans("too short", np.random.default_rng(0), 1.0, 8) == "too short"


def test_boilerplate_wraps_the_text_and_keeps_every_paragraph() -> None:
    text = "First paragraph here.\n\nSecond paragraph here.\n\nThird one."
    out = dg.add_boilerplate(text, np.random.default_rng(0), 1.0)
    lines = out.splitlines()
    assert lines[0] in dg.BOILERPLATE_HEADERS and lines[-1] in dg.BOILERPLATE_FOOTERS
    assert all(p in out for p in text.split("\n\n"))
    assert sum(line in dg.BOILERPLATE_INLINE for line in lines) == 3  # strength 1: after every paragraph


def test_near_duplicate_copies_and_several_copies(pool) -> None:
    out, report = Degrade(kind="duplicates", fraction=0.1, strength=0.05, copies=2, seed=2).apply(pool)
    assert len(report.marked) == 8 and len(out) == 48
    texts = dict(zip(column(out, "doc_id"), column(out, "text"), strict=True))
    for copy_id in report.marked:
        original = texts[re.sub(r"#dup\d$", "", copy_id)]
        same = sum(a == b for a, b in zip(original.split(), texts[copy_id].split(), strict=True))
        assert texts[copy_id] != original and same / len(original.split()) > 0.85


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"kind": "noise"}, "kind"),
        ({"fraction": 1.5}, "fraction"),
        ({"seed": -1}, "seed"),
        ({"strength": 2}, "strength"),
        ({"copies": 0}, "copies"),
        ({"span_words": 0}, "span_words"),
    ],
)
def test_invalid_settings_name_the_field(kwargs: dict, field: str) -> None:
    with pytest.raises(ConfigError) as err:
        Degrade(**kwargs)
    assert err.value.field == field


def test_fingerprint_has_the_resolved_strengths() -> None:
    fp = Degrade(kind="mix").fingerprint()
    assert fp["strength"] == dg.DEFAULT_STRENGTH and fp["name"] == "mix" and fp["version"] >= 1
    assert Degrade(kind="typos", strength=0.1).fingerprint()["strength"] == {"typos": 0.1}


def test_copy_ids_that_clash_with_existing_ids_fail() -> None:
    pool = docs(("a", "one two three"), ("a#dup1", "four five six"))
    with pytest.raises(DocumentError, match="a#dup1"):
        Degrade(kind="duplicates", fraction=1.0).apply(pool)
