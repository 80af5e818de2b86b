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

from ..engine import FitResult
from ..engine.compare import NOT_USED, holdout_test_rows, prediction_column
from ..engine.jsonutil import json_safe
from ..render.text import pct
from ..steps import step_fields
from ..tables.runs import non_converged, preprocessing_of

#: The spine's fields of ``fit.json`` (every study has them), before the study steps' fields.
CORE_FIELDS: dict[str, str] = {
    "law": "name of the fitted law (a key of `scaling_analysis.engine.laws.LAWS`)",
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
    "bootstrap": "{n_resamples, seed, confidence, n_failed, resampled, within_cell_scale} of the run-level "
    "bootstrap (resampled: what one draw takes: `runs within cells` when every design cell holds >= 3 runs, "
    "else `rows`), or {skipped: reason}",
    "holdout": "held-out extrapolation: "
    "{by, rule, x, threshold, n_train, n_test, mape, max_are, points: [{run_id, <x>, "
    "observed, predicted, "
    "abs_rel_error}], fit_params}: the law fitted on the smaller sizes predicts the largest; "
    "or {skipped: reason}",
    "seed_noise": "the run-to-run noise of repeated cells: {cells, rows: [{<cell columns>, n, mean, std, "
    "rel_spread}] (every design cell; std NaN for one run), floor (pooled relative std over cells with "
    "repeats), median_rel_spread, max_rel_spread, n_cells, n_cells_with_repeats, n_runs, held_out_mape "
    "(the headline law's held-out error, or null), held_out_vs_floor (the sentence)}, or {skipped: reason} "
    "when no cell holds two runs",
    "tournament": "the law tournament decided in advance (one-variable studies): {rule (the rule in words), "
    "by, candidates, n_fitting_rows, n_held_out_rows (removed before the choice), reference_loss (L0 of "
    "envelope_U_fixed, ln V from the records, or null), tie_abs, chosen, reason, headline {law, source "
    "(`tournament`, `named` or `default`), why}, laws: [{law, formula, eligible, error, n_params, params, "
    "fixed, rule_score (mean |log error| over the shared rolling origins), own_origins_score, aicc, "
    "degenerate, chosen, `held_out (not used for the choice)` {n_held_out, mape, bias, max_are, male}}], "
    "origins: [{law, origin, train_max, predicted_sizes, male, shared}]}, or {skipped: reason, candidates, "
    "headline}",
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
}
#: The fields after the study steps' fields: what did not run, how, when and from what.
TAIL_FIELDS: dict[str, str] = {
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
#: Every top-level field of ``fit.json`` and what it holds (rendered into the docs by ``make docs``): the
#: spine's, each study step's (``steps.STUDY_STEPS``, documented in the step's module), then the tail.
FIT_JSON_FIELDS: dict[str, str] = {**CORE_FIELDS, **step_fields(), **TAIL_FIELDS}


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
        "n_non_converged": len(non_converged(df)),
        "has_stop_info": bool({"converged", "stop_reason"} & set(df.columns)),
    }
    return json_safe(out)


def holdout_points(ho: Any, x: str) -> list[dict[str, Any]]:
    """One dict per held-out row: run id (or source row), x, the hold-out column, observed, predicted, ARE."""
    test = holdout_test_rows(ho)
    if test is None:
        return []
    pc = prediction_column(test)
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
    fit: FitResult,
    variables_reason: str,
    pre: dict[str, Any],
    confidence: float,
    extra_warnings: Sequence[tuple[str, str]] = (),
) -> dict[str, Any]:
    """The fitted law, parameters, quality and optimiser health (plus study-level warnings)."""
    bound = fit.bound_law
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
            "resampled": getattr(boot, "resampled", "rows"),
            "within_cell_scale": getattr(boot, "within_cell_scale", 1.0),
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


#: The key of each law's held-out errors in fit.json's ``tournament``: they were computed after the choice.
HELD_OUT_KEY = f"held_out ({NOT_USED})"


def _tournament_laws(res: Any) -> list[dict[str, Any]]:
    """One entry per law: the rule's table row, the full fit's parameters, its held-out errors (labelled)."""
    held = res.held_out.set_index("law") if len(res.held_out) else None
    laws = []
    for row in res.table.to_dict(orient="records"):
        fit = res.fits.get(row["law"])
        entry = {**row, "params": dict(fit.params) if fit else {}, "fixed": dict(fit.fixed) if fit else {}}
        errors = None
        if held is not None and row["law"] in held.index:
            errors = held.loc[row["law"], ["mape", "bias", "max_are", "male"]].astype(float).to_dict()
            errors = {"n_held_out": int(held.loc[row["law"], "n_held_out"]), **errors}
        laws.append({**entry, HELD_OUT_KEY: errors})
    return laws


def tournament_fields(tstep: Any, skipped: str | None) -> dict[str, Any]:
    """The rule, every law's fit and score, the choice, and held-out errors marked as not used for it."""
    res = tstep.outcome.value
    base = {"candidates": list(tstep.candidates), "headline": dict(tstep.headline)}
    if res is None:
        return {"skipped": skipped or "not run", **base}
    return {
        "rule": res.rule,
        "by": res.by,
        **base,
        "n_fitting_rows": tstep.n_fitting,
        "n_held_out_rows": tstep.n_held_out,
        "reference_loss": tstep.reference_loss,
        **({"reference_note": tstep.reference_note} if tstep.reference_note else {}),
        "tie_abs": res.tie_abs,
        "chosen": res.chosen,
        "reason": res.reason,
        "laws": _tournament_laws(res),
        "origins": res.origins.to_dict(orient="records"),
    }


def seed_noise_fields(noise: dict[str, Any], holdout: Any) -> dict[str, Any]:
    """The seed-noise rows and floor, with the headline law's held-out error beside the floor."""
    if not noise or "skipped" in noise:
        return dict(noise) or {"skipped": "not run"}
    mape = getattr(holdout, "mape", None)
    beside = (
        f"held-out error {pct(mape)} vs seed floor {pct(noise['floor'])}"
        if mape is not None
        else f"seed floor {pct(noise['floor'])} (no held-out error: the held-out check did not run)"
    )
    return {**noise, "held_out_mape": mape, "held_out_vs_floor": beside}


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
        for i, r in non_converged(df).iterrows()
    ]


def check_fields(fit_json: dict[str, Any]) -> dict[str, Any]:
    """``fit_json`` made strict JSON, after checking its keys against ``FIT_JSON_FIELDS``."""
    fit_json = json_safe(fit_json)
    missing = set(FIT_JSON_FIELDS) ^ set(fit_json)
    if missing:
        raise AssertionError(f"FIT_JSON_FIELDS out of sync with fit.json: {sorted(missing)}")
    return {k: fit_json[k] for k in FIT_JSON_FIELDS}
