from __future__ import annotations

import numpy as np
import pytest
from quality_fixtures import docs, random_text, vocabulary

from datascale.data.quality.dedup import ExactDedup, MinHashDedup
from datascale.data.quality.degrade import Degrade
from datascale.data.quality.evaluation import removal_precision_recall
from datascale.data.transforms import TransformReport


def _planted() -> TransformReport:
    marked = {"a": "typos", "b": "typos", "c": "duplicates", "d": "boilerplate"}
    return TransformReport("mix", {}, 10, 11, {}, marked)


def test_precision_and_recall_of_removals() -> None:
    removals = TransformReport("gopher", {}, 11, 8, {"a": "x", "c": "y", "z": "y"})
    result = removal_precision_recall(_planted(), removals)
    assert (result["planted"], result["removed"], result["true_positives"]) == (4, 3, 2)
    assert result["precision"] == pytest.approx(2 / 3) and result["recall"] == pytest.approx(0.5)
    assert result["f1"] == pytest.approx(2 * (2 / 3) * 0.5 / (2 / 3 + 0.5))
    assert result["recall_by_kind"] == {"boilerplate": 0.0, "duplicates": 1.0, "typos": 0.5}


def test_several_steps_and_stored_dict_reports() -> None:
    steps = [
        TransformReport("minhash", {}, 11, 10, {"c": "near_duplicate_of:x"}).to_dict(),
        TransformReport("gopher", {}, 10, 8, {"a": "r", "b": "r"}),
    ]
    result = removal_precision_recall(_planted().to_dict(), steps)
    assert result["precision"] == 1.0 and result["recall"] == 0.75


def test_nothing_removed_or_nothing_planted_gives_none() -> None:
    nothing = TransformReport("none", {}, 10, 10)
    assert removal_precision_recall(_planted(), nothing)["precision"] is None
    assert removal_precision_recall(nothing, _planted())["recall"] is None


def test_planted_duplicates_are_all_found_by_dedup() -> None:
    rng = np.random.default_rng(0)
    words = vocabulary("e", 400)
    pool = docs(*[(f"d{i:02d}", random_text(rng, words, 150)) for i in range(50)])
    degraded, planted = Degrade(kind="mix", fraction=0.4, seed=0, strength=0.01).apply(pool)
    exact = removal_precision_recall(planted, ExactDedup().apply(degraded)[1])
    near = removal_precision_recall(planted, MinHashDedup(threshold=0.7).apply(degraded)[1])
    # with 1% of words replaced, only some copies are exact: exact dedup finds those, MinHash finds them all
    assert exact["precision"] == 1.0 and exact["recall_by_kind"]["duplicates"] < 1.0
    assert near["recall_by_kind"]["duplicates"] == 1.0 and near["precision"] == 1.0
    assert near["recall"] == pytest.approx(4 / 20)  # the other kinds are not duplicates
