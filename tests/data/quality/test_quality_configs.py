"""Every leaf of the transform groups instantiates, is a PoolTransform, and documents exactly its fields."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from hydra.utils import get_class, instantiate
from omegaconf import OmegaConf

from datascale.data.transforms import TRANSFORM_GROUPS, Identity, PoolTransform

CONF = Path(__file__).resolve().parents[3] / "conf"
EXPECTED_LEAVES = {
    "degrade": {"none", "typos", "word_noise", "shuffle", "duplicates", "boilerplate", "mix"},
    "dedup": {"none", "exact", "minhash"},
    "filter": {"none", "gopher", "c4", "fineweb", "heuristic", "quality_threshold"},
    "select": {"none", "top_q"},
}
LEAVES = [(group, path.stem) for group in TRANSFORM_GROUPS for path in sorted((CONF / group).glob("*.yaml"))]


def test_every_group_has_its_leaves() -> None:
    assert {
        group: {p.stem for p in (CONF / group).glob("*.yaml")} for group in TRANSFORM_GROUPS
    } == EXPECTED_LEAVES


@pytest.mark.parametrize(("group", "leaf"), LEAVES)
def test_leaf_instantiates_to_a_pool_transform(group: str, leaf: str) -> None:
    cfg = OmegaConf.load(CONF / group / f"{leaf}.yaml")
    transform = instantiate(cfg)
    assert isinstance(transform, PoolTransform)
    json.dumps(transform.fingerprint())  # a cache key: must be JSON
    if leaf == "none":
        assert isinstance(transform, Identity)
        return
    fields = {f.name for f in dataclasses.fields(get_class(cfg._target_))}
    assert set(cfg) - {"_target_"} == fields  # every field is in the leaf (with its comment)
    assert transform.name == leaf


def test_every_setting_has_a_comment() -> None:
    for group, leaf in LEAVES:
        text = (CONF / group / f"{leaf}.yaml").read_text()
        assert text.lstrip().startswith("#"), (group, leaf)
        assert all(len(line) <= 110 for line in text.splitlines()), (group, leaf)
