from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from quality_fixtures import docs, random_text, vocabulary

from datascale.config_errors import ConfigError
from datascale.data.documents import column
from datascale.data.quality.classifier import ClassifierTopQ

KITCHEN = vocabulary("k", 300)  # the reference domain's words
LEDGER = vocabulary("l", 300)  # another domain's words


@pytest.fixture(scope="module")
def pool():
    """30 `ref` documents (kitchen words), 30 `other` documents (ledger words), and 40 `web` documents whose
    share of kitchen words rises with their number (web07 has 7/40 of them, web39 39/40)."""
    rng = np.random.default_rng(0)
    rows = [(f"ref{i:02d}", random_text(rng, KITCHEN, 80), "ref") for i in range(30)]
    rows += [(f"other{i:02d}", random_text(rng, LEDGER, 80), "other") for i in range(30)]
    for i in range(40):
        words = [KITCHEN[j] for j in rng.integers(0, 300, size=i * 2)] + [
            LEDGER[j] for j in rng.integers(0, 300, size=80 - i * 2)
        ]
        rows.append((f"web{i:02d}", " ".join(rng.permutation(words)) + ".", "web"))
    order = rng.permutation(len(rows))
    return docs(*[rows[i] for i in order])


def test_top_q_keeps_round_q_n_and_the_levels_are_nested(pool) -> None:
    kept = {}
    for q in (0.1, 0.2, 0.5, 1.0):
        out, report = ClassifierTopQ(q=q, reference_domain="ref").apply(pool)
        kept[q] = column(out, "doc_id")
        assert len(out) == round(q * 100) and len(report.removed) == 100 - len(out)
        assert kept[q] == [d for d in column(pool, "doc_id") if d in set(kept[q])]  # pool order is kept
    assert set(kept[0.1]) < set(kept[0.2]) < set(kept[0.5]) < set(kept[1.0])


def test_documents_like_the_reference_score_higher(pool) -> None:
    out, report = ClassifierTopQ(q=0.5, reference_domain="ref").apply(pool)
    assert report.stats["kept_by_domain"]["ref"] == 30 and "other" not in report.stats["kept_by_domain"]
    scores = dict(zip(column(out, "doc_id"), column(out, "quality"), strict=True))
    assert min(scores.values()) == pytest.approx(report.stats["threshold"], rel=1e-6)
    kept_web = sorted(int(d[3:]) for d in scores if d.startswith("web"))
    assert len(kept_web) == 20 and min(kept_web) >= 15  # the most kitchen-like web documents
    everything, _ = ClassifierTopQ(q=1.0, reference_domain="ref").apply(pool)
    web_scores = {
        int(d[3:]): s
        for d, s in zip(column(everything, "doc_id"), column(everything, "quality"), strict=True)
        if d.startswith("web")
    }
    ranks = np.argsort(np.argsort([web_scores[i] for i in range(40)]))
    assert np.corrcoef(ranks, np.arange(40))[0, 1] > 0.9  # score rises with the share of kitchen words
    means = report.stats["score_mean_by_domain"]
    assert means["ref"] > means["web"] > means["other"]


def test_reference_docs_keep_spends_q_on_the_other_documents(pool) -> None:
    out, _ = ClassifierTopQ(q=0.1, reference_domain="ref", reference_docs="keep").apply(pool)
    assert len(out) == 30 + 7  # every ref document, plus round(0.1 * 70) of the others
    kept = column(out, "doc_id")
    assert sum(d.startswith("ref") for d in kept) == 30
    kept_web = [int(d[3:]) for d in kept if d.startswith("web")]
    assert len(kept_web) == 7 and min(kept_web) >= 25  # the most kitchen-like of the non-reference documents


def test_ties_are_broken_by_doc_id() -> None:
    rng = np.random.default_rng(1)
    rows = [(f"ref{i}", random_text(rng, KITCHEN, 60), "ref") for i in range(10)]
    same = random_text(rng, LEDGER, 60)
    rows += [(f"x{i}", same, "other") for i in (7, 2, 9, 0, 5, 3)]  # identical texts: identical scores
    out, _ = ClassifierTopQ(q=0.5, reference_domain="ref", reference_docs="keep").apply(docs(*rows))
    assert sorted(d for d in column(out, "doc_id") if d.startswith("x")) == ["x0", "x2", "x3"]


def test_reference_files_as_positives(pool, tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    (tmp_path / "a.txt").write_text(random_text(rng, KITCHEN, 2000), encoding="utf-8")
    (tmp_path / "b.txt").write_text(random_text(rng, KITCHEN, 2000), encoding="utf-8")
    select = ClassifierTopQ(q=0.3, reference_paths=[str(tmp_path / "*.txt")])
    out, report = select.apply(pool)
    assert report.stats["positives"] >= 4 and set(report.stats["kept_by_domain"]) <= {"ref", "web"}
    assert len(out) == 30
    fingerprint = select.fingerprint()
    assert [name for name, _ in fingerprint["reference_files"]] == ["a.txt", "b.txt"]
    (tmp_path / "b.txt").write_text("changed", encoding="utf-8")
    assert select.fingerprint()["reference_files"] != fingerprint["reference_files"]


def test_same_settings_same_scores_and_no_scores_written_when_off(pool) -> None:
    first, report = ClassifierTopQ(q=0.3, reference_domain="ref", seed=3).apply(pool)
    again, _ = ClassifierTopQ(q=0.3, reference_domain="ref", seed=3).apply(pool)
    assert column(first, "quality") == column(again, "quality")
    untouched, _ = ClassifierTopQ(q=0.3, reference_domain="ref", write_scores=False).apply(pool)
    assert set(column(untouched, "quality")) == {None}
    assert report.stats["negatives"] == report.stats["positives"] == 30


def test_unknown_reference_domain_fails_with_the_pool_domains(pool) -> None:
    with pytest.raises(ConfigError, match="other"):
        ClassifierTopQ(reference_domain="literature").apply(pool)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"q": 0, "reference_domain": "ref"}, "q"),
        ({"q": 1.5, "reference_domain": "ref"}, "q"),
        ({}, "reference_domain"),
        ({"reference_domain": "ref", "reference_paths": ["x.txt"]}, "reference_domain"),
        ({"reference_paths": ["/nonexistent/*.txt"]}, "reference_paths"),
        ({"reference_paths": ["/nonexistent/*.txt"], "reference_docs": "keep"}, "reference_docs"),
        ({"reference_domain": "ref", "n_features": 10}, "n_features"),
        ({"reference_domain": "ref", "regularization": 0}, "regularization"),
    ],
)
def test_invalid_settings_name_the_field(kwargs: dict, field: str) -> None:
    with pytest.raises(ConfigError) as err:
        ClassifierTopQ(**kwargs)
    assert err.value.field == field
