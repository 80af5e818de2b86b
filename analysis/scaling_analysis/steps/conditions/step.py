"""The condition step of a study analysis: everything a domain / mixture / quality axis adds to fit.json.

Why one step: ``study.analyze_frame`` runs ``step_conditions`` once (``STEP``, first in
``steps.STUDY_STEPS``); it finds the conditions (swept axes other than size and seed), fits per-condition
curves and the joint effective-data law, ranks conditions across sizes (decision accuracy, with a bootstrap
over seeds), measures each pair's difference against the seed noise (signal-to-noise), builds the domain
matrix, compares mixtures with their parts, fits the data mixing law and reads what the pool transforms
removed. A plain size study has no conditions: every field is ``{"skipped": ...}`` and the report shows none
of these sections.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from ...engine import UnfittableError
from ..base import Step, StepResult, StudyContext
from . import plots as cplot
from .decision import decision_accuracy
from .effective import EffectiveDataFit, effective_data_fields, fit_effective_data, multiplier_rows
from .labels import Conditions, find_conditions, mean_loss_table, with_condition
from .mixing import mixing_law_analysis
from .pool_quality import pool_transform_fields
from .sections import condition_sections, console_lines
from .snr import condition_snr
from .transfer import WEIGHTS_AXIS, domain_matrix, mixtures_vs_parts, weights_of

#: fit.json fields this step fills and what each holds (rendered into the docs by `make docs`)
FIELDS = {
    "conditions": "condition study (swept axes besides size and seed; `condition_study`): {axes, levels "
    "(labels such as `literature=0.5,code=0.5`, `q=0.3`, `fraction=0.25 filter=c4`), reference (k = 1: the "
    "none/clean/q=1 condition, else the first), reference_reason, x, table: [{condition, size, mean, std, "
    "n}], plot}; {skipped: reason} for a plain size study (as every condition field below)",
    "effective_data": "joint fit L = E + B·(k_c·U)^(−β) with E, B, β shared: {formula, reference, shared "
    "{E, B, beta: {value, interval}}, multipliers: [{condition, k, interval, reference, n_sizes, n_runs, "
    "sentence}] (one token of the condition is worth k reference tokens; bootstrap intervals resample runs "
    "within each condition), n_points, objective, metrics, warnings, bootstrap, per_condition_fits (own "
    "saturating fit where a condition has 3+ sizes), per_condition_skipped, plot}",
    "decision_accuracy": "DataDecide-style: {x, target_size (the largest), n_conditions, seeds, "
    "several_seeds, rows: [{<x>, accuracy (share of condition pairs ranked by mean loss as at the target "
    "size), n_pairs, n_seeds, seed_std, per_seed_accuracy [min, max] (each seed's runs alone), "
    "per_seed_std, min_gap, accuracy_interval [lo, hi] (bootstrap percentile interval; null when skipped)}], "
    "trusted_from (smallest size from which every size ranks all pairs right), bootstrap {n_resamples, seed, "
    "confidence, resampled (runs within each condition × size cell, the target size's too)} or {skipped: "
    "reason} (one run per cell, or no resamples), plot}",
    "condition_snr": "signal-to-noise per comparison (Heineman et al. 2025): {x, threshold (2), target_size, "
    "n_conditions, sizes: [{<x>, n_pairs, n_measured, median_snr, share_resolved (share of pairs with SNR "
    ">= threshold), min_snr, weakest_pair [a, b]}], pairs: [{<x>, a, b, better (lower mean loss; null on a "
    "tie), signal (|mean_a − mean_b|), noise (sqrt(s_a²/n_a + s_b²/n_b), s the seed std of a cell), snr "
    "(null when the noise is 0), n_a, n_b, same_order_as_target (null at the target size)}]} over the "
    "pairs whose two cells both hold 2+ runs; {skipped: `no seed repeats: SNR not measured`} without them",
    "domain_transfer": "single-domain runs: {x, sizes, train_domains, eval_domains, matrices {size: {train: "
    "{eval: mean test loss}}}, transfer: [{train, eval, gaps {size: L(eval|train) − L(eval|eval)}, "
    "gap_small, gap_large, relative_change}], plot}",
    "mixtures": "each mixture against its single-domain parts at the same size: {x, rows: [{mixture, size, "
    "eval (a domain or mean), measured, interpolated (Σ w_j·L_j), best_part, best_part_loss, "
    "gain_over_interpolation}]}",
    "mixing_law": "data mixing law (Ye et al. 2024) L_i(r) = c_i + k_i·exp(Σ_j t_ij·r_j), t of the last "
    "train domain fixed at 0: {train_domains, eval_domains, sizes: [{U, n_mixtures, laws {eval: {c, k, t, "
    "rmse, n_mixtures}}, best_mixture, predicted_mean_loss, leave_one_out {rows: [{weights, predicted, "
    "measured, abs_rel_error}], mape, max_are} (each mixture predicted by the law fitted to the others)}], "
    "proposal {study, weights (2 decimals, sum 1), unique_tokens, predicted {eval: loss, mean}, command, "
    "fitted_run_ids}, file (`mixing_law.json`), "
    "validation: [{run_id, weights, U, predicted, measured}] (runs on an earlier proposal, never fitted), "
    "skipped_sizes, plot}",
    "pool_transforms": "per condition: {conditions: {label: {run_id, transforms: [{group, name, input_docs, "
    "output_docs, removed {reason: count}, marked}], quality: {planted, steps {group:name: {planted, "
    "removed, true_positives, precision, recall, f1, recall_by_kind}}, combined}}}} from the records and "
    "pool manifests",
}
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


def _figure(step: StepResult, out: Path, name: str, make: Callable[[Path], Any]) -> None:
    """Write one condition figure; the fit.json field it illustrates names it."""
    step.figure(name, out / PLOT_FILES[name], make, fit_field=PLOT_FIELD[name])


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


def _effective(table: pd.DataFrame, conds: Conditions, x: str, ctx: StudyContext, step: StepResult) -> Any:
    """The joint effective-data fit, or None with the reason recorded."""
    try:
        result = fit_effective_data(
            table, conds, x=x, n_resamples=ctx.n_resamples, seed=ctx.seed, n_jobs=ctx.n_jobs
        )
    except (UnfittableError, ValueError, RuntimeError) as exc:
        step.fields["effective_data"] = {"skipped": str(exc)}
        step.failed["effective_data"] = str(exc)
        return None
    step.fields["effective_data"] = effective_data_fields(result)
    return result


def _mixing(df: pd.DataFrame, out: Path, step: StepResult) -> None:
    """Mixtures against parts and the mixing law (only for a weights axis); mixing_law.json when fitted."""
    step.fields["mixtures"] = mixtures_vs_parts(df, x="U") if "U" in df else {"skipped": "no U column"}
    if "U" not in df:
        step.fields["mixing_law"] = {"skipped": "no U column"}
        return
    mixing = mixing_law_analysis(df, out, _study_name(df, out))
    step.fields["mixing_law"] = mixing
    if "file" in mixing:
        step.files["mixing_law"] = out / mixing["file"]
        measured = df.assign(_weights=df[WEIGHTS_AXIS].map(weights_of))
        _figure(step, out, "mixing_law", lambda p: cplot.mixing_plot(mixing, measured, p))
    elif WEIGHTS_AXIS in df and "skipped" in mixing and "train_domains" in mixing:
        step.failed["mixing_law"] = mixing["skipped"]


def _figures(
    out: Path, table: pd.DataFrame, conds: Conditions, eff: EffectiveDataFit | None, s: StepResult
) -> None:
    _figure(
        s, out, "condition_curves", lambda p: cplot.condition_curves(table, conds.levels, conds.axes, eff, p)
    )
    if eff is not None:
        rows = multiplier_rows(eff)
        _figure(s, out, "effective_data_k", lambda p: cplot.multiplier_plot(rows, conds.reference, p))
    decision = s.fields["decision_accuracy"]
    if "rows" in decision:
        _figure(s, out, "decision_accuracy", lambda p: cplot.decision_plot(decision, p))
    matrix = s.fields["domain_transfer"]
    if "matrices" in matrix:
        _figure(s, out, "domain_matrix", lambda p: cplot.domain_matrix_plot(matrix, p))


def step_conditions(ctx: StudyContext) -> StepResult:
    """Every condition result: curves, effective data, decision accuracy, transfer, mixing, pool removals."""
    df, out = ctx.df, ctx.out
    conds = find_conditions(df)
    if conds is None:
        return StepResult.skip("conditions", FIELDS, NO_CONDITIONS)
    x = "U" if "U" in df else ctx.x
    table = with_condition(df, conds)
    step = StepResult("conditions", {"conditions": _conditions_fields(table, conds, x)})
    eff = _effective(table, conds, x, ctx, step)
    step.fields["decision_accuracy"] = decision_accuracy(
        table, x=x, n_resamples=ctx.n_resamples, seed=ctx.seed
    )
    step.fields["condition_snr"] = condition_snr(table, x=x)
    step.fields["domain_transfer"] = domain_matrix(df, x=x)
    _mixing(df, out, step)
    source = Path(ctx.source) if ctx.source else None
    labels = (
        dict(zip(table["run_id"].astype(str), table["condition"], strict=True)) if "run_id" in table else {}
    )
    files = ctx.scan.files if ctx.scan is not None else None  # the study's records, read once
    step.fields["pool_transforms"] = pool_transform_fields(source, labels, files)
    _figures(out, table, conds, eff, step)
    return step


STEP = Step("conditions", FIELDS, run=step_conditions, sections=condition_sections, console=console_lines)
