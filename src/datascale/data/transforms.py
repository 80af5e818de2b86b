"""Where document filters and transforms plug into the data stage: the training pool, after the split.

Data stage order: corpus -> held-out split -> **pool transforms** -> tokenizer -> token cache -> subsets.
Transforms act on the training pool only, so that every quality condition of a study is evaluated on the same
held-out sets; the tokenizer is trained on the untransformed pool, so that every condition shares one
tokenizer (losses in nats per token stay comparable). Each transform is a Hydra leaf of its own group
(``degrade``, ``dedup``, ``filter``, ``select``), applied in :data:`TRANSFORM_GROUPS` order: planted noise
first, so that the later steps' recall of it can be measured. What each one removed or changed, and why, is
kept in a :class:`TransformReport` that the pool manifest records.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, runtime_checkable

import datasets

#: Config groups of pool transforms, in the order they are applied.
TRANSFORM_GROUPS: tuple[str, ...] = ("degrade", "dedup", "filter", "select")


@dataclass
class TransformReport:
    """What one transform did to the pool (JSON; stored in the pool manifest and summarised in the record)."""

    name: str
    """The transform's name (``gopher``, ``minhash``, ``typos`` ...)."""
    params: dict[str, Any]
    """Its settings, as in its fingerprint."""
    input_docs: int
    """Documents that went in."""
    output_docs: int
    """Documents that came out."""
    removed: dict[str, str] = field(default_factory=dict)
    """doc_id -> reason, for every document the transform dropped."""
    marked: dict[str, str] = field(default_factory=dict)
    """doc_id -> what was done to it, for every document the transform changed or added (kept in the pool)."""
    stats: dict[str, Any] = field(default_factory=dict)
    """Any further numbers (e.g. score thresholds, clusters found)."""

    @property
    def counts(self) -> dict[str, int]:
        """Removed documents per reason."""
        return dict(Counter(self.removed.values()))

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "counts": self.counts}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TransformReport:
        return cls(**{k: v for k, v in data.items() if k != "counts"})


@runtime_checkable
class PoolTransform(Protocol):
    """One leaf of a transform group. ``apply`` must be deterministic given its settings (a leaf that draws
    random numbers has a ``seed`` field) and the input documents."""

    name: str

    def fingerprint(self) -> dict[str, Any]:
        """Everything that decides the output (settings, version, library versions): part of the cache key."""
        ...

    def apply(self, docs: datasets.Dataset) -> tuple[datasets.Dataset, TransformReport]:
        """Transformed documents (same schema, :data:`datascale.data.documents.DOCUMENT_FEATURES`) +
        report."""
        ...


@dataclass
class Identity:
    """The ``none`` leaf of every transform group: the pool unchanged."""

    name: str = "none"

    def fingerprint(self) -> dict[str, Any]:
        return {"name": self.name}

    def apply(self, docs: datasets.Dataset) -> tuple[datasets.Dataset, TransformReport]:
        return docs, TransformReport(self.name, {}, len(docs), len(docs))
