"""The one contract of a study step: what it reads (``StudyContext``), what it returns (``StepResult``) and
how it is listed (``Step``).

Why one contract: every analysed study kind (condition axes, downstream tasks, a learning-rate sweep,
regimes of a joint fit, the cutoff scan) adds fit.json fields, figures, files and report sections. With one
result type and one ordered list (``steps.STUDY_STEPS``), ``study.analyze_frame`` runs them, fit.json
collects their fields and report.md renders their sections without knowing any step by name.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from datascale.records import RunRecord

from ..engine import FitResult, Law
from ..tables.excluded import StudyScan
from ..tables.runs import record_protocol

#: what a failing figure may raise; the failure is recorded in fit.json ``skipped``, never fatal
FIGURE_ERRORS = (ValueError, KeyError, RuntimeError, IndexError)


@dataclass
class StudyContext:
    """What a step may read: the run table, where to write, the main fit and the study's options."""

    df: pd.DataFrame
    out: Path
    fit: FitResult
    law: Law
    x: str
    mapping: dict[str, str]
    design_cols: list[str]
    n_free: int
    #: keyword arguments of every secondary fit (variables, huber_delta, n_jobs=1, starts, fixed)
    fit_kwargs: dict[str, Any] = field(default_factory=dict)
    n_resamples: int = 1000
    seed: int = 0
    n_jobs: int = -1
    source: str = ""
    scan: StudyScan | None = None
    #: results of the steps that ran before this one, by step name
    done: dict[str, StepResult] = field(default_factory=dict)

    def protocol_files(self) -> list[tuple[Path, RunRecord]]:
        """The study's (record path, record) pairs, failed runs too, of the protocol the run table kept
        (``tables.runs.keep_latest_protocol``): runs of an older protocol in the folder are no part of it."""
        files = self.scan.files if self.scan is not None else []
        if "protocol" not in self.df:
            return list(files)
        kept = set(self.df["protocol"])
        return [(p, r) for p, r in files if record_protocol(r) in kept]


@dataclass
class StepResult:
    """What one step produced: fit.json fields, figures and files written, and what did not run.

    ``skipped`` says why the whole step did not run (its fields then say so too); ``failed`` holds the parts
    that did not run although the step did (a figure, a sub-fit), which land in fit.json ``skipped``.
    """

    name: str
    fields: dict[str, Any]
    plots: dict[str, Path] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)
    skipped: str | None = None
    failed: dict[str, str] = field(default_factory=dict)

    @classmethod
    def skip(cls, name: str, fields: Iterable[str], reason: str) -> StepResult:
        """The step did not run: every field it fills says why."""
        return cls(name, {f: {"skipped": reason} for f in fields}, skipped=reason)

    @property
    def outputs(self) -> list[str]:
        """File names written next to fit.json: figures first, then other files."""
        return [*(p.name for p in self.plots.values()), *(p.name for p in self.files.values())]

    def figure(
        self,
        name: str,
        path: Path,
        make: Callable[[Path], Any],
        *,
        fit_field: str | None = None,
        label: str = "",
    ) -> None:
        """Write one figure with ``make(path)``; a failure is recorded as ``plot <label>`` (never fatal), a
        success names the file in the fit.json field ``fit_field`` it illustrates (its ``plot`` key)."""
        try:
            make(path)
        except FIGURE_ERRORS as exc:
            self.failed[f"plot {label or name}"] = f"failed: {exc}"
            return
        self.plots[name] = path
        target = self.fields.get(fit_field) if fit_field else None
        if isinstance(target, dict):
            target["plot"] = path.name


def no_lines(_fit_json: Mapping[str, Any]) -> list[str]:
    """A step without console lines."""
    return []


@dataclass(frozen=True)
class Step:
    """One analysed study kind: the fit.json fields it fills (with their documentation, rendered into the
    docs), how it runs, its report sections and console lines (both rendered from fit.json, so a report
    can be rebuilt from fit.json alone)."""

    name: str
    fields: Mapping[str, str]
    run: Callable[[StudyContext], StepResult]
    sections: Callable[[Mapping[str, Any]], list[str]]
    console: Callable[[Mapping[str, Any]], list[str]] = no_lines
