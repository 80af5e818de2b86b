"""One call from a study directory (or a results table) to ``runs.parquet``, ``fit.json``, plots and ``report.md``.

The pipeline: load the tidy run table -> fit the law -> bootstrap CIs (params and predictions beyond the data)
-> held-out extrapolation (largest sizes held out) -> law comparison on held-out error -> scaling check -> plots
-> fit.json -> report. A step the data cannot support (too few distinct sizes for the law's parameters) is
skipped with its reason recorded in ``fit.json["skipped"]`` and the report; the four outputs are always written.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
from collections.abc import Callable, Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from datascale.records import find_records

from . import plot
from .data import _jsonable, domain_long, exclude, load_records, load_table, preprocessing_of, save_runs
from .data import drop_highest as drop_highest_rows
from .laws import Law, get_law
from .report import write_report

DEFAULT_CANDIDATES = ("saturating_power_D", "broken_power_D", "kaplan_D")
CONFIDENCE = 0.95
EXTRAPOLATION_FACTORS = (2.0, 10.0)
PLOT_FILES = {
    "scaling_curve": "scaling_curve.png",
    "residuals": "residuals.png",
    "law_comparison": "law_comparison.png",
    "isoflop": "isoflop.png",
    "domains": "domains.png",
}

#: Every top-level field of ``fit.json`` and what it holds (rendered into the README).
FIT_JSON_FIELDS: dict[str, str] = {
    "law": "name of the fitted law (a key of `scaling_analysis.laws.LAWS`)",
    "formula": "the law's formula, e.g. `L(D) = E + B·D^(−β)`",
    "variables": "law variable -> run-table column; a data-size study maps the law's D to `U` (unique tokens), "
    "since its runs train many epochs and tokens seen are not the scaling variable",
    "variables_reason": "why the variables were mapped that way (empty when given explicitly or identity)",
    "loss_metric": "which record loss is `loss` (`test_loss`, `best_val_loss`, `final_val_loss`), or the table column",
    "params": "fitted parameters at full float precision (never rounded)",
    "fixed": "parameters held fixed during the fit (name -> value)",
    "confidence": "confidence level of every interval (0.95)",
    "intervals": "bootstrap percentile intervals {name: [lo, hi]} for every parameter and derived quantity; "
    "empty when the bootstrap was skipped",
    "std_errors": "bootstrap standard errors {name: se}; empty when the bootstrap was skipped",
    "objective": "summed Huber loss of log(predicted) − log(observed) at the optimum (what the fit minimises)",
    "huber_delta": "Huber δ of the objective (1e-3, as Hoffmann et al. 2022)",
    "n_points": "runs in the fit",
    "metrics": "in-sample fit quality: r2, r2_log, rmse, rmse_log, mape, max_are, mean_log_residual",
    "diagnostics": "optimiser health: grad_norm (at the optimum), frac_starts_at_optimum, n_starts, converged, "
    "warnings (plain-language: boundary solutions, weak identification, too few points ...)",
    "bootstrap": "{n_resamples, seed, confidence, n_failed} of the run-level bootstrap, or {skipped: reason}",
    "holdout": "held-out extrapolation: {by, x, threshold, n_train, n_test, mape, max_are, points: [{run_id, <x>, "
    "observed, predicted, abs_rel_error}], fit_params}: the law fitted on the smaller sizes predicts the largest; "
    "or {skipped: reason}",
    "comparison": "law comparison on held-out error: {candidates, excluded {law: reason}, table (one row per law), "
    "chosen, reason}, or {skipped: reason}",
    "derived": "{name: {value, interval, description}}: predictions beyond the data (loss at 2x and 10x the "
    "largest size) and law-specific quantities (e.g. Chinchilla's a = β/(α+β)), with bootstrap CIs",
    "scaling_check": "{x, spearman_rho, spearman_p, exponents {name: value}, exponent_intervals, decreasing, "
    "looks_like_scaling, identified, sentence}: whether loss falls with data and the fitted exponent is positive; "
    "identified is False when there are fewer distinct sizes than free parameters (verdict: inconclusive)",
    "summary": "study summary: study, x, n_runs, n_failed, n_sizes, sizes, seeds, runs_per_size, x_range, "
    "orders_of_magnitude, D/epochs/N/loss ranges, total_wall_time_s, n_non_converged",
    "non_converged": "runs that hit the token cap before early stopping: [{run_id, <x>, seed, loss, stop_reason}]",
    "preprocessing": "every rule applied before fitting (source, loss metric, N definition, column mapping, "
    "exclusions, collapsed sweeps, derived columns), in order",
    "skipped": "{step: reason} for every analysis step that did not run",
    "n_resamples": "bootstrap resamples requested",
    "seed": "bootstrap random seed",
    "created_at": "UTC ISO-8601 time of the analysis",
    "source": "the study directory or table the runs came from",
    "outputs": "files written next to fit.json (runs.parquet, report.md, PNG plots: scaling_curve, residuals, "
    "law_comparison; domains when runs have per-domain test losses; isoflop for laws of N and D)",
    "versions": "versions of datascale, numpy, scipy and pandas used",
}


# --------------------------------------------------------------------------------------------- helpers


def study_variables(law: Law, df: pd.DataFrame) -> tuple[dict[str, str], str]:
    """Law variable -> column, and why: D -> U for a data-size study, identity otherwise.

    A data-size study varies the subset size U (or sweeps a ``*unique_tokens`` axis) and trains each run for
    many epochs, so tokens seen D are not the scaling variable; a law in D alone (no N, no U variable) is
    therefore fitted against U.
    """
    mapping = {v: v for v in law.variables}
    swept_u = "U" in df and (
        df["U"].nunique() > 1 or any(str(c).endswith("unique_tokens") for c in df.columns)
    )
    if "D" in law.variables and "U" not in law.variables and "N" not in law.variables and swept_u:
        mapping["D"] = "U"
        return (
            mapping,
            "data-size study: the law's D is the unique-token count U (runs repeat data for many epochs)",
        )
    return mapping, ""


def n_distinct(df: pd.DataFrame, columns: Sequence[str]) -> int:
    """Distinct combinations of the fitted columns: the real number of design points, seeds aside."""
    return int(df[list(columns)].drop_duplicates().shape[0])


def study_summary(df: pd.DataFrame, x: str, *, failed: Sequence[str] = ()) -> dict[str, Any]:
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
        "n_sizes": len(sizes),
        "sizes": sizes,
        "seeds": sorted({int(s) for s in df["seed"]}) if "seed" in df and df["seed"].notna().all() else None,
        "runs_per_size": len(df) / max(len(sizes), 1),
        "x_range": [min(sizes), max(sizes)] if sizes else None,
        "orders_of_magnitude": math.log10(max(sizes) / min(sizes)) if sizes and min(sizes) > 0 else None,
        "D_range": rng("D") if x != "D" else None,
        "epochs_range": rng("epochs"),
        "N_range": rng("N"),
        "loss_range": rng("loss"),
        "loss_metric": preprocessing_of(df).get("loss_metric", "loss"),
        "total_wall_time_s": float(df["wall_time_s"].sum()) if "wall_time_s" in df else None,
        "n_non_converged": len(plot.non_converged(df)),
    }
    return _jsonable(out)


def scaling_check(
    df: pd.DataFrame,
    fit: Any,
    x: str,
    intervals: Mapping[str, Sequence[float]] | None = None,
    *,
    loss: str = "loss",
    identified: bool = True,
) -> dict[str, Any]:
    """Does loss fall with data? Spearman ρ of loss vs ``x`` < 0, the fitted curve decreasing, exponents > 0.

    Returns the numbers and one plain sentence; when the answer is no, the sentence says so and warns against
    extrapolating. ``identified=False`` (fewer design points than free parameters) makes the verdict
    "Inconclusive": the fitted exponent is then arbitrary.
    """
    law = plot.law_of(fit)
    xs, ys = df[x].to_numpy(dtype=float), df[loss].to_numpy(dtype=float)
    if len(set(xs.tolist())) > 1:
        res = stats.spearmanr(xs, ys)
        rho, p = float(res.statistic), float(res.pvalue)
    else:
        rho, p = math.nan, math.nan
    x_var = next((v for v, c in fit.variables.items() if c == x), None)
    decreasing = None
    if x_var is not None and len(law.variables) == 1:
        grid = np.logspace(np.log10(xs.min()), np.log10(xs.max()), 50)
        pred = plot.predict(fit, None, {x_var: grid})
        decreasing = bool(np.all(np.diff(pred) < 0))
    exps = {p_: float(fit.params[p_]) for p_ in law.exponents if p_ in fit.params}
    primary = next(iter(exps), None)
    exp_iv = {k: list(intervals[k]) for k in exps if intervals and k in intervals}
    exp_ok = primary is None or exps[primary] > 0
    looks = bool(np.isfinite(rho) and rho < 0 and exp_ok and decreasing is not False)
    n_sizes = len(set(xs.tolist()))
    parts = []
    if not np.isfinite(rho):
        sentence = f"Cannot tell: all runs share one value of {x}, so there is no curve."
    else:
        parts.append(f"Spearman ρ of loss vs {x} = {rho:+.3f} (p = {p:.2g}, {n_sizes} sizes, {len(xs)} runs)")
        if primary is not None:
            ci = exp_iv.get(primary)
            ci_txt = f", {CONFIDENCE:.0%} CI [{ci[0]:.4g}, {ci[1]:.4g}]" if ci else ""
            parts.append(f"fitted exponent {primary} = {exps[primary]:.4g}{ci_txt}")
        if decreasing is not None:
            parts.append(
                "the fitted curve "
                + ("decreases" if decreasing else "does NOT decrease")
                + " over the data range"
            )
        facts = "; ".join(parts) + "."
        if looks and not identified:
            verdict = (
                f"Inconclusive: loss falls as {x} grows, but {n_sizes} distinct sizes cannot identify the "
                f"{len([p_ for p_ in law.params if p_ not in fit.fixed])} free parameters of {law.name}, so the "
                "fitted exponent is arbitrary; add sizes before calling this a scaling curve. "
            )
        elif looks:
            verdict = f"Yes: loss falls as {x} grows, as a scaling curve should. "
            if primary is not None and primary in exp_iv and exp_iv[primary][0] <= 0:
                verdict += f"But the CI of {primary} includes 0, so the trend is not established. "
            if n_sizes < 4:
                verdict += f"With only {n_sizes} distinct sizes this is a weak check. "
        else:
            verdict = (
                f"No: this does not look like a scaling curve (loss does not fall steadily with {x}). "
                "Check the runs (convergence, token cap, data) before reading anything into the fitted law, "
                "and do not extrapolate it. "
            )
        sentence = verdict + facts
    curvature = loglog_curvature(xs, ys)
    if looks and curvature["shape"] != "straight":
        sentence += " " + curvature["sentence"]
    return _jsonable(
        {
            "x": x,
            "spearman_rho": rho,
            "spearman_p": p,
            "exponents": exps,
            "exponent_intervals": exp_iv,
            "decreasing": decreasing,
            "looks_like_scaling": looks,
            "identified": identified,
            "sentence": sentence,
            "loglog_slopes": {"lower_half": curvature["lower_slope"], "upper_half": curvature["upper_slope"]},
            "shape": curvature["shape"],
        }
    )


def loglog_curvature(xs: np.ndarray, ys: np.ndarray, tolerance: float = 0.25) -> dict[str, Any]:
    """Does the log-log curve steepen or flatten? Slopes of log loss vs log x over the lower and upper half of sizes.

    A curve that flattens bends towards an irreducible loss, as a saturating law expects. One that steepens means
    the smallest sizes sit in the small-data region (Hestness et al. 2017) where loss falls slower than in the
    power-law region, so a law fitted across both under-predicts the gains at larger sizes.
    """
    sizes = np.unique(xs)
    out: dict[str, Any] = {
        "lower_slope": math.nan,
        "upper_slope": math.nan,
        "shape": "unknown",
        "sentence": "",
    }
    if len(sizes) < 4:
        return out
    mean_log_loss = np.array([np.mean(np.log(ys[xs == v])) for v in sizes])
    half = len(sizes) // 2
    lower = float(np.polyfit(np.log(sizes[: half + 1]), mean_log_loss[: half + 1], 1)[0])
    upper = float(np.polyfit(np.log(sizes[half:]), mean_log_loss[half:], 1)[0])
    out.update(lower_slope=lower, upper_slope=upper)
    if lower < 0 and upper < lower * (1 + tolerance):
        out["shape"] = "steepens"
        out["sentence"] = (
            f"The log-log slope steepens from {lower:.3f} over the smaller half of the sizes to {upper:.3f} over "
            "the larger half: the smallest subsets sit in the small-data region (Hestness et al. 2017), so a "
            "single power law fitted across the range under-predicts the gains at larger sizes (see the held-out "
            "error); add larger sizes, or fit only the upper part, before extrapolating."
        )
    elif lower < 0 and upper > lower * (1 - tolerance):
        out["shape"] = "flattens"
        out["sentence"] = (
            f"The log-log slope flattens from {lower:.3f} to {upper:.3f}: the curve bends towards an irreducible "
            "loss, as a saturating law expects."
        )
    else:
        out["shape"] = "straight"
    return out


def _prediction_derived(
    fit: Any, df: pd.DataFrame, x: str
) -> dict[str, tuple[Callable[[Mapping], float], str]]:
    """Loss predicted at 2x and 10x the largest ``x``: the extrapolations a data-scaling study is for."""
    law = plot.law_of(fit)
    x_var = next((v for v, c in fit.variables.items() if c == x), None)
    if x_var is None or len(law.variables) != 1:
        return {}
    xmax = float(df[x].max())
    out = {}
    for k in EXTRAPOLATION_FACTORS:
        target = k * xmax

        def f(params: Mapping[str, float], target: float = target) -> float:
            return float(law.predict(dict(params), {x_var: np.array([target])})[0])

        out[f"loss_at_{k:g}x_max_{x}"] = (f, f"predicted loss at {x} = {target:.4g} ({k:g}x the largest {x})")
    return out


def _law_derived(law: Law, targets: Mapping[str, Any] | None) -> dict[str, tuple[Callable, str]]:
    """Law-specific derived quantities from ``fit.derived_quantities`` (e.g. Chinchilla's a = β/(α+β))."""
    try:
        from .fit import derived_quantities
    except ImportError:
        return {}
    try:
        dq = derived_quantities(law, **dict(targets or {}))
    except (TypeError, ValueError):
        return {}
    out = {}
    for name, fn in (dq or {}).items():
        out[name] = (fn, getattr(fn, "__doc__", None) or name)
    return out


def _holdout_points(ho: Any, x: str) -> list[dict[str, Any]]:
    test = plot.holdout_test_rows(ho)
    if test is None:
        return []
    pc = plot._pred_col(test)
    obs = next((c for c in ("observed", "loss", "y") if c in test), None)
    rows = []
    for _, r in test.iterrows():
        o = float(r[obs]) if obs else math.nan
        pr = float(r[pc])
        rows.append(
            {
                "run_id": str(r["run_id"]) if "run_id" in test else None,
                x: float(r[x]) if x in test else None,
                "observed": o,
                "predicted": pr,
                "abs_rel_error": abs(pr - o) / o if o else None,
            }
        )
    return rows


def _versions() -> dict[str, str]:
    out = {}
    for pkg in ("datascale", "numpy", "scipy", "pandas"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "unknown"
    return out


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


# ------------------------------------------------------------------------------------------------ core


def analyze_frame(
    df: pd.DataFrame,
    out_dir: Path | str,
    *,
    law: str | Law = "saturating_power_D",
    variables: Mapping[str, str] | None = None,
    candidates: Sequence[str] | None = DEFAULT_CANDIDATES,
    n_resamples: int = 1000,
    seed: int = 0,
    n_jobs: int = -1,
    huber_delta: float = 1e-3,
    starts: Any = "grid",
    fixed: Mapping[str, float] | None = None,
    n_holdout_values: int = 1,
    holdout_by: str | None = None,
    derived_targets: Mapping[str, Any] | None = None,
    source: str = "",
    failed_run_ids: Sequence[str] = (),
    title: str | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Fit, bootstrap, hold out, compare, plot and report an already-loaded run table into ``out_dir``.

    Returns ``{"runs", "fit", "bootstrap", "holdout", "comparison", "fit_json", "paths", "report"}``; results
    of skipped steps are ``None`` (their reason is in ``fit_json["skipped"]``).
    """
    from .fit import bootstrap as run_bootstrap
    from .fit import compare_laws, fit_law, holdout_extrapolation

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    law_obj = get_law(law)
    if variables:
        mapping, why = {**{v: v for v in law_obj.variables}, **dict(variables)}, ""
    else:
        mapping, why = study_variables(law_obj, df)
    x = mapping[law_obj.variables[0]]
    if x not in df:
        raise ValueError(
            f"law {law_obj.name!r}: column {x!r} not in the run table (columns: {list(df.columns)})"
        )
    if len(df) == 0:
        raise ValueError(f"{source}: no runs to fit")
    pre = preprocessing_of(df)
    skipped: dict[str, str] = {}
    fit_kwargs = {"variables": mapping, "huber_delta": huber_delta, "n_jobs": 1}
    runs_path = save_runs(df, out / "runs.parquet")

    fit = fit_law(
        law_obj,
        df,
        loss="loss",
        starts=starts,
        fixed=fixed,
        preprocessing=pre,
        **{**fit_kwargs, "n_jobs": n_jobs},
    )
    bound = plot.law_of(fit)
    n_free = bound.n_params - len(fit.fixed)
    design_cols = [c for v, c in mapping.items() if v not in bound.categorical]
    design = n_distinct(df, design_cols)
    design_what = (
        f"distinct {x} values" if len(design_cols) == 1 else f"distinct ({', '.join(design_cols)}) points"
    )

    # ---- bootstrap: parameters and predictions beyond the data
    derived_fns = {**_prediction_derived(fit, df, x), **_law_derived(bound, derived_targets)}
    boot = None
    if n_resamples <= 0:
        skipped["bootstrap"] = f"n_resamples={n_resamples}"
    elif design < n_free:
        skipped["bootstrap"] = (
            f"{design} {design_what} for {n_free} free parameters: the law is not identified, so resampled "
            "fits would only show that"
        )
    else:
        boot = run_bootstrap(
            fit,
            df,
            n_resamples=n_resamples,
            seed=seed,
            confidence=CONFIDENCE,
            derived={k: fn for k, (fn, _doc) in derived_fns.items()},
            n_jobs=n_jobs,
            progress=progress,
        )

    # ---- held-out extrapolation: the largest sizes predicted by a fit on the rest
    holdout = None
    by = holdout_by or x
    if by not in df:
        raise ValueError(f"holdout_by={by!r}: not a column (columns: {list(df.columns)})")
    by_values = np.sort(df[by].unique())
    n_train_sizes = df[x].nunique() - n_holdout_values  # for the one-variable candidates below
    if n_holdout_values < 1 or n_holdout_values >= len(by_values):
        n_train_design = 0
    else:
        n_train_design = n_distinct(df.loc[df[by] < by_values[-n_holdout_values]], design_cols)
    if len(design_cols) != 1 and holdout_by is None:
        skipped["holdout"] = (
            f"law {bound.name!r} has several variables: pass holdout_by (CLI --holdout-by, e.g. C) to say "
            "whose largest values to hold out"
        )
    elif n_train_design < n_free:
        skipped["holdout"] = (
            f"{len(by_values)} distinct {by} values: holding out the largest {n_holdout_values} leaves "
            f"{n_train_design} distinct design points, fewer than the {n_free} free parameters of {bound.name!r}"
        )
    else:
        try:
            holdout = holdout_extrapolation(
                law_obj,
                df,
                by=by,
                n_holdout_values=n_holdout_values,
                starts=starts,
                fixed=fixed,
                **fit_kwargs,
            )
        except (ValueError, RuntimeError) as exc:
            skipped["holdout"] = f"failed: {exc}"

    # ---- law comparison on held-out error
    comparison, excluded = None, {}
    cands = [c for c in (candidates or ())]
    usable = []
    for c in cands:
        cl = get_law(c)
        if len(cl.variables) != 1 or cl.variables[0] not in mapping:
            excluded[c] = f"variables {list(cl.variables)} differ from the fitted law's {list(mapping)}"
        elif n_train_sizes < cl.n_params:
            excluded[c] = (
                f"{cl.n_params} parameters but only {max(n_train_sizes, 0)} distinct {x} values to fit before the held-out ones"
            )
        else:
            usable.append(c)
    if not cands:
        skipped["comparison"] = "no candidate laws given"
    elif len(usable) < 2:
        skipped["comparison"] = (
            f"fewer than 2 candidate laws can be fitted and held out on {df[x].nunique()} distinct {x} values ("
            + "; ".join(f"{k}: {v}" for k, v in excluded.items())
            + ")"
        )
    else:
        try:
            comparison = compare_laws(df, usable, by=x, n_holdout_values=n_holdout_values, **fit_kwargs)
        except (ValueError, RuntimeError) as exc:
            skipped["comparison"] = f"failed: {exc}"

    intervals = {k: [float(a), float(b)] for k, (a, b) in (getattr(boot, "intervals", None) or {}).items()}
    std_errors = {k: float(v) for k, v in (getattr(boot, "std_errors", None) or {}).items()}
    derived: dict[str, Any] = {}
    for name, (fn, doc) in derived_fns.items():
        try:
            value = float(fn(fit.params))
        except (ValueError, ZeroDivisionError, FloatingPointError):
            value = math.nan
        derived[name] = {"value": value, "interval": intervals.get(name), "description": doc}
    check = scaling_check(df, fit, x, intervals, identified=design >= n_free)
    nc = plot.non_converged(df)
    nc_rows = [
        {
            "run_id": str(r.get("run_id", i)),
            x: float(r[x]),
            "seed": int(r["seed"]) if "seed" in r and pd.notna(r["seed"]) else None,
            "loss": float(r["loss"]),
            "stop_reason": str(r.get("stop_reason", "")),
        }
        for i, r in nc.iterrows()
    ]

    # ---- plots
    paths: dict[str, Path] = {"runs": runs_path}
    plots: dict[str, str] = {}

    def _save(name: str, make: Callable[[Path], Any]) -> None:
        p = out / PLOT_FILES[name]
        try:
            make(p)
        except (ValueError, KeyError, RuntimeError) as exc:
            skipped[f"plot {name}"] = f"failed: {exc}"
            return
        paths[name] = p
        plots[name] = p.name

    domain_cols = [c for c in df.columns if c.startswith("test_loss_")]
    if len(domain_cols) > 1 and len(bound.variables) == 1:
        _save(
            "domains",
            lambda p: plot.conditions(domain_long(df), x=x, title="test loss per evaluation domain", path=p),
        )
    multi = len(bound.variables) - len(bound.categorical) > 1
    if multi and {"N", "D"} <= set(bound.variables):
        _save("isoflop", lambda p: plot.isoflop(fit, df=df, path=p))
    _save(
        "scaling_curve", lambda p: plot.scaling_curve(df, fit, bootstrap=boot, holdout=holdout, x=x, path=p)
    )
    _save("residuals", lambda p: plot.residuals(df, fit, holdout=holdout, x=x, path=p))
    if comparison is not None:
        _save("law_comparison", lambda p: plot.law_comparison(df, comparison, x=x, path=p))
    else:
        # still one figure per output name: the runs with the main fit, titled with why nothing was compared
        _save(
            "law_comparison",
            lambda p: plot.scaling_curve(df, fit, x=x, title="law comparison skipped (see report)", path=p),
        )

    holdout_json: dict[str, Any]
    if holdout is not None:
        holdout_json = {
            "by": holdout.by,
            "x": x,
            "threshold": holdout.threshold,
            "n_train": holdout.n_train,
            "n_test": holdout.n_test,
            "mape": holdout.mape,
            "max_are": holdout.max_are,
            "points": _holdout_points(holdout, x),
            "fit_params": dict(holdout.fit.params),
        }
    else:
        holdout_json = {"skipped": skipped.get("holdout", "not run")}
    comparison_json: dict[str, Any]
    if comparison is not None:
        table = comparison.table
        comparison_json = {
            "candidates": usable,
            "excluded": excluded,
            "table": table.to_dict(orient="records") if isinstance(table, pd.DataFrame) else table,
            "chosen": comparison.chosen,
            "reason": comparison.reason,
        }
    else:
        comparison_json = {"skipped": skipped.get("comparison", "not run"), "excluded": excluded}

    fd = fit.to_dict()
    fit_json = {
        "law": fit.law,
        "formula": fit.formula or bound.formula,
        "variables": dict(fit.variables),
        "variables_reason": why,
        "loss_metric": pre.get("loss_metric", "loss"),
        "params": dict(fit.params),
        "fixed": dict(fit.fixed),
        "confidence": CONFIDENCE,
        "intervals": intervals,
        "std_errors": std_errors,
        "objective": fit.objective,
        "huber_delta": fit.huber_delta,
        "n_points": fit.n_points,
        "metrics": fd.get("metrics", {}),
        "diagnostics": {
            "grad_norm": fit.grad_norm,
            "frac_starts_at_optimum": fit.frac_starts_at_optimum,
            "n_starts": fit.n_starts,
            "converged": fit.converged,
            "warnings": list(fit.warnings),
        },
        "bootstrap": (
            {
                "n_resamples": boot.n_resamples,
                "seed": boot.seed,
                "confidence": boot.confidence,
                "n_failed": boot.n_failed,
            }
            if boot is not None
            else {"skipped": skipped.get("bootstrap", "not run")}
        ),
        "holdout": holdout_json,
        "comparison": comparison_json,
        "derived": derived,
        "scaling_check": check,
        "summary": study_summary(df, x, failed=failed_run_ids),
        "non_converged": nc_rows,
        "preprocessing": fit.preprocessing or pre,
        "skipped": skipped,
        "n_resamples": n_resamples,
        "seed": seed,
        "created_at": _now(),
        "source": source,
        "outputs": ["runs.parquet", "fit.json", "report.md", *plots.values()],
        "versions": _versions(),
    }
    fit_json = _jsonable(fit_json)
    missing = set(FIT_JSON_FIELDS) ^ set(fit_json)
    assert not missing, f"FIT_JSON_FIELDS out of sync with fit.json: {sorted(missing)}"
    fit_path = out / "fit.json"
    fit_path.write_text(json.dumps(fit_json, indent=2, allow_nan=False) + "\n")
    paths["fit"] = fit_path
    report_path = write_report(out / "report.md", fit_json, df, plots=plots, title=title)
    paths["report"] = report_path
    return {
        "runs": df,
        "fit": fit,
        "bootstrap": boot,
        "holdout": holdout,
        "comparison": comparison,
        "fit_json": fit_json,
        "paths": paths,
        "report": report_path.read_text(),
    }


def analyze_study(
    study_dir: Path | str,
    *,
    out_dir: Path | str | None = None,
    law: str = "saturating_power_D",
    candidates: Sequence[str] | None = DEFAULT_CANDIDATES,
    n_resamples: int = 1000,
    seed: int = 0,
    loss_metric: str = "test_loss",
    n_jobs: int = -1,
    variables: Mapping[str, str] | None = None,
    n_definition: str = "total",
    exclude_query: str | None = None,
    drop_highest: int = 0,
    **kwargs: Any,
) -> dict[str, Any]:
    """Analyse a study directory's run records; outputs go to the study dir unless ``out_dir`` is given.

    Writes ``runs.parquet``, ``fit.json`` (fields in ``FIT_JSON_FIELDS``), ``report.md`` and the PNG plots
    (``scaling_curve.png``, ``residuals.png``, ``law_comparison.png``). The law's D is fitted against unique
    tokens U when the study varies U (a data-size study). Failed runs are never fitted; they are listed.
    ``exclude_query`` and ``drop_highest`` are recorded preprocessing steps (see ``data.exclude``).
    """
    study_dir = Path(study_dir)
    df = load_records(study_dir, loss_metric=loss_metric, n_definition=n_definition)
    if exclude_query:
        df = exclude(df, exclude_query, reason="exclude_query")
    if drop_highest:
        df = drop_highest_rows(df, drop_highest)
    failed = [r.run_id for r in find_records(study_dir, status="failed")]
    return analyze_frame(
        df,
        out_dir if out_dir is not None else study_dir,
        law=law,
        variables=variables,
        candidates=candidates,
        n_resamples=n_resamples,
        seed=seed,
        n_jobs=n_jobs,
        source=str(study_dir),
        failed_run_ids=failed,
        **kwargs,
    )


def analyze_table(
    path: Path | str,
    *,
    law: str = "saturating_power_D",
    columns: Mapping[str, str] | None = None,
    out_dir: Path | str | None = None,
    derived_columns: Mapping[str, str] | None = None,
    drop_highest: int = 0,
    collapse_min_over: str | Sequence[str] | None = None,
    exclude_query: str | None = None,
    n_definition: str | None = None,
    candidates: Sequence[str] | None = None,
    n_resamples: int = 1000,
    seed: int = 0,
    n_jobs: int = -1,
    variables: Mapping[str, str] | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """Analyse an external CSV/parquet of results (mapped into the run-table schema by ``columns``).

    Preprocessing (``derived_columns``, ``exclude_query``, ``collapse_min_over``, ``drop_highest``) is applied
    by ``data.load_table`` and recorded in fit.json. Outputs go to ``out_dir`` (default: ``./<table
    stem>_analysis/``). ``candidates`` defaults to the standard data laws for a one-variable
    ``law`` and to none otherwise. The default ``out_dir`` is in the current directory, since reference
    tables often sit in read-only places.
    """
    path = Path(path)
    df = load_table(
        path,
        columns=columns,
        derived=derived_columns,
        exclude_query=exclude_query,
        collapse_min_over=collapse_min_over,
        drop_highest_k=drop_highest,
        n_definition=n_definition,
    )
    law_obj = get_law(law)
    if candidates is None:
        candidates = DEFAULT_CANDIDATES if law_obj.variables == ("D",) else ()
    out = Path(out_dir) if out_dir is not None else Path.cwd() / f"{path.stem}_analysis"
    return analyze_frame(
        df,
        out,
        law=law_obj,
        variables=variables,
        candidates=candidates,
        n_resamples=n_resamples,
        seed=seed,
        n_jobs=n_jobs,
        source=str(path),
        **kwargs,
    )
