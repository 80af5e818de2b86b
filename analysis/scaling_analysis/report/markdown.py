"""The Markdown report of a study: rendered from ``fit.json`` (plus the run table), so the two never disagree.

Numbers are printed at full precision (``repr`` of the float) wherever they are parameters or intervals,
because rounded scaling-law parameters change predictions (Besiroglu et al. 2024); summaries use 3-4 digits.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from ..render.text import full, markdown_table, pct, readable, short
from ..steps import STUDY_STEPS
from ..tables.runs import COLUMNS, describe_rows


def _interval(iv: Any) -> str:
    if iv is None or len(iv) != 2:
        return "—"
    return f"[{full(iv[0])}, {full(iv[1])}]"


def _readable_interval(iv: Any) -> str:
    if iv is None or len(iv) != 2:
        return "—"
    return f"[{readable(iv[0])}, {readable(iv[1])}]"


def distinct_labels(values: Sequence[float], digits: int = 4) -> list[str]:
    """Values printed with the fewest significant digits (at least ``digits``) that keep them distinct."""
    n_distinct = len(set(values))
    for d in range(digits, 18):
        labels = [short(v, d) for v in values]
        if len(set(labels)) == n_distinct:
            return labels
    return [full(v) for v in values]


# -------------------------------------------------------------------------------------------- sections


def _runs_line(summary: Mapping[str, Any]) -> str:
    """Runs fitted, and the failed runs and unreadable records that were not."""
    left_out = []
    if summary.get("n_failed"):
        left_out.append(f"{summary['n_failed']} failed ({', '.join(summary.get('failed_run_ids', []))})")
    if summary.get("n_unreadable"):
        left_out.append(f"{summary['n_unreadable']} unreadable record file(s)")
    runs = f"- **Runs:** {summary.get('n_runs', 0)} fitted"
    return runs + (f"; not fitted: {', '.join(left_out)}, listed under *Excluded runs*" if left_out else "")


def summary_section(summary: Mapping[str, Any]) -> str:
    """Runs, sizes, seeds, ranges and cost, as a short bullet list."""
    x = summary.get("x", "U")
    lines = ["## Study summary", "", _runs_line(summary)]
    sizes = summary.get("sizes") or []
    shown = ", ".join(distinct_labels(sizes)[:12]) + (" …" if len(sizes) > 12 else "")
    lines.append(f"- **Distinct {x} values:** {summary.get('n_sizes', 0)} ({shown})")
    if summary.get("seeds") is not None:
        per = summary.get("runs_per_size")
        lines.append(
            f"- **Seeds:** {', '.join(str(s) for s in summary['seeds'])}"
            + (f" ({short(per, 3)} runs per size on average)" if per else "")
        )
    if summary.get("x_range"):
        lo, hi = summary["x_range"]
        lines.append(
            f"- **{x} range:** {short(lo)} – {short(hi)} "
            f"({short(summary.get('orders_of_magnitude'), 3)} orders of magnitude)"
        )
    d_label = "D (tokens seen)" if summary.get("epochs_range") else "D"
    for col, label in (("D_range", d_label), ("epochs_range", "epochs (D / U)"), ("N_range", "N")):
        if summary.get(col):
            lo, hi = summary[col]
            lines.append(f"- **{label}:** {short(lo)}" + (f" – {short(hi)}" if hi != lo else ""))
    if summary.get("loss_range"):
        lo, hi = summary["loss_range"]
        lines.append(f"- **loss ({summary.get('loss_metric', 'loss')}):** {short(lo)} – {short(hi)}")
    if summary.get("total_wall_time_s") is not None:
        s = float(summary["total_wall_time_s"])
        lines.append(f"- **Total wall time:** {short(s, 4)} s ({short(s / 3600, 3)} h)")
    if summary.get("n_non_converged") and summary.get("has_stop_info", True):
        lines.append(
            f"- **Not converged (token cap hit):** {summary['n_non_converged']} run(s), listed below"
        )
    return "\n".join(lines)


def _axes_text(axes: Mapping[str, Any] | None) -> str:
    return ", ".join(f"{k}={v}" for k, v in axes.items()) if axes else "—"


def excluded_section(entries: Sequence[Mapping[str, Any]]) -> str:
    """Every run record that was not fitted (failed runs, unreadable record files), with why."""
    lines = ["## Excluded runs", ""]
    if not entries:
        return "\n".join([*lines, "None: every run record was readable and finished."])
    lines.append(
        f"{len(entries)} run record(s) were not fitted (each was also warned about). A failed run shows its "
        "error; a corrupt or half-written record file shows what reading it raised: rerun or repair it, then "
        "analyse again."
    )
    header = ["record", "kind", "run", "axes", "why", "earlier attempts"]
    rows = [
        [
            f"`{e['path']}`" if e.get("path") else "—",
            e.get("kind", "—"),
            e.get("run_id") or "—",
            _axes_text(e.get("axes")),
            e.get("reason", "—"),
            e.get("previous_attempts") or 0,
        ]
        for e in entries
    ]
    return "\n".join([*lines, "", markdown_table(header, rows)])


def scaling_check_section(check: Mapping[str, Any]) -> str:
    return "## Does this look like a scaling curve?\n\n" + str(check.get("sentence", "not checked"))


def parameter_tables(fj: Mapping[str, Any]) -> str:
    """Parameters at 5 significant digits for reading, then the same at full precision (collapsed).

    Rounded parameters change predictions (Besiroglu et al. 2024), so the full-precision values stay in the
    report too, below the readable table, as well as in fit.json.
    """
    conf = fj.get("confidence", 0.95)
    header = ["parameter", "estimate", f"{conf:.0%} CI (bootstrap)", "std. error (bootstrap)"]
    intervals, ses, fixed = fj.get("intervals") or {}, fj.get("std_errors") or {}, fj.get("fixed") or {}
    readable_rows, full_rows = [], []
    for name, value in (fj.get("params") or {}).items():
        tag = " (fixed)" if name in fixed else ""
        iv, se = intervals.get(name), ses.get(name)
        readable_rows.append([f"`{name}`", readable(value) + tag, _readable_interval(iv), readable(se)])
        full_rows.append([name, full(value) + tag, _interval(iv), full(se)])
    return "\n".join(
        [
            markdown_table(header, readable_rows),
            "",
            "<details><summary>full precision (as in fit.json)</summary>",
            "",
            markdown_table(header, full_rows),
            "",
            "</details>",
        ]
    )


def fit_section(fj: Mapping[str, Any]) -> str:
    """The law, its parameters with CIs (full precision) and the fit's vital statistics."""
    conf = fj.get("confidence", 0.95)
    lines = ["## Fit", ""]
    variables = ", ".join(f"{v} → `{c}`" for v, c in (fj.get("variables") or {}).items())
    lines.append(
        f"**Law:** `{fj.get('law')}`: {fj.get('formula')}  (variables: {variables}; loss: "
        f"`{fj.get('loss_metric')}`)"
    )
    if fj.get("variables_reason"):
        lines.append(f"\n*{fj['variables_reason']}*")
    headline = (fj.get("tournament") or {}).get("headline") or {}
    if headline.get("why"):
        lines.append(f"\n**Why this law:** {headline['why']}.")
    lines.append("")
    lines.append(parameter_tables(fj))
    boot = fj.get("bootstrap") or {}
    if boot.get("skipped"):
        lines.append(f"\nBootstrap skipped: {boot['skipped']}")
    elif boot:
        lines.append(
            f"\nBootstrap: {boot.get('n_resamples')} resamples with replacement, each drawing "
            f"{boot.get('resampled', 'rows')} (seed {boot.get('seed')}), "
            f"{boot.get('n_failed', 0)} failed; percentile intervals."
        )
    derived = fj.get("derived") or {}
    if derived:
        lines += ["", "**Derived quantities**", ""]
        drows = [
            [name, d.get("description", ""), readable(d.get("value")), _readable_interval(d.get("interval"))]
            for name, d in derived.items()
        ]
        lines.append(markdown_table(["quantity", "meaning", "estimate", f"{conf:.0%} CI"], drows))
    m = fj.get("metrics") or {}
    lines += [
        "",
        f"Objective (summed Huber, δ = {full(fj.get('huber_delta'))}, on log loss): "
        f"{full(fj.get('objective'))} "
        f"over {fj.get('n_points')} runs. In-sample: MAPE {pct(m.get('mape'))}, max ARE "
        f"{pct(m.get('max_are'))}, "
        f"R² {short(m.get('r2'))}.",
    ]
    return "\n".join(lines)


def _holdout_rows(
    ho: Mapping[str, Any], pts: Sequence[Mapping[str, Any]]
) -> tuple[list[str], list[list[Any]]]:
    """Header and rows of the held-out points table (the hold-out column too, when it is not x)."""
    x, by = str(ho.get("x") or ho.get("by")), str(ho.get("by"))
    ident = "run" if any(p.get("run_id") for p in pts) else "row"
    cols = [x] if by == x or not any(by in p for p in pts) else [x, by]
    header = [ident, *cols, "observed", "predicted", "abs. rel. error"]
    rows = [
        [
            p.get("run_id") or p.get("row", "—"),
            *(short(p.get(c)) for c in cols),
            readable(p.get("observed")),
            readable(p.get("predicted")),
            pct(p.get("abs_rel_error")),
        ]
        for p in pts
    ]
    return header, rows


def holdout_section(ho: Mapping[str, Any] | None, noise: Mapping[str, Any] | None = None) -> str:
    lines = ["## Held-out extrapolation", ""]
    if not ho:
        return "\n".join([*lines, "Not run."])
    if ho.get("skipped"):
        return "\n".join([*lines, f"Skipped: {ho['skipped']}"])
    rule = ho.get("rule") or f"`{ho.get('by')}` >= {short(ho.get('threshold'))}"
    lines.append(
        f"Held out: {rule}. Fit on the other {ho.get('n_train')} runs, predict the {ho.get('n_test')} "
        "held-out "
        f"run(s): **MAPE {pct(ho.get('mape'))}, max ARE {pct(ho.get('max_are'))}**. This, not in-sample fit "
        "quality, is what says whether the law extrapolates."
    )
    beside = (noise or {}).get("held_out_vs_floor")
    if beside:
        lines.append(f"\nAgainst the run-to-run noise: **{beside}** (see *Seed noise*).")
    pts = ho.get("points") or []
    if pts:
        header, rows = _holdout_rows(ho, pts)
        lines += ["", markdown_table(header, rows)]
    return "\n".join(lines)


#: Column headers of the tournament table; the held-out ones say they were not used for the choice.
HELD_OUT_MAPE = "held-out MAPE (not used for the choice)"
HELD_OUT_BIAS = "held-out bias (not used for the choice)"


def _params_text(params: Mapping[str, Any], fixed: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={readable(v)}" + (" (fixed)" if k in fixed else "") for k, v in params.items())


def _tournament_rows(laws: Sequence[Mapping[str, Any]]) -> list[list[Any]]:
    rows = []
    for r in laws:
        held = next((v for k, v in r.items() if k.startswith("held_out (")), None) or {}
        note = r.get("error") or r.get("degenerate") or ""
        rows.append(
            [
                f"`{r.get('law')}`" + (" **chosen**" if r.get("chosen") else ""),
                _fmt_cell(r.get("n_params")),
                _params_text(r.get("params") or {}, r.get("fixed") or {}) or "—",
                pct(r.get("rule_score")),
                _fmt_cell(r.get("aicc")),
                pct(held.get("mape")),
                pct(held.get("bias")),
                note,
            ]
        )
    return rows


def tournament_section(t: Mapping[str, Any] | None) -> str:
    """Every law's fit on the fitting runs, its rule score, the choice, held-out errors not used for it."""
    lines = ["## Law choice: a tournament decided in advance", ""]
    t = t or {}
    if t.get("skipped"):
        return "\n".join([*lines, f"Skipped: {t['skipped']}"])
    if not t:
        return "\n".join([*lines, "Not run."])
    lines.append(
        f"The rule chose among {len(t.get('laws') or [])} laws using the {t.get('n_fitting_rows')} fitting "
        f"runs only; the {t.get('n_held_out_rows')} held-out run(s) were removed before the call, and their "
        "errors below were computed after the choice."
    )
    header = ["law", "k", "parameters (fit on the fitting runs)", "rule score (rolling origin)", "AICc"]
    header += [HELD_OUT_MAPE, HELD_OUT_BIAS, "note"]
    lines += ["", markdown_table(header, _tournament_rows(t.get("laws") or []))]
    lines.append(f"\n**Chosen:** `{t.get('chosen')}`. {t.get('reason', '')}.")
    if t.get("reference_note"):
        lines.append(f"\n`envelope_U_fixed` had no reference loss: {t['reference_note']}")
    lines += ["", f"<details><summary>the rule</summary>\n\n{t.get('rule', '')}\n\n</details>"]
    return "\n".join(lines)


def seed_noise_section(noise: Mapping[str, Any] | None) -> str:
    """Per design cell: runs, mean, std, relative spread; the pooled floor beside the held-out error."""
    lines = ["## Seed noise", ""]
    noise = noise or {}
    if not noise:
        return "\n".join([*lines, "Not run."])
    if noise.get("skipped"):
        return "\n".join([*lines, f"Not measured: {noise['skipped']}."])
    cells = list(noise.get("cells") or [])
    rows = [
        [
            *(short(r.get(c)) for c in cells),
            r.get("n"),
            readable(r.get("mean")),
            short(r.get("std"), 3),
            pct(r.get("rel_spread")),
        ]
        for r in noise.get("rows") or []
    ]
    lines.append(
        f"Pooled relative std over the {noise.get('n_cells_with_repeats')} cell(s) with repeated runs "
        f"(every run, held-out ones too): **seed floor {pct(noise.get('floor'))}** (median "
        f"{pct(noise.get('median_rel_spread'))}, largest {pct(noise.get('max_rel_spread'))}); "
        f"{noise.get('held_out_vs_floor', '')}. An error or a difference between laws below the floor is "
        "not evidence."
    )
    return "\n".join([*lines, "", markdown_table([*cells, "n", "mean", "std", "rel. spread"], rows)])


def _fmt_cell(v: Any) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return short(v, 5)
    if isinstance(v, list):
        return "; ".join(str(x) for x in v) if v else ""
    return "—" if v is None else str(v)


def diagnostics_section(fj: Mapping[str, Any]) -> str:
    d = fj.get("diagnostics") or {}
    lines = ["## Diagnostics and warnings", ""]
    lines.append(
        f"- optimiser converged: **{d.get('converged')}**; gradient norm at the optimum "
        f"{short(d.get('grad_norm'), 3)}; "
        f"{pct(d.get('frac_starts_at_optimum'))} of {d.get('n_starts')} starts reached the optimum"
    )
    warnings = list(d.get("warnings") or [])
    if warnings:
        lines += [f"- ⚠ {w}" for w in warnings]
    else:
        lines.append("- no warnings")
    for step, reason in (fj.get("skipped") or {}).items():
        lines.append(f"- skipped {step}: {reason}")
    return "\n".join(lines)


def forced_section(forced: Sequence[str]) -> str:
    """The banner of a forced fit: why the data cannot identify the law."""
    reasons = "".join(f"\n- {r}" for r in forced)
    return (
        "> **FORCED FIT.** The data cannot identify this law; it was fitted only because `force` was given. "
        "Do not interpret the parameters or extrapolate the curve. Why:" + reasons
    )


def sensitivity_section(sens: Mapping[str, Any] | None) -> str:
    """Key exponents and predictions with each exclusion rule on and off."""
    lines = ["## Sensitivity to exclusions", ""]
    sens = sens or {}
    if sens.get("skipped"):
        return "\n".join([*lines, f"Not computed: {sens['skipped']}."])
    names = list(sens.get("quantities") or [])
    rows = []
    for r in sens.get("rows") or []:
        values = [readable(r.get(q)) for q in names] if "error" not in r else ["—"] * len(names)
        note = r.get("error", "") or (f"{r['n_warnings']} fit warning(s)" if r.get("n_warnings") else "")
        rows.append([r.get("variant"), r.get("n_rows"), *values, note])
    lines.append(
        "Each row refits the law with one exclusion rule switched off (or applied): what each choice moves."
    )
    return "\n".join([*lines, "", markdown_table(["variant", "rows", *names, "note"], rows)])


def non_converged_section(runs: Sequence[Mapping[str, Any]], x: str) -> str:
    lines = ["## Non-converged runs", ""]
    if not runs:
        return "\n".join([*lines, "None: every fitted run stopped by early stopping."])
    lines.append(
        "These runs hit the token cap before early stopping fired, so their loss may still have been falling "
        "(an upper bound on the converged loss). They are fitted like the others and drawn hollow in the "
        "plots."
    )
    rows = [
        [r.get("run_id"), short(r.get(x)), r.get("seed", "—"), full(r.get("loss")), r.get("stop_reason", "—")]
        for r in runs
    ]
    return "\n".join([*lines, "", markdown_table(["run", x, "seed", "loss", "stop reason"], rows)])


def preprocessing_section(pre: Mapping[str, Any] | None) -> str:
    lines = ["## Preprocessing", ""]
    pre = pre or {}
    lines.append(f"- source: {pre.get('source', '—')} `{pre.get('path', '')}`")
    for key in ("loss_metric", "n_definition", "status_filter", "column_mapping"):
        if pre.get(key) not in (None, {}, "", "no N column"):
            lines.append(f"- {key}: `{pre[key]}`")
    if pre.get("n_rows_raw") is not None:
        lines.append(f"- rows: {pre.get('n_rows_raw')} read, {pre.get('n_rows')} fitted")
    steps = pre.get("steps") or []
    if not steps:
        lines.append("- no rows excluded or transformed")
    for s in steps:
        skip = ("rule", "run_ids", "dropped_values", "rows")
        rest = ", ".join(f"{k}={v}" for k, v in s.items() if k not in skip)
        extra = ""
        if s.get("dropped_values"):
            extra = f"; dropped values {[short(v) for v in s['dropped_values']]}"
        if s.get("run_ids"):
            extra = f"; runs {s['run_ids']}"
        if s.get("rows"):
            extra += (
                f"; dropped rows: {describe_rows(s['rows'], int(s.get('n_dropped', len(s['rows']))), 10)}"
            )
        lines.append(f"- **{s.get('rule')}**: {rest}{extra}")
    return "\n".join(lines)


def figures_section(plots: Mapping[str, str], x: str = "the scaling variable") -> str:
    lines = ["## Figures", ""]
    captions = {
        "scaling_curve": f"Loss vs {x}: runs, fit (dashed past the data), bootstrap band where computed, "
        "held-out points where held out",
        "residuals": "Residuals of every run (observed / predicted − 1)",
        "law_comparison": "The tournament's laws, fitted without the held-out runs, overlaid; the chosen one "
        "thick",
        "isoflop": "IsoFLOP curves and the compute-optimal frontier",
        "conditions": "Per-condition curves",
        "domains": "Test loss per evaluation domain (one curve per domain)",
    }
    for name, rel in plots.items():
        lines += [f"### {captions.get(name, name)}", "", f"![{name}]({rel})", ""]
    return "\n".join(lines).rstrip()


def _table_glossary(df: pd.DataFrame, pre: Mapping[str, Any]) -> list[list[str]]:
    """What each column of an external table is, from what the table and its preprocessing say."""
    sources = {dst: src for src, dst in (pre.get("column_mapping") or {}).items()}
    derived = {s["column"]: s["expression"] for s in pre.get("steps") or [] if s.get("rule") == "derive"}
    rows = []
    for col in df.columns:
        if col == "source_row":
            rows.append([f"`{col}`", COLUMNS["source_row"]])
        elif col in derived:
            rows.append([f"`{col}`", f"derived: `{col} = {derived[col]}`"])
        elif col in sources:
            rows.append([f"`{col}`", f"the table's column `{sources[col]}`, as given"])
        elif col in ("N", "D", "U", "C", "loss", "condition"):
            rows.append([f"`{col}`", "the table's column, as given"])
    return rows


def glossary_section(df: pd.DataFrame | None, pre: Mapping[str, Any] | None = None) -> str:
    """Column glossary: every schema column present in the run table (patterns like val_loss_<domain>
    once)."""
    lines = ["## Column glossary (`runs.parquet`)", ""]
    if df is not None and (pre or {}).get("source") == "table":
        return "\n".join([*lines, markdown_table(["column", "meaning"], _table_glossary(df, pre or {}))])
    present = set(df.columns) if df is not None else set(COLUMNS)
    rows = []
    for name, doc in COLUMNS.items():
        if "<" in name:
            prefix = name.split("<")[0]
            if any(c.startswith(prefix) and c not in COLUMNS for c in present):
                rows.append([f"`{name}`", doc])
        elif name in present:
            rows.append([f"`{name}`", doc])
    return "\n".join([*lines, markdown_table(["column", "meaning"], rows)])


# ------------------------------------------------------------------------------------------------ report


def render_report(
    fit_json: Mapping[str, Any],
    df: pd.DataFrame | None = None,
    *,
    plots: Mapping[str, str] | None = None,
    title: str | None = None,
) -> str:
    """The full Markdown report for one analysis (``fit_json`` as written by ``study.analyze_*``).

    ``plots`` maps figure names to paths relative to the report (the PNGs sit next to it).
    """
    summary = fit_json.get("summary") or {}
    x = summary.get("x") or next(iter((fit_json.get("variables") or {"x": "U"}).values()))
    title = title or f"Scaling analysis: {summary.get('study') or fit_json.get('source', '')}"
    head = [
        f"# {title}",
        "",
        f"Generated {fit_json.get('created_at', '')} from `{fit_json.get('source', '')}`. "
        f"Fit results: [`fit.json`](fit.json); runs: [`runs.parquet`](runs.parquet).",
    ]
    sections = ["\n".join(head)]
    if fit_json.get("forced"):
        sections.append(forced_section(fit_json["forced"]))
    sections.append(summary_section(summary))
    if fit_json.get("excluded_runs") or (fit_json.get("preprocessing") or {}).get("source") == "records":
        sections.append(excluded_section(fit_json.get("excluded_runs") or []))
    sections += [
        scaling_check_section(fit_json.get("scaling_check") or {}),
        fit_section(fit_json),
        holdout_section(fit_json.get("holdout"), fit_json.get("seed_noise")),
        seed_noise_section(fit_json.get("seed_noise")),
        tournament_section(fit_json.get("tournament")),
        diagnostics_section(fit_json),
    ]
    for step in STUDY_STEPS:  # each step's sections, in the list's order, when its fields hold results
        sections += step.sections(fit_json)
    if (fit_json.get("sensitivity") or {}).get("rows"):
        sections.append(sensitivity_section(fit_json.get("sensitivity")))
    if summary.get("has_stop_info", True):
        sections.append(non_converged_section(fit_json.get("non_converged") or [], x))
    sections.append(preprocessing_section(fit_json.get("preprocessing")))
    if plots:
        sections.append(figures_section(plots, x))
    sections.append(glossary_section(df, fit_json.get("preprocessing")))
    return "\n\n".join(sections) + "\n"


def write_report(
    path: Path | str,
    fit_json: Mapping[str, Any],
    df: pd.DataFrame | None = None,
    *,
    plots: Mapping[str, str] | None = None,
    title: str | None = None,
) -> Path:
    """Render and write ``report.md``; plot paths should be relative to its directory."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_report(fit_json, df, plots=plots, title=title))
    return path
