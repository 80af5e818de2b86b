"""A small offline downstream suite built from held-out documents (Hydra ``downstream`` group).

Every example comes from the documents of the held-out validation and test sets, never from the training pool
(checked at document level), so pretraining never saw it. Per domain two tasks:

* ``classify/<domain>``: which label a passage has, where the label comes from the data itself: a play's genre
  (literature), the standard-library package of a source file (code), the library a docstring documents
  (science), the package a README describes (web). Labels with too few passages are dropped; the most
  frequent ``max_classes`` are kept.
* ``continue/<domain>``: multiple choice, the true next span of a passage against ``n_distractors`` spans of
  other documents of the same domain (chance ``1 / (n_distractors + 1)``); scored zero-shot by likelihood.

Train / validation / test splits are by document (a document's passages stay in one split), seeded, fixed per
study and recorded with content hashes; chance and majority-class rates are in the manifest.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Container, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from datascale.config_errors import require, require_in_range, require_positive_int
from datascale.storage import canonical_json_hash

SPLITS = ("train", "val", "test")
#: Where each built-in domain keeps its label in a document's ``meta``.
LABEL_FIELDS = {"literature": "genre", "code": "path", "science": "package", "web": "package"}


@dataclass
class DownstreamSuite:
    """Hydra leaf ``conf/downstream/suite.yaml``: how the tasks are cut from the held-out documents."""

    passage_chars: int = 600
    """Target passage length in characters (cut at line ends)."""
    span_chars: int = 120
    """Length of the continuation a multiple-choice item asks for."""
    n_distractors: int = 3
    """Wrong continuations per item (chance = 1 / (n + 1))."""
    max_classes: int = 6
    """The most frequent labels kept per classification task."""
    min_per_label: int = 6
    """Labels with fewer passages are dropped."""
    split_fractions: tuple[float, float] = (0.6, 0.2)
    """Train and validation shares of the documents (the rest is test)."""
    seed: int = 0
    """Split, distractor and order seed."""
    enabled: bool = True
    """False (the ``none`` leaf): no suite is built and runs are not evaluated downstream."""

    def __post_init__(self) -> None:
        for name in ("passage_chars", "span_chars", "n_distractors", "max_classes", "min_per_label"):
            require_positive_int(name, getattr(self, name))
        require(
            self.span_chars < self.passage_chars, "span_chars", self.span_chars, "must be < passage_chars"
        )
        self.split_fractions = tuple(float(f) for f in self.split_fractions)  # type: ignore[assignment]
        require(
            len(self.split_fractions) == 2, "split_fractions", self.split_fractions, "must be two numbers"
        )
        for f in self.split_fractions:
            require_in_range("split_fractions", f, 0.05, 0.9)
        require(
            sum(self.split_fractions) < 0.95,
            "split_fractions",
            self.split_fractions,
            "must leave a test split",
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def passages(text: str, target_chars: int) -> list[str]:
    """Consecutive pieces of about ``target_chars`` characters, cut at line ends (a short tail is dropped)."""
    out, current = [], ""
    for line in text.splitlines(keepends=True):
        current += line
        if len(current) >= target_chars:
            out.append(current.strip("\n"))
            current = ""
    if len(current) >= target_chars // 2:
        out.append(current.strip("\n"))
    return [p for p in out if p.strip()]


def label_of(domain: str, meta: Mapping[str, Any]) -> str | None:
    """The label a held-out document carries for its domain's classification task (None: no label)."""
    value = meta.get(LABEL_FIELDS.get(domain, ""))
    if not isinstance(value, str) or not value:
        return None
    if domain == "code":  # stdlib path -> top-level package or module
        return value.split("/")[0].removesuffix(".py")
    return value


def _split_of(doc_id: str, seed: int, fractions: Sequence[float]) -> str:
    u = int.from_bytes(hashlib.sha256(f"{seed}:{doc_id}".encode()).digest()[:8], "little") / 2**64
    return "train" if u < fractions[0] else "val" if u < fractions[0] + fractions[1] else "test"


def _classification(
    docs: Sequence[Mapping[str, Any]], suite: DownstreamSuite
) -> dict[str, list[dict]] | None:
    items = []
    for doc in docs:
        label = label_of(doc["domain"], json.loads(doc["meta"] or "{}"))
        split = _split_of(doc["doc_id"], suite.seed, suite.split_fractions)
        if label is not None:
            items += [{"doc_id": doc["doc_id"], "text": p, "label": label, "split": split}
                      for p in passages(doc["text"], suite.passage_chars)]  # fmt: skip
    counts = Counter(i["label"] for i in items)
    kept = [lab for lab, n in counts.most_common(suite.max_classes) if n >= suite.min_per_label]
    items = [i for i in items if i["label"] in kept]
    by_split = {s: [i for i in items if i["split"] == s] for s in SPLITS}
    if len(kept) < 2 or not all(by_split.values()):
        return None
    return by_split


def _continuations(docs: Sequence[Mapping[str, Any]], suite: DownstreamSuite) -> dict[str, list[dict]] | None:
    rng = np.random.default_rng(suite.seed)
    pieces = [(d["doc_id"], p) for d in docs for p in passages(d["text"], suite.passage_chars)]
    pieces = [(i, p) for i, p in pieces if len(p) > suite.span_chars * 2]
    if len(pieces) <= suite.n_distractors:
        return None
    spans = [p[-suite.span_chars :] for _, p in pieces]
    items = []
    for k, (doc_id, text) in enumerate(pieces):
        others = [j for j in range(len(pieces)) if pieces[j][0] != doc_id]
        if len(others) < suite.n_distractors:
            continue
        picks = rng.choice(others, size=suite.n_distractors, replace=False)
        options = [spans[k], *(spans[j] for j in picks)]
        order = rng.permutation(len(options))
        items.append({
            "doc_id": doc_id, "context": text[: -suite.span_chars], "options": [options[i] for i in order],
            "answer": int(np.flatnonzero(order == 0)[0]),
            "split": _split_of(doc_id, suite.seed, suite.split_fractions),
        })  # fmt: skip
    by_split = {s: [i for i in items if i["split"] == s] for s in SPLITS}
    return by_split if all(by_split.values()) else None


def _task_manifest(kind: str, by_split: Mapping[str, list[dict]], n_options: int) -> dict[str, Any]:
    manifest: dict[str, Any] = {
        "kind": kind,
        "sizes": {s: len(v) for s, v in by_split.items()},
        "hashes": {s: canonical_json_hash(v) for s, v in by_split.items()},
        "documents": {s: len({i["doc_id"] for i in v}) for s, v in by_split.items()},
    }
    if kind == "classify":
        labels = sorted({i["label"] for v in by_split.values() for i in v})
        test = Counter(i["label"] for i in by_split["test"])
        manifest |= {
            "labels": labels,
            "chance": 1 / len(labels),
            "majority": max(test.values()) / len(by_split["test"]),
        }
    else:
        manifest |= {"n_options": n_options, "chance": 1 / n_options}
    return manifest


def build_suite(
    heldout: Sequence[Mapping[str, Any]], pool_doc_ids: Container[str], suite: DownstreamSuite
) -> tuple[dict[str, dict[str, list[dict]]], dict[str, Any]]:
    """(tasks: name -> split -> examples, manifest) from the held-out documents; never the pool's.

    ``pool_doc_ids`` only answers ``in`` for the held-out ids: the data stage passes the few of them it found
    in the pool (``TrainingPool.doc_ids_among``), not a set of every pool id."""
    leaked = sorted({d["doc_id"] for d in heldout if d["doc_id"] in pool_doc_ids})
    if leaked:
        raise ValueError(f"downstream documents overlap the training pool: {leaked[:3]}")
    tasks: dict[str, dict[str, list[dict]]] = {}
    manifest: dict[str, Any] = {"suite": suite.to_dict(), "tasks": {}}
    for domain in sorted({d["domain"] for d in heldout}):
        docs = [d for d in heldout if d["domain"] == domain]
        for kind, build in (("classify", _classification), ("continue", _continuations)):
            by_split = build(docs, suite)
            if by_split is not None:
                name = f"{kind}/{domain}"
                tasks[name] = by_split
                manifest["tasks"][name] = _task_manifest(kind, by_split, suite.n_distractors + 1)
    manifest["hash"] = canonical_json_hash(manifest["tasks"])
    return tasks, manifest
