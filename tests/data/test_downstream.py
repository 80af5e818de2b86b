"""The downstream suite: labels from the data, document-level splits, never a training-pool document."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import numpy as np
import pytest
from data_fixtures import Prepared

from datascale.data.downstream import DownstreamSuite, build_suite, label_of, passages
from datascale.data.prepare import TrainingPool, _Corpus, prepare_data
from datascale.data.splits import HeldoutSplit
from datascale.data.token_cache import TokenCache


def test_passages_cut_at_line_ends() -> None:
    text = "".join(f"line {i:02d} " + "x" * 40 + "\n" for i in range(10))  # 49 chars a line
    pieces = passages(text, 100)
    assert [len(p.splitlines()) for p in pieces] == [3, 3, 3]  # 147 >= 100; the 1-line tail (< 50) dropped
    assert all(p.startswith("line") for p in pieces)


def test_labels_come_from_the_documents() -> None:
    assert label_of("literature", {"genre": "tragedies", "play": "othello"}) == "tragedies"
    assert label_of("code", {"path": "json/decoder.py"}) == "json"
    assert label_of("code", {"path": "copyreg.py"}) == "copyreg"
    assert label_of("science", {"package": "scipy"}) == "scipy"
    assert label_of("local", {"x": 1}) is None


def _doc(i: int, domain: str, label: str) -> dict:
    text = "".join(f"{label} {domain} passage {i} line {k} " + "w" * 30 + "\n" for k in range(40))
    return {"doc_id": f"d{i}", "domain": domain, "text": text, "meta": json.dumps({"genre": label})}


def test_suite_splits_by_document_with_known_chance() -> None:
    docs = [_doc(i, "literature", ["comedies", "tragedies", "histories"][i % 3]) for i in range(30)]
    tasks, manifest = build_suite(docs, {"p1", "p2"}, DownstreamSuite(min_per_label=2))
    cls, mc = manifest["tasks"]["classify/literature"], manifest["tasks"]["continue/literature"]
    assert cls["labels"] == ["comedies", "histories", "tragedies"] and cls["chance"] == pytest.approx(1 / 3)
    assert mc["chance"] == 0.25 and mc["n_options"] == 4
    for task in tasks.values():
        docs_of = {s: {e["doc_id"] for e in task[s]} for s in ("train", "val", "test")}
        assert not (docs_of["train"] & docs_of["test"]) and not (docs_of["val"] & docs_of["test"])
    texts = {d["doc_id"]: d["text"] for d in docs}
    for item in tasks["continue/literature"]["test"]:
        assert len(item["options"]) == 4 and 0 <= item["answer"] < 4
        true = item["options"][item["answer"]]
        assert item["context"] + true in texts[item["doc_id"]]  # the true span continues its own context
        assert sum(o in texts[item["doc_id"]] for o in item["options"]) == 1  # distractors: other documents
    with pytest.raises(ValueError, match="overlap the training pool"):
        build_suite(docs, {"d3"}, DownstreamSuite())


def test_prepared_suite_is_disjoint_from_the_pool(prepared: Prepared, tmp_path: Path) -> None:
    split = HeldoutSplit(eval_bytes_per_domain=15_000)
    art = prepare_data(
        prepared.source, split, prepared.tokenizer, prepared.subset, tmp_path, progress=False,
        downstream=DownstreamSuite(min_per_label=2, passage_chars=300, span_chars=60),
    )  # fmt: skip
    manifest = json.loads(Path(art.downstream_manifest).read_text())
    tasks = json.loads((Path(art.downstream_manifest).parent / "tasks.json").read_text())
    pool = set(TokenCache.open(art.train_cache).doc_ids)
    assert manifest["tasks"] and set(tasks) == set(manifest["tasks"])
    for task in tasks.values():
        for split in task.values():
            assert not {e["doc_id"] for e in split} & pool
    # the suite the stage built (the pool checked by the held-out ids it holds) is the one the set of every
    # pool id gives, from the held-out documents in the stage's order (per domain, val then test)
    held = json.loads(next((tmp_path / "splits").glob("*.json")).read_text())["assignment"]["eval"]
    rows = [i for domain in sorted(held) for name in ("val", "test") for i in held[domain][name]]
    docs = datasets.load_from_disk(str(Path(art.corpus_manifest).parent / "documents")).select(rows).to_list()
    suite = DownstreamSuite(min_per_label=2, passage_chars=300, span_chars=60)
    whole_tasks, whole_manifest = build_suite(docs, pool, suite)
    assert whole_manifest["hash"] == manifest["hash"]
    assert json.loads(json.dumps([whole_tasks, whole_manifest])) == [tasks, manifest]  # tuples: JSON lists


def test_the_pool_finds_only_its_own_ids_among_the_held_out(prepared: Prepared) -> None:
    corpus = _Corpus(Path(prepared.artifacts.corpus_manifest).parent)
    ids = corpus.documents["doc_id"]
    pool = TrainingPool(corpus.documents, corpus.path / "documents", np.array([1, 4, 7], np.int64), "h")
    assert pool.doc_ids_among({ids[0], ids[4], ids[7], "nowhere"}) == {ids[4], ids[7]}
    assert TrainingPool(corpus.documents, corpus.path, None, "h").doc_ids_among({ids[0], "x"}) == {ids[0]}
    with pytest.raises(ValueError, match="overlap the training pool"):
        build_suite([{"doc_id": ids[4], "domain": "d", "text": "t", "meta": "{}"}],
                    pool.doc_ids_among({ids[4]}), DownstreamSuite())  # fmt: skip
