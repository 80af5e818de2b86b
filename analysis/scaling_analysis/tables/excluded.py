"""Runs a study analysis does not fit, and why: failed runs and unreadable (corrupt, half-written) records.

``scan_study`` reads a study directory once: the readable records (with their files) feed the run table, and
every record left out is warned about and listed (fit.json ``excluded_runs``, the report's "Excluded runs"),
never silently dropped.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datascale.records import CorruptRecordError, RunRecord, previous_attempts, scan_record_files

log = logging.getLogger(__name__)

KINDS = ("failed", "unreadable")


@dataclass
class StudyScan:
    """One read of a study directory: the readable records with their files, and the runs left out."""

    files: list[tuple[Path, RunRecord]] = field(default_factory=list)
    excluded: list[dict[str, Any]] = field(default_factory=list)

    @property
    def records(self) -> list[RunRecord]:
        """Every readable record (finished and failed), sorted by study and run id."""
        return [r for _, r in self.files]

    @property
    def failed_run_ids(self) -> list[str]:
        """Run ids of the failed records."""
        return [str(e["run_id"]) for e in self.excluded if e["kind"] == "failed"]


def _relative(path: Path, root: Path) -> str:
    """``path`` relative to ``root`` when it lies below it, else as given."""
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def _n_attempts(run_dir: Path) -> int:
    """Earlier failed attempts kept beside a run's record (counted by file if one of them is unreadable)."""
    try:
        return len(previous_attempts(run_dir))
    except CorruptRecordError:
        return len(list(run_dir.glob("record.attempt-*.json")))


def one_line(text: str | None, default: str = "no reason recorded") -> str:
    """The first non-empty line of ``text`` (a record's ``error``), or ``default``."""
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[0] if lines else default


def failed_entry(root: Path, path: Path, record: RunRecord) -> dict[str, Any]:
    """The ``excluded_runs`` entry of a failed run: run id, axes, its error and earlier attempts."""
    return {
        "kind": "failed",
        "path": _relative(path, root),
        "run_id": record.run_id,
        "axes": dict(record.axes),
        "reason": one_line(record.error),
        "previous_attempts": _n_attempts(path.parent),
    }


def unreadable_entry(root: Path, path: Path, why: str) -> dict[str, Any]:
    """The ``excluded_runs`` entry of a record file that cannot be read back (truncated, not JSON, ...)."""
    return {
        "kind": "unreadable",
        "path": _relative(path, root),
        "run_id": None,
        "axes": None,
        "reason": one_line(why.removeprefix(f"{path}: "), "unreadable record"),
        "previous_attempts": _n_attempts(path.parent),
    }


def scan_study(study_dir: Path | str) -> StudyScan:
    """Read every record below ``study_dir`` once; warn about (and list) each failed or unreadable one."""
    root = Path(study_dir)
    found, corrupt = scan_record_files(root)
    excluded = [failed_entry(root, p, r) for p, r in found if r.status == "failed"]
    excluded += [unreadable_entry(root, p, why) for p, why in corrupt]
    for entry in excluded:
        log.warning("excluded from the analysis: %s", describe(entry))
    return StudyScan(found, excluded)


def describe(entry: Mapping[str, Any]) -> str:
    """One line for the console and the log: what was left out and why."""
    who = f"{entry['kind']} run {entry['run_id']}" if entry.get("run_id") else f"{entry['kind']} record"
    attempts = entry.get("previous_attempts") or 0
    tail = f" ({attempts} earlier attempt(s))" if attempts else ""
    return f"{who} {entry['path']}: {entry['reason']}{tail}"


def excluded_fields(scan: StudyScan | None, failed_run_ids: Sequence[str] = ()) -> list[dict[str, Any]]:
    """fit.json ``excluded_runs``: the scan's list, or bare entries for failed run ids given without one."""
    if scan is not None:
        return [dict(e) for e in scan.excluded]
    return [
        {
            "kind": "failed",
            "path": None,
            "run_id": str(rid),
            "axes": None,
            "reason": "failed (its record was not read by this analysis)",
            "previous_attempts": 0,
        }
        for rid in failed_run_ids
    ]
