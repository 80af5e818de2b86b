"""``fit.json``: every field documented, built from the study's step results.

Why a module of its own: fit.json is the contract between the analysis and everything that reads it (the
report, the README table, other people's scripts), so its fields and their meaning live next to the code that
fills them, and a test keeps ``FIT_JSON_FIELDS`` and the written keys in sync.
"""

from __future__ import annotations

import datetime as _dt
import math
from collections.abc import Sequence
from importlib import metadata
from typing import Any

import pandas as pd

from . import plot
from .data import preprocessing_of
from .jsonutil import json_safe

#: Every top-level field of ``fit.json`` and what it holds (rendered into the README).
FIT_JSON_FIELDS: dict[str, str] = {
    "law": "name of the fitted law (a key of `scaling_analysis.laws.LAWS`)",
    "formula": "the law's formula, e.g. `L(D) = E + B·D^(−β)`",
    "variables": "law variable -> run-table column; a data-size study maps the law's D to `U` (unique "
    "tokens), "
    "since its runs train many epochs and tokens seen are not the scaling variable",
    "variables_reason": "why the variables were mapped that way (empty when given explicitly or identity)",
    "loss_metric": "which record loss is `loss` (`test_loss`, `best_val_loss`, `final_val_loss`), or the "
    "table column",
    "params": "fitted parameters at full float precision (never rounded)",
    "fixed": "parameters held fixed during the fit (name -> value)",
    "confidence": "confidence level of every interval (0.95)",
    "intervals": "bootstrap percentile intervals {name: [lo, hi]} for every parameter and derived quantity; "
    "empty when the bootstrap was skipped",
    "std_errors": "bootstrap standard errors {name: se}; empty when the bootstrap was skipped",
    "objective": "summed Huber loss of log(predicted) − log(observed) at the optimum (what the fit "
    "minimises)",
    "huber_delta": "Huber δ of the objective (1e-3, as Hoffmann et al. 2022)",
    "n_points": "runs in the fit",
    "metrics": "in-sample fit quality: r2, r2_log, rmse, rmse_log, mape, max_are, mean_log_residual",
    "diagnostics": "optimiser health: grad_norm (at the optimum), frac_starts_at_optimum, n_starts, "
    "converged, "
    "warnings (plain-language: boundary solutions, weak identification, too few points, rugged landscape, "
    "bootstrap intervals that exclude the estimate, repeated cells ...) and their stable flags",
    "bootstrap": "{n_resamples, seed, confidence, n_failed} of the run-level bootstrap, or {skipped: reason}",
    "holdout": "held-out extrapolation: "
    "{by, rule, x, threshold, n_train, n_test, mape, max_are, points: [{run_id, <x>, "
    "observed, predicted, "
    "abs_rel_error}], fit_params}: the law fitted on the smaller sizes predicts the largest; "
    "or {skipped: reason}",
    "comparison": "law comparison on held-out error: "
    "{candidates, excluded {law: reason}, table (one row per law), "
    "chosen, reason}, or {skipped: reason}",
    "derived": "{name: {value, interval, description}}: predictions beyond the data (loss at 2x and 10x the "
    "largest size) and law-specific quantities (e.g. Chinchilla's a = β/(α+β)), with bootstrap CIs",
    "scaling_check": "{x, spearman_rho, spearman_p, exponents {name: value}, exponent_intervals, decreasing, "
    "looks_like_scaling, identified, "
    "sentence}: whether loss falls with data and the fitted exponent is positive; "
    "identified is False when there are fewer distinct sizes than free parameters (verdict: inconclusive)",
    "summary": "study summary: study, x, n_runs, n_failed, failed_run_ids, n_unreadable (record files that "
    "could not be read), n_sizes, sizes, seeds, runs_per_size, x_range, "
    "has_stop_info (whether the table says which runs converged), "
    "orders_of_magnitude, D/epochs/N/loss ranges, total_wall_time_s, n_non_converged",
    "excluded_runs": "every run record not fitted, with why: [{kind (`failed` or `unreadable`), path (the "
    "record file relative to the study dir), run_id, axes (null for an unreadable file), reason (a failed "
    "run's one-line `error`; for a corrupt or half-written file what reading it raised), previous_attempts "
    "(earlier failed attempts kept beside it as `record.attempt-<k>.json`)}]; each is also warned about; "
    "empty for a table",
    "non_converged": "runs that hit the token cap before early stopping: "
    "[{run_id, <x>, seed, loss, stop_reason}]",
    "preprocessing": "every rule applied before fitting (source, loss metric, N definition, column mapping, "
    "exclusions, collapsed sweeps, derived columns), in order",
    "dropped": "every preprocessing step that dropped rows: "
    "[{rule, n_dropped, rows: [{row (0-based row of the "
    "source table) and/or run_id, column, value}]}] (at most 100 rows listed per step)",
    "forced": "why the data cannot identify the law, when it was fitted anyway (`force=True`, `--force`); "
    "empty otherwise",
    "repeated_cells": "{cells, n_cells, n_repeated_cells, max_rows_per_cell, explained_by_seeds, "
    "swept_columns}: design points holding several rows; a warning shows the collapse that would fix an "
    "uncollapsed sweep",
    "sensitivity": "{quantities, rows: [{variant, n_rows, <quantity>...}]}: the key exponents and "
    "predictions "
    "refitted with each exclusion rule off (drop-highest, exclude query) and without non-converged runs; "
    "or {skipped: reason}",
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
    "size), n_pairs, n_seeds, seed_std, per_seed_accuracy [min, max], min_gap}], trusted_from (smallest "
    "size from which every size ranks all pairs right), plot}",
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
    "cutoff_scan": "the held-out check from each lower cutoff (`scaling_analysis.cutoff`; one-variable fits "
    "without conditions, 5+ sizes): {x, held_out, target (0.03), rows: [{cutoff, n_fit_sizes, predicted, "
    "observed, rel_error}], first_within_target (the smallest cutoff predicting the largest size within the "
    "target, or null)}; or {skipped}",
    "regimes": "per run of a Chinchilla-type fit (`scaling_analysis.regimes`): {runs: [{run_id, N, D, "
    "model_term A/N^α, data_term B/D^β, regime (data-limited | model-limited: the larger term), term_ratio, "
    "N_over_N_opt (N against the compute-optimal N at the run's own 6ND)}], counts, columns {N, D}}; or "
    "{skipped}",
    "lr_rule": "best learning rate per model size and its rule (`scaling_analysis.lr_rule`; a study "
    "sweeping optim.lr at 2+ sizes): {cells: [{N (non-embedding), U, grid, val_loss, grid_best, best "
    "(parabola-refined in log lr), at_grid_edge}], rule {coefficient, exponent, exponent_interval (95% t, "
    "3+ sizes), reference_params, source} of lr*(N) = coefficient·(N/reference_params)^exponent, leaf "
    "(lr_rule.yaml: the Hydra leaf for conf/lr_rule/fitted.yaml), plot}; or {skipped}",
    "downstream": "downstream tasks against U (`scaling_analysis.downstream`): {tasks: [{task, mode "
    "(probe | finetune | zeroshot | pseudo), objective, sizes: [{U, accuracy, macro_f1, loss, chance, "
    "n_test, half_width (binomial 95%), at_chance}], at_chance_everywhere, error_power_law {alpha, A, "
    "alpha_interval (bootstrap 95%)} of (1 − acc)/(1 − chance) = A·U^(−α), two_step {k, L0, held_out_U, "
    "predicted_loss, predicted_accuracy, measured_accuracy, abs_error} (U → test loss → sigmoid accuracy, "
    "fitted without the largest U), saturated_at (smallest U reaching 90% of the largest gain over chance), "
    "still_rising}], saturates_first {task, mode, objective, saturated_at}, at_chance (tasks at chance at "
    "every size), objective_comparison [{task, mode, U, clm, mlm, mlm_minus_clm}], plot}; {skipped} without "
    "downstream results",
    "skipped": "{step: reason} for every analysis step that did not run",
    "n_resamples": "bootstrap resamples requested",
    "seed": "bootstrap random seed",
    "created_at": "UTC ISO-8601 time of the analysis",
    "source": "the study directory or table the runs came from",
    "outputs": "files written next to fit.json (runs.parquet, report.md, PNG plots: scaling_curve, "
    "residuals, "
    "law_comparison; domains when runs have per-domain test losses; isoflop for laws of N and D; for "
    "condition studies condition_curves, effective_data_k, decision_accuracy, domain_matrix, mixing_law and "
    "the proposal `mixing_law.json`)",
    "versions": "versions of datascale, numpy, scipy and pandas used",
}


def study_summary(
    df: pd.DataFrame, x: str, *, failed: Sequence[str] = (), n_unreadable: int = 0
) -> dict[str, Any]:
    """Runs, sizes, seeds, ranges and cost of the fitted runs (for the report and fit.json)."""
    xs = df[x].to_numpy(dtype=float)
    sizes = sorted(set(xs.tolist()))

    def rng(col: str) -> list[float] | None:
        if col not in df or df[col].isna().all():
            return None
        return [float(df[col].min()), float(df[col].max())]

    out: dict[str, Any] = {
        "study": ", ".join(sorted(set(df["study"].astype(str)))) if "study" in df else None,
        "x": x,
        "n_runs": len(df),
        "n_failed": len(failed),
        "failed_run_ids": list(failed),
        "n_unreadable": int(n_unreadable),
        "n_sizes": len(sizes),
        "sizes": sizes,
        "seeds": sorted({int(s) for s in df["seed"]}) if "seed" in df and df["seed"].notna().all() else None,
        "runs_per_size": len(df) / max(len(sizes), 1),
        "x_range": [min(sizes), max(sizes)] if sizes else None,
        "orders_of_magnitude": math.log10(max(sizes) / min(sizes)) if sizes and min(sizes) > 0 else None,
        "D_range": rng("D") if x != "D" else None,
        "epochs_range": rng("epochs"),
        "N_range": rng("N") if x != "N" else None,
        "loss_range": rng("loss"),
        "loss_metric": preprocessing_of(df).get("loss_metric", "loss"),
        "total_wall_time_s": float(df["wall_time_s"].sum()) if "wall_time_s" in df else None,
        "n_non_converged": len(plot.non_converged(df)),
        "has_stop_info": bool({"converged", "stop_reason"} & set(df.columns)),
    }
    return json_safe(out)


def holdout_points(ho: Any, x: str) -> list[dict[str, Any]]:
    """One dict per held-out row: run id (or source row), x, the hold-out column, observed, predicted, ARE."""
    test = plot.holdout_test_rows(ho)
    if test is None:
        return []
    pc = plot.prediction_column(test)
    obs = next((c for c in ("observed", "loss", "y") if c in test), None)
    rows = []
    for _, r in test.iterrows():
        o = float(r[obs]) if obs else math.nan
        pr = float(r[pc])
        rows.append(
            {
                "run_id": str(r["run_id"]) if "run_id" in test else None,
                **({"row": int(r["source_row"])} if "source_row" in test else {}),
                x: float(r[x]) if x in test else None,
                **({ho.by: float(r[ho.by])} if ho.by != x and ho.by in test else {}),
                "observed": o,
                "predicted": pr,
                "abs_rel_error": abs(pr - o) / o if o else None,
            }
        )
    return rows


def versions() -> dict[str, str]:
    out = {}
    for pkg in ("datascale", "numpy", "scipy", "pandas"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "unknown"
    return out


def now_utc() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def fit_fields(
    fit: Any,
    variables_reason: str,
    pre: dict[str, Any],
    confidence: float,
    extra_warnings: Sequence[tuple[str, str]] = (),
) -> dict[str, Any]:
    """The fitted law, parameters, quality and optimiser health (plus study-level warnings)."""
    bound = plot.law_of(fit)
    flags = sorted({*fit.diagnostics.get("flags", []), *(f for f, _ in extra_warnings)})
    return {
        "law": fit.law,
        "formula": fit.formula or bound.formula,
        "variables": dict(fit.variables),
        "variables_reason": variables_reason,
        "loss_metric": pre.get("loss_metric", "loss"),
        "params": dict(fit.params),
        "fixed": dict(fit.fixed),
        "confidence": confidence,
        "objective": fit.objective,
        "huber_delta": fit.huber_delta,
        "n_points": fit.n_points,
        "metrics": fit.to_dict().get("metrics", {}),
        "diagnostics": {
            "grad_norm": fit.grad_norm,
            "frac_starts_at_optimum": fit.frac_starts_at_optimum,
            "n_starts": fit.n_starts,
            "converged": fit.converged,
            "warnings": [*fit.warnings, *(m for _, m in extra_warnings)],
            "flags": flags,
        },
    }


def bootstrap_fields(boot: Any, skipped: str | None) -> dict[str, Any]:
    """Intervals, standard errors and the bootstrap's settings (or why it was skipped)."""
    if boot is None:
        return {"intervals": {}, "std_errors": {}, "bootstrap": {"skipped": skipped or "not run"}}
    return {
        "intervals": {k: [float(a), float(b)] for k, (a, b) in boot.intervals.items()},
        "std_errors": {k: float(v) for k, v in boot.std_errors.items()},
        "bootstrap": {
            "n_resamples": boot.n_resamples,
            "seed": boot.seed,
            "confidence": boot.confidence,
            "n_failed": boot.n_failed,
        },
    }


def holdout_fields(holdout: Any, x: str, skipped: str | None, rule: str = "") -> dict[str, Any]:
    """The held-out check's numbers and points (or why it was skipped)."""
    if holdout is None:
        return {"skipped": skipped or "not run"}
    return {
        "by": holdout.by,
        "rule": rule,
        "x": x,
        "threshold": holdout.threshold,
        "n_train": holdout.n_train,
        "n_test": holdout.n_test,
        "mape": holdout.mape,
        "max_are": holdout.max_are,
        "points": holdout_points(holdout, x),
        "fit_params": dict(holdout.fit.params),
    }


def comparison_fields(
    comparison: Any, usable: Sequence[str], excluded: dict[str, str], skipped: str | None
) -> dict[str, Any]:
    """The law comparison's table, choice and reason (or why it was skipped)."""
    if comparison is None:
        return {"skipped": skipped or "not run", "excluded": excluded}
    table = comparison.table
    return {
        "candidates": list(usable),
        "excluded": excluded,
        "table": table.to_dict(orient="records") if isinstance(table, pd.DataFrame) else table,
        "chosen": comparison.chosen,
        "reason": comparison.reason,
    }


def dropped_fields(pre: dict[str, Any]) -> list[dict[str, Any]]:
    """Every preprocessing step that dropped rows: rule, count and the listed rows (row/run id, column,
    value)."""
    out = []
    for step in pre.get("steps") or []:
        if step.get("n_dropped"):
            rows = step.get("rows") or [{"run_id": r} for r in step.get("run_ids", [])]
            out.append({"rule": step.get("rule"), "n_dropped": step["n_dropped"], "rows": rows})
    return out


def non_converged_rows(df: pd.DataFrame, x: str) -> list[dict[str, Any]]:
    """Runs that hit the token cap before early stopping, one dict each."""
    return [
        {
            "run_id": str(r.get("run_id", i)),
            x: float(r[x]),
            "seed": int(r["seed"]) if "seed" in r and pd.notna(r["seed"]) else None,
            "loss": float(r["loss"]),
            "stop_reason": str(r.get("stop_reason", "")),
        }
        for i, r in plot.non_converged(df).iterrows()
    ]


def check_fields(fit_json: dict[str, Any]) -> dict[str, Any]:
    """``fit_json`` made strict JSON, after checking its keys against ``FIT_JSON_FIELDS``."""
    fit_json = json_safe(fit_json)
    missing = set(FIT_JSON_FIELDS) ^ set(fit_json)
    if missing:
        raise AssertionError(f"FIT_JSON_FIELDS out of sync with fit.json: {sorted(missing)}")
    return {k: fit_json[k] for k in FIT_JSON_FIELDS}
