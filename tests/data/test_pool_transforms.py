"""Pool transforms in the data stage: applied to the training pool only, recorded, cached, measurable."""

from __future__ import annotations

import json
from pathlib import Path

from data_fixtures import Prepared

from datascale.data.prepare import prepare_data
from datascale.data.quality.dedup import ExactDedup
from datascale.data.quality.degrade import Degrade
from datascale.data.quality.evaluation import removal_precision_recall
from datascale.data.subsets import SizeSubset
from datascale.data.token_cache import STATS, TokenCache
from datascale.data.transforms import Identity


def _prepare(prepared: Prepared, cache: Path, transforms: dict) -> object:
    return prepare_data(
        prepared.source,
        prepared.split,
        prepared.tokenizer,
        SizeSubset(unique_tokens=5_000),
        cache,
        progress=False,
        transforms=transforms,
    )


def test_planted_duplicates_are_found_and_everything_is_recorded(prepared: Prepared, tmp_path: Path) -> None:
    plain = _prepare(prepared, tmp_path, {"degrade": Identity(), "dedup": Identity()})
    transforms = {"degrade": Degrade(kind="duplicates", fraction=0.3, seed=0), "dedup": ExactDedup()}
    art = _prepare(prepared, tmp_path, transforms)
    base_pool = TokenCache.open(plain.train_cache)
    degraded, dedup = art.pool_transforms
    n = base_pool.n_docs
    assert degraded["group"] == "degrade" and degraded["marked"] == round(0.3 * n)
    assert degraded["output_docs"] == n + degraded["marked"]  # one added copy per selected document
    assert dedup["group"] == "dedup" and dedup["output_docs"] == n  # exactly the planted copies removed
    assert sum(dedup["removed"].values()) == degraded["marked"]
    manifest = json.loads(Path(art.pool_manifest).read_text())
    reports = {r["group"]: r["report"] for r in manifest["reports"]}
    scores = removal_precision_recall(reports["degrade"], reports["dedup"])
    assert scores["precision"] == scores["recall"] == 1.0
    # the held-out sets and the tokenizer are the untransformed study's: conditions stay comparable
    assert art.eval_caches == plain.eval_caches and art.tokenizer_hash == plain.tokenizer_hash
    assert TokenCache.open(art.train_cache).content_hash == base_pool.content_hash  # same docs back
    assert plain.pool_transforms == [] and plain.pool_manifest == ""


def test_transformed_pool_is_cached(prepared: Prepared, tmp_path: Path) -> None:
    transforms = {"degrade": Degrade(kind="typos", fraction=0.5, seed=1)}
    first = _prepare(prepared, tmp_path, transforms)
    built = dict(STATS)
    again = _prepare(prepared, tmp_path, transforms)
    assert again == first and built == STATS  # nothing tokenised the second time
    other_seed = _prepare(prepared, tmp_path, {"degrade": Degrade(kind="typos", fraction=0.5, seed=2)})
    assert other_seed.train_cache != first.train_cache
