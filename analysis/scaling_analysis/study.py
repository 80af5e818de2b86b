"""One call from a study directory (or a results table) to ``runs.parquet``, ``fit.json``, plots and
``report.md``.

The pipeline is a fixed spine of named steps: the law tournament decided in advance (one-variable studies:
the law chosen by rolling-origin validation on the fitting points, the held-out rows removed first) -> fit ->
bootstrap CIs (parameters and predictions beyond the data) -> held-out extrapolation (largest sizes held out)
-> seed-noise floor -> scaling check -> plots, then the optional study steps of ``steps.STUDY_STEPS``
(conditions, downstream tasks, the learning-rate rule, regimes, the cutoff scan: each a ``StepResult``) ->
fit.json -> report. Each step returns its result or the reason it was skipped (the data cannot support it,
e.g. fewer distinct sizes than the law's parameters); the reasons land in ``fit.json["skipped"]`` and the
report, and the four outputs are always written. ``analyze_frame`` returns a ``StudyAnalysis``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Generic, TypeVar

import numpy as np
import pandas as pd

from .engine import (
    BootstrapResult,
    FitResult,
    HoldoutResult,
    Law,
    bootstrap,
    derived_quantities,
    fit_law,
    get_law,
    holdout_extrapolation,
)
from .engine.compare import MIN_ORIGIN_SIZES, TOURNAMENT_CANDIDATES, TournamentResult, predictive_tournament
from .engine.diagnostics import MIN_FRAC_AT_OPTIMUM
from .engine.noise import seed_noise, seed_noise_floor
from .engine.sensitivity import non_converged_variant, sensitivity_table
from .report import fitjson, plots
from .report.fitjson import FIT_JSON_FIELDS, study_summary
from .report.markdown import write_report
from .steps import StudyContext, run_steps
from .steps.checks import CONFIDENCE, scaling_check
from .tables.cells import repeated_cells, repeated_cells_warning
from .tables.excluded import StudyScan, excluded_fields, scan_study
from .tables.runs import (
    domain_long,
    exclude,
    expand_learning_curves,
    load_records,
    load_table,
    preprocessing_of,
    reference_loss,
    save_runs,
)
from .tables.runs import drop_highest as drop_highest_rows

__all__ = [
    "CONFIDENCE",
    "DEFAULT_CANDIDATES",
    "DEFAULT_LAW",
    "FIT_JSON_FIELDS",
    "StudyAnalysis",
    "analysis_result_docs",
    "analyze_frame",
    "analyze_study",
    "analyze_table",
    "n_distinct",
    "scaling_check",
    "study_summary",
    "study_variables",
]

#: The law fitted when none is named and the tournament cannot choose (two sizes, no candidates, ...).
DEFAULT_LAW = "saturating_power_D"
#: The laws of the tournament (``engine.compare.TOURNAMENT_CANDIDATES``: the bending laws included).
DEFAULT_CANDIDATES = TOURNAMENT_CANDIDATES
EXTRAPOLATION_FACTORS = (2.0, 10.0)
PLOT_FILES = {
    "scaling_curve": "scaling_curve.png",
    "residuals": "residuals.png",
    "law_comparison": "law_comparison.png",
    "isoflop": "isoflop.png",
    "domains": "domains.png",
}

T = TypeVar("T")
DerivedFns = dict[str, tuple[Callable[..., float], str]]


@dataclass
class Outcome(Generic[T]):
    """What one step produced: its result, or (``value`` None) the reason it was skipped."""

    value: T | None = None
    skipped: str | None = None


def _doc(text: str) -> dict[str, str]:
    """Field metadata carrying the field's documentation (rendered into the README, like ``RunRecord``)."""
    return {"doc": text}


@dataclass
class StudyAnalysis:
    """Everything ``analyze_frame`` (and ``analyze_study`` / ``analyze_table``) produced, step by step."""

    runs: pd.DataFrame = field(
        metadata=_doc("the run table that was fitted (after every recorded preprocessing step)")
    )
    fit: FitResult = field(
        metadata=_doc("the main fit (`FitResult`): parameters at full precision, diagnostics, warnings")
    )
    bootstrap: BootstrapResult | None = field(
        metadata=_doc(
            "run-level bootstrap (`BootstrapResult`: intervals, SEs, samples), or None when skipped"
        )
    )
    holdout: HoldoutResult | None = field(
        metadata=_doc(
            "held-out extrapolation (`HoldoutResult`): the law fitted without the largest sizes, or None"
        )
    )
    tournament: TournamentResult | None = field(
        metadata=_doc(
            "the law tournament decided in advance (`TournamentResult`: every law's fit on the fitting "
            "points, rule score, choice; held-out errors computed after it), or None when skipped"
        )
    )
    scaling_check: dict[str, Any] = field(
        metadata=_doc("the verdict: does loss fall with the scaling variable? (as in fit.json)")
    )
    fit_json: dict[str, Any] = field(metadata=_doc("the contents of fit.json (fields in `FIT_JSON_FIELDS`)"))
    paths: dict[str, Path] = field(
        metadata=_doc("output name -> file written: runs, fit, report and one entry per plot")
    )
    report: str = field(metadata=_doc("the Markdown text of report.md"))
    sensitivity: dict[str, Any] = field(
        default_factory=dict,
        metadata=_doc(
            "key exponents and predictions refitted with each exclusion rule off (fit.json `sensitivity`)"
        ),
    )
    seed_noise: dict[str, Any] = field(
        default_factory=dict,
        metadata=_doc(
            "run-to-run spread per design cell and the pooled seed-noise floor (fit.json `seed_noise`)"
        ),
    )
    repeated_cells: dict[str, Any] = field(
        default_factory=dict,
        metadata=_doc(
            "design cells holding several rows, and the collapse that would fix a sweep (fit.json)"
        ),
    )
    skipped: dict[str, str] = field(
        default_factory=dict, metadata=_doc("step -> why it did not run (also fit.json `skipped`)")
    )


def analysis_result_docs() -> dict[str, str]:
    """Field -> documentation of ``StudyAnalysis`` (the README's analysis-result table)."""
    return {f.name: f.metadata["doc"] for f in fields(StudyAnalysis)}


@dataclass
class StudyOptions:
    """How to analyse: the keyword arguments of ``analyze_frame`` other than the table and the law."""

    candidates: Sequence[str] = ()
    n_resamples: int = 1000
    seed: int = 0
    n_jobs: int = -1
    huber_delta: float = 1e-3
    starts: Any = "grid"
    fixed: Mapping[str, float] | None = None
    n_holdout_values: int = 1
    holdout_by: str | None = None
    derived_targets: Mapping[str, Any] | None = None
    source: str = ""
    failed_run_ids: Sequence[str] = ()
    scan: StudyScan | None = None
    title: str | None = None
    progress: bool = False
    force: bool = False
    holdout_above: float | None = None
    holdout_fraction: float | None = None
    min_frac_at_optimum: float = MIN_FRAC_AT_OPTIMUM
    exclusion_variants: Mapping[str, pd.DataFrame] | None = None

    def fit_kwargs(self, mapping: Mapping[str, str]) -> dict[str, Any]:
        """Keyword arguments shared by every secondary fit (held-out, sensitivity, study steps)."""
        return {"variables": dict(mapping), "huber_delta": self.huber_delta, "n_jobs": 1}

    def holdout_count(self, df: pd.DataFrame, by: str) -> int:
        """How many of the largest distinct values of ``by`` to hold out (threshold, fraction or count)."""
        values = np.unique(df[by].to_numpy(dtype=float))
        if self.holdout_above is not None:
            return int((values >= self.holdout_above).sum())
        if self.holdout_fraction is not None:
            if not 0 < self.holdout_fraction < 1:
                raise ValueError(f"holdout_fraction={self.holdout_fraction}: must be in (0, 1)")
            return max(1, math.ceil(self.holdout_fraction * len(values)))
        return self.n_holdout_values

    def holdout_rule(self, by: str, n: int) -> str:
        """The held-out rule in words, for fit.json and the report."""
        if self.holdout_above is not None:
            return f"{by} >= {self.holdout_above:.6g} ({n} distinct value(s))"
        if self.holdout_fraction is not None:
            return f"the largest {self.holdout_fraction:.0%} of distinct {by} values ({n})"
        return f"the {n} largest distinct {by} value(s)"


@dataclass
class StudyPlan:
    """What is fitted against what, and how many distinct design points the table offers."""

    law: Law
    mapping: dict[str, str]
    variables_reason: str
    x: str
    design_cols: list[str]
    n_design: int
    n_free: int = 0

    @property
    def design_what(self) -> str:
        if len(self.design_cols) == 1:
            return f"distinct {self.x} values"
        return f"distinct ({', '.join(self.design_cols)}) points"


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


def _prediction_derived(fit: FitResult, df: pd.DataFrame, x: str) -> DerivedFns:
    """Loss predicted at 2x and 10x the largest ``x``: the extrapolations a data-scaling study is for."""
    law = fit.bound_law
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


def _law_derived(law: Law, targets: Mapping[str, Any] | None) -> DerivedFns:
    """Law-specific derived quantities from ``derived_quantities`` (e.g. Chinchilla's a = β/(α+β))."""
    try:
        dq = derived_quantities(law, **dict(targets or {}))
    except (TypeError, ValueError):
        return {}
    out = {}
    for name, fn in (dq or {}).items():
        out[name] = (fn, getattr(fn, "__doc__", None) or name)
    return out


# ------------------------------------------------------------------------------------------------ steps


def plan_study(law: Law, df: pd.DataFrame, variables: Mapping[str, str] | None, source: str) -> StudyPlan:
    """Which column each law variable is fitted against, and the table's distinct design points."""
    if variables:
        mapping, why = {**{v: v for v in law.variables}, **dict(variables)}, ""
    else:
        mapping, why = study_variables(law, df)
    x = mapping[law.variables[0]]
    if x not in df:
        raise ValueError(f"law {law.name!r}: column {x!r} not in the run table (columns: {list(df.columns)})")
    if len(df) == 0:
        raise ValueError(f"{source}: no runs to fit (the table has no data rows left)")
    design_cols = [c for v, c in mapping.items() if v not in law.categorical]
    return StudyPlan(law, mapping, why, x, design_cols, n_distinct(df, design_cols))


def step_fit(df: pd.DataFrame, plan: StudyPlan, opts: StudyOptions) -> FitResult:
    """The main fit on every row; sets the plan's number of free parameters."""
    fit = fit_law(
        plan.law,
        df,
        loss="loss",
        starts=opts.starts,
        fixed=opts.fixed,
        preprocessing=preprocessing_of(df),
        force=opts.force,
        min_frac_at_optimum=opts.min_frac_at_optimum,
        **{**opts.fit_kwargs(plan.mapping), "n_jobs": opts.n_jobs},
    )
    plan.n_free = fit.bound_law.n_params - len(fit.fixed)
    return fit


def step_bootstrap(
    fit: FitResult, df: pd.DataFrame, plan: StudyPlan, opts: StudyOptions, derived: DerivedFns
) -> Outcome[BootstrapResult]:
    """Bootstrap CIs on parameters and derived quantities, unless there are too few design points."""
    if opts.n_resamples <= 0:
        return Outcome(skipped=f"n_resamples={opts.n_resamples}")
    if plan.n_design < plan.n_free:
        return Outcome(
            skipped=f"{plan.n_design} {plan.design_what} for {plan.n_free} free parameters: the law is not "
            "identified, so resampled fits would only show that"
        )
    boot = bootstrap(
        fit,
        df,
        n_resamples=opts.n_resamples,
        seed=opts.seed,
        confidence=CONFIDENCE,
        derived={k: fn for k, (fn, _doc) in derived.items()},
        n_jobs=opts.n_jobs,
        progress=opts.progress,
    )
    return Outcome(boot)


def _train_design_points(df: pd.DataFrame, plan: StudyPlan, by: str, n_holdout: int) -> tuple[int, int]:
    """(distinct values of ``by``, distinct design points left to fit once the largest are held out)."""
    by_values = np.sort(df[by].unique())
    if n_holdout < 1 or n_holdout >= len(by_values):
        return len(by_values), 0
    return len(by_values), n_distinct(df.loc[df[by] < by_values[-n_holdout]], plan.design_cols)


def step_holdout(df: pd.DataFrame, plan: StudyPlan, opts: StudyOptions) -> Outcome[HoldoutResult]:
    """Fit without the largest value(s) of the hold-out column and predict them."""
    by = opts.holdout_by or plan.x
    if by not in df:
        raise ValueError(f"holdout_by={by!r}: not a column (columns: {list(df.columns)})")
    n_holdout = opts.holdout_count(df, by)
    if n_holdout < 1:
        return Outcome(skipped=f"no {by} value is at or above {opts.holdout_above:.6g}: nothing to hold out")
    n_by, n_train = _train_design_points(df, plan, by, n_holdout)
    if len(plan.design_cols) != 1 and opts.holdout_by is None:
        return Outcome(
            skipped=f"law {plan.law.name!r} has several variables: pass holdout_by (CLI --holdout-by, e.g. "
            "C) "
            "to say whose largest values to hold out"
        )
    if n_train < plan.n_free:
        return Outcome(
            skipped=f"{n_by} distinct {by} values: holding out the largest {n_holdout} leaves "
            f"{n_train} distinct design points, fewer than the {plan.n_free} free parameters of "
            f"{plan.law.name!r}"
        )
    try:
        holdout = holdout_extrapolation(
            plan.law,
            df,
            by=by,
            n_holdout_values=n_holdout,
            starts=opts.starts,
            fixed=opts.fixed,
            **opts.fit_kwargs(plan.mapping),
        )
    except (ValueError, RuntimeError) as exc:
        return Outcome(skipped=f"failed: {exc}")
    return Outcome(holdout)


@dataclass
class TournamentStep:
    """The tournament's outcome, the laws that took part, the split it saw, and the headline law (and why)."""

    outcome: Outcome[TournamentResult]
    candidates: list[str]
    n_fitting: int = 0
    n_held_out: int = 0
    reference_loss: float | None = None
    reference_note: str = ""
    headline: dict[str, Any] = field(default_factory=dict)


def held_out_mask(df: pd.DataFrame, plan: StudyPlan, opts: StudyOptions) -> np.ndarray:
    """Rows the held-out check predicts (the rule of ``step_holdout``); all False when nothing is held out."""
    by = opts.holdout_by or plan.x
    if by not in df:
        return np.zeros(len(df), dtype=bool)
    values = np.sort(df[by].unique())
    n = opts.holdout_count(df, by)
    if n < 1 or n >= len(values):
        return np.zeros(len(df), dtype=bool)
    return df[by].to_numpy() >= values[-n]


def _tournament_blocked(df: pd.DataFrame, plan: StudyPlan, opts: StudyOptions) -> str:
    """Why the tournament cannot run on this study (empty when it can)."""
    if not opts.candidates:
        return "no candidate laws given"
    if len(plan.design_cols) != 1 or len(plan.law.variables) != 1 or plan.law.categorical:
        return f"law {plan.law.name!r} has several variables: the tournament chooses among one-variable laws"
    if any(s.get("rule") == "learning_curves" for s in preprocessing_of(df).get("steps") or []):
        return (
            "learning-curve points (--from-curves): points of one run are not independent, so predicting the "
            "next size from them is no fair test; name the law (--law)"
        )
    n_sizes = df.loc[~held_out_mask(df, plan, opts), plan.x].nunique()
    if n_sizes < MIN_ORIGIN_SIZES:
        return (
            f"{n_sizes} distinct {plan.x} values among the fitting points: too few to choose a law (the rule "
            f"needs at least {MIN_ORIGIN_SIZES}; any two-parameter law passes through two sizes)"
        )
    return ""


def step_tournament(df: pd.DataFrame, plan: StudyPlan, opts: StudyOptions) -> TournamentStep:
    """Choose the law by ``predictive_tournament`` on the fitting points; the held-out rows are removed first.

    The held-out rows (``held_out_mask``: the rule of the held-out check) come in separately and are only
    predicted after the choice, so perturbing their losses cannot move it.
    """
    step = TournamentStep(Outcome(), list(opts.candidates))
    why = _tournament_blocked(df, plan, opts)
    if why:
        step.outcome = Outcome(skipped=why)
        return step
    held = held_out_mask(df, plan, opts)
    fitting, held_out = df.loc[~held], df.loc[held]
    step.n_fitting, step.n_held_out = len(fitting), len(held_out)
    try:
        step.reference_loss = reference_loss(df)
    except ValueError as exc:  # runs of two tokenizers: no single L0, so the fixed-L0 envelope sits out
        step.reference_note = str(exc)
    try:
        res = predictive_tournament(
            fitting.reset_index(drop=True),
            step.candidates,
            by=plan.x,
            held_out=held_out.reset_index(drop=True) if len(held_out) else None,
            reference_loss=step.reference_loss,
            huber_delta=opts.huber_delta,
            fixed=opts.fixed,
            n_jobs=1,
        )
    except (ValueError, RuntimeError) as exc:
        step.outcome = Outcome(skipped=f"failed: {exc}")
        return step
    step.outcome = Outcome(res)
    return step


def headline_plan(
    plan: StudyPlan, tstep: TournamentStep, named: bool, df: pd.DataFrame, opts: StudyOptions
) -> StudyPlan:
    """The plan of the law the study predicts with, and why it is that law (on ``tstep.headline``).

    A law the user named (``law=``, ``--law``, the study file's ``analysis.law``) stays the headline, with the
    tournament beside it; otherwise the tournament's choice is, so the held-out check, the bootstrap, the
    derived predictions and the plots are those of the law a rule fixed before the held-out rows were seen.
    """
    res = tstep.outcome.value
    if named or res is None:
        source = "named" if named else "default"
        why = (
            f"`{plan.law.name}` was named (law=..., --law or the study file's analysis.law), so it is the "
            "headline"
            if named
            else f"`{plan.law.name}` is the default law: the tournament did not run ({tstep.outcome.skipped})"
        )
        if res is not None and res.chosen != plan.law.name:
            why += f"; the tournament, decided in advance, chose `{res.chosen}` (see *Law choice*)"
        tstep.headline = {"law": plan.law.name, "source": source, "why": why}
        _fix_reference_loss(plan.law, tstep, df, opts)
        return plan
    law = get_law(res.chosen)
    new = plan_study(law, df, {law.variables[0]: plan.x}, opts.source)
    new.variables_reason = plan.variables_reason if law.variables[0] != plan.x else ""
    opts.fixed = dict(res.fits[res.chosen].fixed) or None
    tstep.headline = {
        "law": law.name,
        "source": "tournament",
        "why": f"no law was named, so the tournament's choice `{law.name}` is the headline: the rule read "
        "only the fitting points (the held-out rows removed first), so the held-out check is out of sample",
    }
    return new


def _fix_reference_loss(law: Law, tstep: TournamentStep, df: pd.DataFrame, opts: StudyOptions) -> None:
    """A named ``envelope_U_fixed`` gets L0 from the records' reference loss unless L0 is fixed already."""
    if law.name != "envelope_U_fixed" or "L0" in (opts.fixed or {}):
        return
    ref = tstep.reference_loss if tstep.reference_loss is not None else reference_loss(df)
    if ref is not None:
        opts.fixed = {**(opts.fixed or {}), "L0": ref}


def step_seed_noise(df: pd.DataFrame, plan: StudyPlan) -> dict[str, Any]:
    """Per design cell: runs, mean, std, relative spread; the pooled floor (every run, held-out ones too)."""
    cells = list(dict.fromkeys([*plan.mapping.values(), *(c for c in ("condition",) if c in df)]))
    floor = seed_noise_floor(df, cells)
    if not floor["n_cells_with_repeats"]:
        return {"skipped": f"no design cell ({', '.join(cells)}) holds two runs: nothing measures the noise"}
    rows = seed_noise(df, cells).to_dict(orient="records")
    return {**floor, "rows": rows}


def derived_values(fit: FitResult, derived: DerivedFns, intervals: Mapping[str, Any]) -> dict[str, Any]:
    """{name: {value, interval, description}} for every derived quantity."""
    out: dict[str, Any] = {}
    for name, (fn, doc) in derived.items():
        try:
            with np.errstate(all="ignore"):
                value = float(fn(fit.params))
        except (ValueError, ZeroDivisionError, FloatingPointError):
            value = math.nan
        out[name] = {"value": value, "interval": intervals.get(name), "description": doc}
    return out


@dataclass
class Figures:
    """Plots written (name -> path) and plots that failed (name -> reason)."""

    paths: dict[str, Path] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)

    def save(self, out: Path, name: str, make: Callable[[Path], Any]) -> None:
        p = out / PLOT_FILES[name]
        try:
            make(p)
        except (ValueError, KeyError, RuntimeError) as exc:
            self.failed[f"plot {name}"] = f"failed: {exc}"
            return
        self.paths[name] = p


def step_plots(out: Path, df: pd.DataFrame, result: StudyAnalysis, x: str) -> Figures:
    """Every figure the data supports: per-domain curves, isoFLOP, scaling curve, residuals, law
    comparison."""
    fit, boot, holdout, tournament = result.fit, result.bootstrap, result.holdout, result.tournament
    bound = fit.bound_law
    figs = Figures()
    domain_cols = [c for c in df.columns if c.startswith("test_loss_")]
    if len(domain_cols) > 1 and len(bound.variables) == 1:
        title = "test loss per evaluation domain"
        figs.save(out, "domains", lambda p: plots.conditions(domain_long(df), x=x, title=title, path=p))
    if len(bound.variables) - len(bound.categorical) > 1 and {"N", "D"} <= set(bound.variables):
        figs.save(out, "isoflop", lambda p: plots.isoflop(fit, df=df, path=p))
    figs.save(
        out,
        "scaling_curve",
        lambda p: plots.scaling_curve(df, fit, bootstrap=boot, holdout=holdout, x=x, path=p),
    )
    figs.save(out, "residuals", lambda p: plots.residuals(df, fit, holdout=holdout, x=x, path=p))
    if tournament is not None:
        figs.save(out, "law_comparison", lambda p: plots.law_comparison(df, tournament, x=x, path=p))
    else:
        # still one figure per output name: the runs with the main fit, titled with why nothing was compared
        title = "law tournament skipped (see report)"
        figs.save(out, "law_comparison", lambda p: plots.scaling_curve(df, fit, x=x, title=title, path=p))
    return figs


def step_repeated_cells(df: pd.DataFrame, plan: StudyPlan) -> tuple[dict[str, Any], str | None]:
    """Cells of the design that hold several rows, and a warning when seeds do not explain them."""
    info = repeated_cells(df, list(plan.mapping.values()))
    return info, repeated_cells_warning(info, len(df))


def step_sensitivity(
    df: pd.DataFrame, plan: StudyPlan, opts: StudyOptions, fit: FitResult, derived: DerivedFns
) -> Outcome[dict[str, Any]]:
    """Key exponents and predictions refitted with each exclusion rule switched off (or applied)."""
    variants = {**dict(opts.exclusion_variants or {}), **non_converged_variant(df)}
    if not variants:
        return Outcome(skipped="no exclusion rule was applied, so there is nothing to switch off")
    kw = {
        **opts.fit_kwargs(plan.mapping),
        "n_jobs": opts.n_jobs,
        "starts": opts.starts,
        "fixed": opts.fixed,
        "force": opts.force,
    }
    fns = {k: fn for k, (fn, _doc) in derived.items()}
    return Outcome(sensitivity_table(fit, variants, fns, kw))


def bootstrap_warnings(boot: BootstrapResult | None) -> list[tuple[str, str]]:
    """Intervals that do not contain their own estimate: the estimate is unstable under resampling."""
    if boot is None:
        return []
    out = []
    for name, (lo, hi) in boot.excluding_point().items():
        out.append(
            (
                "bootstrap_excludes_estimate",
                f"the {boot.confidence:.0%} bootstrap interval of {name} [{lo:.4g}, {hi:.4g}] does not "
                "contain "
                f"the estimate {boot.point[name]:.4g}: the optimum moves under resampling (boundary or "
                "multimodal fit); quote the interval, not the estimate",
            )
        )
    return out


def step_fit_json(
    df: pd.DataFrame, plan: StudyPlan, opts: StudyOptions, result: StudyAnalysis, parts: dict[str, Any]
) -> dict[str, Any]:
    """Assemble fit.json from the step results (``parts``: derived, tournament step, plots)."""
    fit, skipped, pre = result.fit, result.skipped, preprocessing_of(df)
    tstep: TournamentStep = parts["tournament"]
    excluded = excluded_fields(opts.scan, opts.failed_run_ids)
    n_unreadable = sum(e["kind"] == "unreadable" for e in excluded)
    fit_json = {
        **fitjson.fit_fields(fit, plan.variables_reason, pre, CONFIDENCE, parts["warnings"]),
        **fitjson.bootstrap_fields(result.bootstrap, skipped.get("bootstrap")),
        "holdout": fitjson.holdout_fields(
            result.holdout, plan.x, skipped.get("holdout"), parts["holdout_rule"]
        ),
        "seed_noise": fitjson.seed_noise_fields(result.seed_noise, result.holdout),
        "tournament": fitjson.tournament_fields(tstep, skipped.get("tournament")),
        "derived": parts["derived"],
        "scaling_check": result.scaling_check,
        "summary": study_summary(df, plan.x, failed=opts.failed_run_ids, n_unreadable=n_unreadable),
        "excluded_runs": excluded,
        "non_converged": fitjson.non_converged_rows(df, plan.x),
        "preprocessing": fit.preprocessing or pre,
        "dropped": fitjson.dropped_fields(fit.preprocessing or pre),
        "forced": list(fit.diagnostics.get("forced", [])),
        "repeated_cells": result.repeated_cells,
        "sensitivity": result.sensitivity or {"skipped": skipped.get("sensitivity", "not run")},
        **{k: v for step in parts["steps"] for k, v in step.fields.items()},
        "skipped": skipped,
        "n_resamples": opts.n_resamples,
        "seed": opts.seed,
        "created_at": fitjson.now_utc(),
        "source": opts.source,
        "outputs": ["runs.parquet", "fit.json", "report.md", *(p.name for p in parts["plots"].values())],
        "versions": fitjson.versions(),
    }
    return fitjson.check_fields(fit_json)


def step_write(
    out: Path, df: pd.DataFrame, result: StudyAnalysis, plots: Mapping[str, Path], title: str | None
) -> None:
    """Write fit.json and report.md; record their paths and the report text on ``result``."""
    fit_path = out / "fit.json"
    fit_path.write_text(json.dumps(result.fit_json, indent=2, allow_nan=False) + "\n")
    result.paths.update(plots)
    result.paths["fit"] = fit_path
    names = {k: p.name for k, p in plots.items()}
    report_path = write_report(out / "report.md", result.fit_json, df, plots=names, title=title)
    result.paths["report"] = report_path
    result.report = report_path.read_text()


# ------------------------------------------------------------------------------------------------ core


def study_context(
    df: pd.DataFrame, out: Path, plan: StudyPlan, opts: StudyOptions, fit: FitResult
) -> StudyContext:
    """What the optional study steps read: the table, the main fit, the plan and the options they use."""
    return StudyContext(
        df=df,
        out=out,
        fit=fit,
        law=plan.law,
        x=plan.x,
        mapping=plan.mapping,
        design_cols=plan.design_cols,
        n_free=plan.n_free,
        fit_kwargs={"starts": opts.starts, "fixed": opts.fixed, **opts.fit_kwargs(plan.mapping)},
        n_resamples=opts.n_resamples,
        seed=opts.seed,
        n_jobs=opts.n_jobs,
        source=opts.source,
        scan=opts.scan,
    )


def _run_checks(
    df: pd.DataFrame, plan: StudyPlan, opts: StudyOptions, result: StudyAnalysis, derived: DerivedFns
) -> None:
    """Bootstrap, held-out check, seed noise and sensitivity; results and skip reasons onto ``result``."""
    boot = step_bootstrap(result.fit, df, plan, opts, derived)
    holdout = step_holdout(df, plan, opts)
    sensitivity = step_sensitivity(df, plan, opts, result.fit, derived)
    for name, outcome in (("bootstrap", boot), ("holdout", holdout), ("sensitivity", sensitivity)):
        if outcome.skipped is not None:
            result.skipped[name] = outcome.skipped
    result.bootstrap, result.holdout = boot.value, holdout.value
    result.sensitivity = sensitivity.value or {}
    result.seed_noise = step_seed_noise(df, plan)


def choose_law(
    df: pd.DataFrame, law: str | Law | None, variables: Mapping[str, str] | None, opts: StudyOptions
) -> tuple[StudyPlan, TournamentStep]:
    """The tournament on the fitting points, then the plan of the headline law (``headline_plan``)."""
    plan = plan_study(get_law(law if law is not None else DEFAULT_LAW), df, variables, opts.source)
    tstep = step_tournament(df, plan, opts)
    return headline_plan(plan, tstep, law is not None, df, opts), tstep


def analyze_frame(
    df: pd.DataFrame,
    out_dir: Path | str,
    *,
    law: str | Law | None = None,
    variables: Mapping[str, str] | None = None,
    candidates: Sequence[str] | None = DEFAULT_CANDIDATES,
    **options: Any,
) -> StudyAnalysis:
    """Choose the law, fit, bootstrap, hold out, plot and report an already-loaded run table into ``out_dir``.

    ``law``: the law to fit; None (not named) lets the tournament decided in advance choose it among
    ``candidates`` on the fitting points (``DEFAULT_LAW`` when it cannot run); a named law stays the headline
    and the tournament is shown beside it. ``options`` are the fields of ``StudyOptions`` (``n_resamples``,
    ``seed``, ``n_jobs``, ``huber_delta``, ``starts``, ``fixed``, ``n_holdout_values``, ``holdout_by``,
    ``derived_targets``, ``source``, ``failed_run_ids``, ``scan``, ``title``, ``progress``). Results of
    skipped steps are None; why is in ``skipped``. ``scan`` (``tables.excluded.scan_study``) lists the runs
    not fitted in ``excluded_runs``.
    """
    opts = StudyOptions(candidates=tuple(candidates or ()), **options)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plan, tstep = choose_law(df, law, variables, opts)
    runs_path = save_runs(df, out / "runs.parquet")
    fit = step_fit(df, plan, opts)
    derived_fns = {
        **_prediction_derived(fit, df, plan.x),
        **_law_derived(fit.bound_law, opts.derived_targets),
    }
    result = StudyAnalysis(df, fit, None, None, tstep.outcome.value, {}, {}, {"runs": runs_path}, "")
    if tstep.outcome.skipped is not None:
        result.skipped["tournament"] = tstep.outcome.skipped
    result.repeated_cells, cells_warning = step_repeated_cells(df, plan)
    _run_checks(df, plan, opts, result, derived_fns)
    intervals = fitjson.bootstrap_fields(result.bootstrap, None)["intervals"]
    identified = plan.n_design >= plan.n_free
    result.scaling_check = scaling_check(df, fit, plan.x, intervals, identified=identified)
    figs = step_plots(out, df, result, plan.x)
    result.skipped.update(figs.failed)
    steps = run_steps(study_context(df, out, plan, opts, fit))  # the optional steps of STUDY_STEPS
    for step in steps:
        result.skipped.update(step.failed)
    warnings = bootstrap_warnings(result.bootstrap)
    if cells_warning:
        warnings.append(("repeated_cells", cells_warning))
    parts = {
        "derived": derived_values(fit, derived_fns, intervals),
        "tournament": tstep,
        "plots": figs.paths,
        "warnings": warnings,
        "steps": steps,
        "holdout_rule": opts.holdout_rule(result.holdout.by, len(result.holdout.held_out_values))
        if result.holdout is not None
        else "",
    }
    result.fit_json = step_fit_json(df, plan, opts, result, parts)
    for step in steps:
        result.fit_json["outputs"] += step.outputs
        result.paths.update(step.plots)
    step_write(out, df, result, figs.paths, opts.title)
    return result


def _study_table(
    scan: StudyScan,
    study_dir: Path,
    loss_metric: str,
    n_definition: str,
    rules: Mapping[str, Any],
    strict: bool,
) -> pd.DataFrame:
    """The run table of ``scan``'s records, exclusion ``rules`` (exclude_query, drop_highest) applied."""
    df = load_records(
        study_dir, loss_metric=loss_metric, n_definition=n_definition, strict=strict, records=scan.records
    )
    if rules.get("from_curves"):
        df = expand_learning_curves(df, scan.records)
    if rules.get("exclude_query"):
        df = exclude(df, rules["exclude_query"], reason="exclude_query")
    if rules.get("drop_highest"):
        df = drop_highest_rows(df, rules["drop_highest"])
    return df


def exclusion_variants(load: Any, rules: Mapping[str, Any]) -> dict[str, pd.DataFrame]:
    """The table re-loaded with each applied exclusion rule switched off (``load(**rules)`` builds a
    table)."""
    labels = {"exclude_query": "without --exclude {!r}", "drop_highest": "without --drop-highest {}"}
    out = {}
    for rule, value in rules.items():
        if value and rule in labels:
            out[labels[rule].format(value)] = load(**{**rules, rule: type(value)()})
    return out


def analyze_study(
    study_dir: Path | str,
    *,
    out_dir: Path | str | None = None,
    law: str | None = None,
    candidates: Sequence[str] | None = DEFAULT_CANDIDATES,
    loss_metric: str = "test_loss",
    n_definition: str = "total",
    exclude_query: str | None = None,
    drop_highest: int = 0,
    force: bool = True,
    strict: bool = False,
    from_curves: bool = False,
    **kwargs: Any,
) -> StudyAnalysis:
    """Analyse a study directory's run records; outputs go to the study dir unless ``out_dir`` is given.

    ``from_curves``: fit every point of every run's learning curve (``val_curve``: D = tokens seen, loss =
    validation loss there) instead of one point per run; a recorded preprocessing step warns that points of
    one run are not independent and, for cosine-schedule runs, that intermediate losses over-state the loss of
    a run trained to those tokens.

    Writes ``runs.parquet``, ``fit.json`` (fields in ``FIT_JSON_FIELDS``), ``report.md`` and the PNG plots
    (``scaling_curve.png``, ``residuals.png``, ``law_comparison.png``). ``law`` None: the tournament
    decided in advance chooses it (see ``analyze_frame``); a named law stays the headline. The law's D is
    fitted against unique tokens U when the study varies U (a data-size study). The directory is read once
    (``scan_study``); failed runs and unreadable (corrupt, half-written) records are never fitted: they are
    warned about and listed with why (fit.json ``excluded_runs``, the report's "Excluded runs").
    ``exclude_query`` and ``drop_highest`` are recorded preprocessing steps (``tables.runs.exclude``), and the
    report shows what switching each off changes. A study directory always gets its outputs (``force=True``):
    a study with fewer sizes than the law's parameters is fitted, marked forced and called inconclusive.
    ``strict=True`` refuses runs whose loss is not finite instead of dropping them.
    """
    study_dir = Path(study_dir)
    rules = {"exclude_query": exclude_query or "", "drop_highest": drop_highest}
    scan = scan_study(study_dir) if study_dir.is_dir() else StudyScan()  # the one read of the records

    def load(**r: Any) -> pd.DataFrame:
        return _study_table(
            scan, study_dir, loss_metric, n_definition, r | {"from_curves": from_curves}, strict
        )

    if from_curves and not kwargs.get("variables"):
        kwargs["variables"] = {"D": "D"}  # tokens seen at each point, not the run's U
    return analyze_frame(
        load(**rules),
        out_dir if out_dir is not None else study_dir,
        law=law,
        candidates=candidates,
        source=str(study_dir),
        failed_run_ids=scan.failed_run_ids,
        scan=scan,
        force=force,
        exclusion_variants=exclusion_variants(load, rules),
        **kwargs,
    )


def analyze_table(
    path: Path | str,
    *,
    law: str | None = None,
    columns: Mapping[str, str] | None = None,
    out_dir: Path | str | None = None,
    derived_columns: Mapping[str, str] | None = None,
    drop_highest: int = 0,
    collapse_min_over: str | Sequence[str] | None = None,
    exclude_query: str | None = None,
    n_definition: str | None = None,
    candidates: Sequence[str] | None = None,
    strict: bool = False,
    **kwargs: Any,
) -> StudyAnalysis:
    """Analyse an external CSV/parquet of results (mapped into the run-table schema by ``columns``).

    Preprocessing (``derived_columns``, ``exclude_query``, ``collapse_min_over``, ``drop_highest``) is applied
    by ``tables.runs.load_table`` and recorded in fit.json (``strict=True``: a non-numeric loss is an
    error, not a dropped row). Outputs go to ``out_dir`` (default: ``./<table stem>_analysis/``, since
    reference tables often sit in read-only places). ``candidates`` (the tournament's laws) defaults to
    ``DEFAULT_CANDIDATES`` for a law of D or U or no law named, and to none otherwise. A table that cannot
    identify the law raises ``UnfittableError`` unless ``force=True``.
    """
    path = Path(path)
    rules = {"exclude_query": exclude_query or "", "drop_highest": drop_highest}

    def load(**r: Any) -> pd.DataFrame:
        return load_table(
            path,
            columns=columns,
            derived=derived_columns,
            exclude_query=r["exclude_query"] or None,
            collapse_min_over=collapse_min_over,
            drop_highest_k=r["drop_highest"],
            n_definition=n_definition,
            strict=strict,
        )

    law_obj = get_law(law) if law is not None else None
    if candidates is None:
        candidates = DEFAULT_CANDIDATES if law_obj is None or law_obj.variables in (("D",), ("U",)) else ()
    out = Path(out_dir) if out_dir is not None else Path.cwd() / f"{path.stem}_analysis"
    return analyze_frame(
        load(**rules),
        out,
        law=law_obj,
        candidates=candidates,
        source=str(path),
        exclusion_variants=exclusion_variants(load, rules),
        **kwargs,
    )
