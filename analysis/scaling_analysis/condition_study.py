"""The condition step of a study analysis: everything a domain / mixture / quality axis adds to fit.json.

Why one step: ``study.analyze_frame`` calls ``step_conditions`` once; it finds the conditions (swept axes
other than size and seed), fits per-condition curves and the joint effective-data law, ranks conditions
across sizes (decision accuracy), builds the domain matrix, compares mixtures with their parts, fits the
data mixing law and reads what the pool transforms removed. A plain size study has no conditions: every field
is ``{"skipped": ...}`` and the report shows none of these sections.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from . import condition_plots as cplot
from .conditions import Conditions, find_conditions, mean_loss_table, with_condition
from .decision import decision_accuracy
from .effective import EffectiveDataFit, effective_data_fields, fit_effective_data, multiplier_rows
from .mixing import mixing_law_analysis
from .pool_quality import pool_transform_fields
from .preflight import UnfittableError
from .transfer import WEIGHTS_AXIS, domain_matrix, mixtures_vs_parts, weights_of

#: fit.json fields this step fills (documented in ``fitjson.FIT_JSON_FIELDS``)
CONDITION_FIELDS = (
    "conditions",
    "effective_data",
    "decision_accuracy",
    "domain_transfer",
    "mixtures",
    "mixing_law",
    "pool_transforms",
)
PLOT_FILES = {
    "condition_curves": "condition_curves.png",
    "effective_data_k": "effective_data_k.png",
    "decision_accuracy": "decision_accuracy.png",
    "domain_matrix": "domain_matrix.png",
    "mixing_law": "mixing_law.png",
}
#: the fit.json field that names each figure (its ``plot`` key)
PLOT_FIELD = {
    "condition_curves": "conditions",
    "effective_data_k": "effective_data",
    "decision_accuracy": "decision_accuracy",
    "domain_matrix": "domain_transfer",
    "mixing_law": "mixing_law",
}
NO_CONDITIONS = "no swept axis besides size and seed: a plain size study"


@dataclass
class ConditionStep:
    """fit.json fields, figures written, extra output files and reasons for steps that did not run."""

    fields: dict[str, Any]
    plots: dict[str, Path] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)

    @property
    def outputs(self) -> list[str]:
        return [*(p.name for p in self.plots.values()), *self.files]

    def figure(self, out: Path, name: str, make: Callable[[Path], Any]) -> None:
        """Write one figure; a failure is recorded (never fatal) like ``study.Figures``."""
        path = out / PLOT_FILES[name]
        try:
            make(path)
        except (ValueError, KeyError, RuntimeError, IndexError) as exc:
            self.skipped[f"plot {name}"] = f"failed: {exc}"
            return
        self.plots[name] = path
        target = self.fields.get(PLOT_FIELD[name])
        if isinstance(target, dict):
            target["plot"] = path.name


def _study_name(df: pd.DataFrame, out: Path) -> str:
    names = sorted(set(df["study"].astype(str))) if "study" in df else []
    return names[0] if len(names) == 1 else out.name


def _conditions_fields(table: pd.DataFrame, conds: Conditions, x: str) -> dict[str, Any]:
    means = mean_loss_table(table, x)
    return {
        "axes": conds.axes,
        "levels": conds.levels,
        "reference": conds.reference,
        "reference_reason": conds.reference_reason,
        "x": x,
        "table": means.rename(columns={x: "size"}).to_dict("records"),
    }


def _effective(table: pd.DataFrame, conds: Conditions, x: str, opts: Any, step: ConditionStep) -> Any:
    """The joint effective-data fit, or None with the reason recorded."""
    try:
        result = fit_effective_data(
            table, conds, x=x, n_resamples=opts.n_resamples, seed=opts.seed, n_jobs=opts.n_jobs
        )
    except (UnfittableError, ValueError, RuntimeError) as exc:
        step.fields["effective_data"] = {"skipped": str(exc)}
        step.skipped["effective_data"] = str(exc)
        return None
    step.fields["effective_data"] = effective_data_fields(result)
    return result


def _mixing(df: pd.DataFrame, out: Path, step: ConditionStep) -> None:
    """Mixtures against parts and the mixing law (only for a weights axis); mixing_law.json when fitted."""
    step.fields["mixtures"] = mixtures_vs_parts(df, x="U") if "U" in df else {"skipped": "no U column"}
    if "U" not in df:
        step.fields["mixing_law"] = {"skipped": "no U column"}
        return
    mixing = mixing_law_analysis(df, out, _study_name(df, out))
    step.fields["mixing_law"] = mixing
    if "file" in mixing:
        step.files.append(mixing["file"])
        measured = df.assign(_weights=df[WEIGHTS_AXIS].map(weights_of))
        step.figure(out, "mixing_law", lambda p: cplot.mixing_plot(mixing, measured, p))
    elif WEIGHTS_AXIS in df and "skipped" in mixing and "train_domains" in mixing:
        step.skipped["mixing_law"] = mixing["skipped"]


def _figures(
    out: Path, table: pd.DataFrame, conds: Conditions, eff: EffectiveDataFit | None, s: ConditionStep
):
    s.figure(
        out, "condition_curves", lambda p: cplot.condition_curves(table, conds.levels, conds.axes, eff, p)
    )
    if eff is not None:
        rows = multiplier_rows(eff)
        s.figure(out, "effective_data_k", lambda p: cplot.multiplier_plot(rows, conds.reference, p))
    decision = s.fields["decision_accuracy"]
    if "rows" in decision:
        s.figure(out, "decision_accuracy", lambda p: cplot.decision_plot(decision, p))
    matrix = s.fields["domain_transfer"]
    if "matrices" in matrix:
        s.figure(out, "domain_matrix", lambda p: cplot.domain_matrix_plot(matrix, p))


def step_conditions(df: pd.DataFrame, out: Path, *, x: str, opts: Any) -> ConditionStep:
    """Every condition result of a study (``opts``: n_resamples, seed, n_jobs, source of ``StudyOptions``)."""
    conds = find_conditions(df)
    if conds is None:
        return ConditionStep({name: {"skipped": NO_CONDITIONS} for name in CONDITION_FIELDS})
    x = "U" if "U" in df else x
    table = with_condition(df, conds)
    step = ConditionStep({"conditions": _conditions_fields(table, conds, x)})
    eff = _effective(table, conds, x, opts, step)
    step.fields["decision_accuracy"] = decision_accuracy(table, x=x)
    step.fields["domain_transfer"] = domain_matrix(df, x=x)
    _mixing(df, out, step)
    source = Path(opts.source) if getattr(opts, "source", "") else None
    labels = (
        dict(zip(table["run_id"].astype(str), table["condition"], strict=True)) if "run_id" in table else {}
    )
    scan = getattr(opts, "scan", None)  # the study's records, read once by analyze_study
    files = scan.files if scan is not None else None
    step.fields["pool_transforms"] = pool_transform_fields(source, labels, files)
    _figures(out, table, conds, eff, step)
    return step
