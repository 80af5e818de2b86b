"""What each pool transform (degrade, dedup, filter, select) did, and how well removals found planted noise.

Why: a filter, noise or dedup study is only interpretable next to what its transforms removed and whether they
removed the right documents. Counts per reason come from the run records (``pool_transforms``); precision and
recall need the document ids, which the pool manifest holds (``data_artifacts.json`` -> ``pool_manifest``:
``reports: [{group, report: {removed: {doc_id: reason}, marked: {doc_id: kind}}}]``); the scores are the
data stage's own (``datascale.data.quality.evaluation.precision_recall``, which imports nothing heavy).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from datascale.data.quality.evaluation import precision_recall
from datascale.records import RunRecord, scan_record_files

PLANTING_GROUPS = ("degrade",)
REMOVAL_GROUPS = ("dedup", "filter", "select")


def manifest_reports(run_dir: Path) -> list[dict[str, Any]] | None:
    """The pool manifest's full transform reports for one run, or None when it cannot be read."""
    try:
        artifacts = json.loads((run_dir / "data_artifacts.json").read_text())
        path = artifacts.get("pool_manifest") or ""
        return list(json.loads(Path(path).read_text()).get("reports") or []) if path else None
    except (OSError, ValueError, AttributeError):
        return None


def removal_quality(reports: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Per removal step and combined: precision/recall against the documents the degrade step marked."""
    planted: dict[str, str] = {}
    for r in reports:
        if r.get("group") in PLANTING_GROUPS:
            planted.update((r.get("report") or {}).get("marked") or {})
    if not planted:
        return {"skipped": "no planted (marked) documents in the pool manifest"}
    steps, union = {}, set()
    for r in reports:
        if r.get("group") not in REMOVAL_GROUPS:
            continue
        removed = set(((r.get("report") or {}).get("removed") or {}).keys())
        union |= removed
        steps[f"{r['group']}:{(r.get('report') or {}).get('name', '')}"] = precision_recall(planted, removed)
    if not steps:
        return {"planted": len(planted), "skipped": "no removal step (dedup/filter/select) after the noise"}
    return {"planted": len(planted), "steps": steps, "combined": precision_recall(planted, union)}


def _summaries(record: Any) -> list[dict[str, Any]]:
    keep = ("group", "name", "input_docs", "output_docs", "removed", "marked")
    return [{k: t.get(k) for k in keep} for t in (record.pool_transforms or [])]


def pool_transform_fields(
    study_dir: Path | str | None,
    labels: Mapping[str, str],
    files: Sequence[tuple[Path, RunRecord]] | None = None,
) -> dict[str, Any]:
    """fit.json ``pool_transforms``: per condition (``labels``: run id -> condition), what was removed.

    One run per condition is used (the pool does not depend on the size). ``files``: the study's (path,
    record) pairs already read (``excluded.scan_study``); None reads the readable ones here (unreadable
    records are the analysis's excluded runs). ``{"skipped": reason}`` when the source is not a study
    directory or no run transformed its pool.
    """
    if study_dir is None or not Path(study_dir).is_dir():
        return {"skipped": "not a study directory (no run records)"}
    if files is None:
        files = scan_record_files(Path(study_dir))[0]
    out: dict[str, Any] = {}
    for path, record in sorted(files, key=lambda pr: pr[0]):
        label = labels.get(record.run_id)
        if label is None or label in out or not record.pool_transforms:
            continue
        entry: dict[str, Any] = {"run_id": record.run_id, "transforms": _summaries(record)}
        reports = manifest_reports(path.parent)
        entry["quality"] = (
            removal_quality(reports) if reports is not None else {"skipped": "pool manifest not readable"}
        )
        out[label] = entry
    if not out:
        return {"skipped": "no run transformed its training pool"}
    return {"conditions": out}
