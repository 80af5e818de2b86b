"""How well a dedup / filter / select step removes the noise a ``degrade`` step planted.

The degradation report lists every corrupted or added document (``marked``: doc id -> kind); a later step's
report lists what it removed. Precision: the share of removals that were planted noise. Recall: the share of
planted documents removed, overall and per kind. These go into the analysis report next to the loss numbers.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Union

if TYPE_CHECKING:  # the analysis package uses precision_recall and must not import `datasets` for it
    from datascale.data.transforms import TransformReport

ReportLike = Union["TransformReport", Mapping[str, Any]]


def _report(report: ReportLike) -> TransformReport:
    from datascale.data.transforms import TransformReport

    return report if isinstance(report, TransformReport) else TransformReport.from_dict(report)


def _ratio(num: int, den: int) -> float | None:
    return num / den if den else None


def removal_precision_recall(
    degradation: ReportLike, removals: ReportLike | Sequence[ReportLike]
) -> dict[str, Any]:
    """Precision / recall / F1 of the union of ``removals``' removed documents against ``degradation.marked``.

    Reports may be :class:`TransformReport` objects or their ``to_dict()`` form (as in a pool manifest).
    Precision is None when nothing was removed, recall when nothing was planted.
    """
    from datascale.data.transforms import TransformReport

    planted = _report(degradation).marked
    steps = [removals] if isinstance(removals, TransformReport | Mapping) else list(removals)
    removed: set[str] = set()
    for step in steps:
        removed.update(_report(step).removed)
    return precision_recall(planted, removed)


def precision_recall(planted: Mapping[str, str], removed: set[str]) -> dict[str, Any]:
    """Precision (removals that were planted), recall (planted that were removed), F1 and recall per kind of
    ``planted`` (doc id -> kind) against the ``removed`` doc ids (also used by the analysis package)."""
    hits = removed & set(planted)
    precision, recall = _ratio(len(hits), len(removed)), _ratio(len(hits), len(planted))
    f1 = 2 * precision * recall / (precision + recall) if precision and recall else None
    planted_by_kind = Counter(planted.values())
    hit_by_kind = Counter(planted[d] for d in hits)
    return {
        "planted": len(planted),
        "removed": len(removed),
        "true_positives": len(hits),
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "recall_by_kind": {k: _ratio(hit_by_kind[k], n) for k, n in sorted(planted_by_kind.items())},
        "planted_by_kind": dict(sorted(planted_by_kind.items())),
    }
