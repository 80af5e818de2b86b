from __future__ import annotations

import json

import datasets
import pytest

from datascale.data.documents import (
    DOCUMENT_FEATURES,
    DocumentError,
    content_hash,
    dataset_content_hash,
    documents_from_rows,
    make_document,
    validate_documents,
)


def test_schema_round_trip_keeps_nullable_quality_and_json_meta() -> None:
    ds = documents_from_rows(
        [
            make_document("local:a.txt", "héllo", "prose", "local", meta={"file": "a.txt", "n": 1}),
            make_document("local:b.txt", "world", "prose", "local", quality=0.5),
        ]
    )
    assert ds.features == DOCUMENT_FEATURES
    assert list(DOCUMENT_FEATURES) == ["doc_id", "text", "domain", "source", "quality", "meta"]
    assert DOCUMENT_FEATURES["quality"].dtype == "float32"
    assert ds[0]["quality"] is None and ds[1]["quality"] == pytest.approx(0.5)
    assert json.loads(ds[0]["meta"]) == {"file": "a.txt", "n": 1}
    assert json.loads(ds[1]["meta"]) == {}


def test_validate_rejects_duplicate_ids_and_foreign_schema() -> None:
    row = make_document("x:1", "text", "d", "s")
    with pytest.raises(DocumentError, match="x:1"):
        documents_from_rows([row, dict(row)])
    with pytest.raises(DocumentError, match="features"):
        validate_documents(datasets.Dataset.from_dict({"text": ["a"]}))


def test_content_hash_is_order_sensitive_and_unambiguous() -> None:
    base = content_hash(["a", "b"], ["d", "d"], ["x", "y"])
    assert base == content_hash(["a", "b"], ["d", "d"], ["x", "y"])
    assert base != content_hash(["b", "a"], ["d", "d"], ["y", "x"])
    assert base != content_hash(["a", "b"], ["d", "d"], ["x", "y!"])
    # length prefixes: moving a boundary changes the hash
    assert content_hash(["ab"], ["d"], ["c"]) != content_hash(["a"], ["d"], ["bc"])
    ds = documents_from_rows([make_document("a", "x", "d", "s"), make_document("b", "y", "d", "s")])
    assert dataset_content_hash(ds) == base
