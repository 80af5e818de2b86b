"""The Markdown report of a study: rendered from ``fit.json`` (plus the run table), so the two never disagree.

Numbers are printed at full precision (``repr`` of the float) wherever they are parameters or intervals,
because rounded scaling-law parameters change predictions (scaling-fits.md §5.9); summaries use 3-4 digits.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .data import COLUMNS


def full(v: Any) -> str:
    """A number at full precision (shortest repr that round-trips), or the value as text."""
    if v is None:
        return "—"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        f = float(v)
        return repr(f) if math.isfinite(f) else str(f)
    return str(v)


def short(v: Any, digits: int = 4) -> str:
    """A number with ``digits`` significant digits (for summaries, never for fitted parameters)."""
    if v is None:
        return "—"
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v))
    if isinstance(v, (int, np.integer)):
        return f"{int(v):,}"
    if isinstance(v, (float, np.floating)):
        f = float(v)
        if not math.isfinite(f):
            return str(f)
        return f"{f:.{digits}g}"
    return str(v)


def pct(v: Any) -> str:
    if v is None or not isinstance(v, (int, float, np.floating)) or not math.isfinite(float(v)):
        return "—"
    return f"{100 * float(v):.3g}%"


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def cell(x: Any) -> str:
        return str(x).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def _interval(iv: Any) -> str:
    if iv is None or len(iv) != 2:
        return "—"
    return f"[{full(iv[0])}, {full(iv[1])}]"


# -------------------------------------------------------------------------------------------- sections


def summary_section(summary: Mapping[str, Any]) -> str:
    """Runs, sizes, seeds, ranges and cost, as a short bullet list."""
    x = summary.get("x", "U")
    lines = ["## Study summary", ""]
    runs = f"- **Runs:** {summary.get('n_runs', 0)} fitted"
    if summary.get("n_failed"):
        runs += f", {summary['n_failed']} failed (not fitted: {', '.join(summary.get('failed_run_ids', []))})"
    lines.append(runs)
    sizes = summary.get("sizes") or []
    shown = ", ".join(short(s) for s in sizes[:12]) + (" …" if len(sizes) > 12 else "")
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
    for col, label in (("D_range", "D (tokens seen)"), ("epochs_range", "epochs (D / U)"), ("N_range", "N")):
        if summary.get(col):
            lo, hi = summary[col]
            lines.append(f"- **{label}:** {short(lo)}" + (f" – {short(hi)}" if hi != lo else ""))
    if summary.get("loss_range"):
        lo, hi = summary["loss_range"]
        lines.append(f"- **loss ({summary.get('loss_metric', 'loss')}):** {short(lo)} – {short(hi)}")
    if summary.get("total_wall_time_s") is not None:
        s = float(summary["total_wall_time_s"])
        lines.append(f"- **Total wall time:** {short(s, 4)} s ({short(s / 3600, 3)} h)")
    if summary.get("n_non_converged"):
        lines.append(
            f"- **Not converged (token cap hit):** {summary['n_non_converged']} run(s), listed below"
        )
    return "\n".join(lines)


def scaling_check_section(check: Mapping[str, Any]) -> str:
    return "## Does this look like a scaling curve?\n\n" + str(check.get("sentence", "not checked"))


def fit_section(fj: Mapping[str, Any]) -> str:
    """The law, its parameters with CIs (full precision) and the fit's vital statistics."""
    conf = fj.get("confidence", 0.95)
    lines = ["## Fit", ""]
    variables = ", ".join(f"{v} → `{c}`" for v, c in (fj.get("variables") or {}).items())
    lines.append(
        f"**Law:** `{fj.get('law')}`: {fj.get('formula')}  (variables: {variables}; loss: `{fj.get('loss_metric')}`)"
    )
    if fj.get("variables_reason"):
        lines.append(f"\n*{fj['variables_reason']}*")
    lines.append("")
    intervals = fj.get("intervals") or {}
    ses = fj.get("std_errors") or {}
    rows = []
    for name, value in (fj.get("params") or {}).items():
        fixed = name in (fj.get("fixed") or {})
        rows.append(
            [
                name,
                full(value) + (" (fixed)" if fixed else ""),
                _interval(intervals.get(name)),
                full(ses.get(name)),
            ]
        )
    lines.append(
        _table(["parameter", "estimate", f"{conf:.0%} CI (bootstrap)", "std. error (bootstrap)"], rows)
    )
    boot = fj.get("bootstrap") or {}
    if boot.get("skipped"):
        lines.append(f"\nBootstrap skipped: {boot['skipped']}")
    elif boot:
        lines.append(
            f"\nBootstrap: {boot.get('n_resamples')} resamples of runs with replacement (seed {boot.get('seed')}), "
            f"{boot.get('n_failed', 0)} failed; percentile intervals."
        )
    derived = fj.get("derived") or {}
    if derived:
        lines += ["", "**Derived quantities**", ""]
        drows = [
            [name, d.get("description", ""), full(d.get("value")), _interval(d.get("interval"))]
            for name, d in derived.items()
        ]
        lines.append(_table(["quantity", "meaning", "estimate", f"{conf:.0%} CI"], drows))
    m = fj.get("metrics") or {}
    lines += [
        "",
        f"Objective (summed Huber, δ = {full(fj.get('huber_delta'))}, on log loss): {full(fj.get('objective'))} "
        f"over {fj.get('n_points')} runs. In-sample: MAPE {pct(m.get('mape'))}, max ARE {pct(m.get('max_are'))}, "
        f"R² {short(m.get('r2'))}.",
    ]
    return "\n".join(lines)


def holdout_section(ho: Mapping[str, Any] | None) -> str:
    lines = ["## Held-out extrapolation", ""]
    if not ho:
        return "\n".join([*lines, "Not run."])
    if ho.get("skipped"):
        return "\n".join([*lines, f"Skipped: {ho['skipped']}"])
    lines.append(
        f"Fit on runs with `{ho.get('by')}` < {short(ho.get('threshold'))} ({ho.get('n_train')} runs), predict the "
        f"{ho.get('n_test')} held-out run(s) at or above it: **MAPE {pct(ho.get('mape'))}, "
        f"max ARE {pct(ho.get('max_are'))}**. This, not in-sample fit quality, is what says whether the law "
        "extrapolates."
    )
    pts = ho.get("points") or []
    if pts:
        x = ho.get("x") or ho.get("by")
        rows = [
            [
                p.get("run_id", "—"),
                short(p.get(x)),
                full(p.get("observed")),
                full(p.get("predicted")),
                pct(p.get("abs_rel_error")),
            ]
            for p in pts
        ]
        lines += ["", _table(["run", x, "observed", "predicted", "abs. rel. error"], rows)]
    return "\n".join(lines)


def comparison_section(cmp: Mapping[str, Any] | None) -> str:
    lines = ["## Law comparison", ""]
    if not cmp:
        return "\n".join([*lines, "Not run."])
    if cmp.get("skipped"):
        return "\n".join([*lines, f"Skipped: {cmp['skipped']}"])
    table = cmp.get("table") or []
    if table:
        wanted = ("law", "n_params", "holdout_mape", "holdout_max_are", "penalised_score", "aic", "bic", "r2")
        cols = [c for c in wanted if c in table[0]] + [
            c for c in ("converged", "degenerate", "chosen") if c in table[0]
        ]
        rows = [[_fmt_cell(r.get(c)) for c in cols] for r in table]
        lines.append(_table(cols, rows))
    for name, why in (cmp.get("excluded") or {}).items():
        lines.append(f"\n- `{name}` not compared: {why}")
    lines.append(f"\n**Chosen:** `{cmp.get('chosen')}`. {cmp.get('reason', '')}")
    return "\n".join(lines)


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
        f"- optimiser converged: **{d.get('converged')}**; gradient norm at the optimum {short(d.get('grad_norm'), 3)}; "
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


def non_converged_section(runs: Sequence[Mapping[str, Any]], x: str) -> str:
    lines = ["## Non-converged runs", ""]
    if not runs:
        return "\n".join([*lines, "None: every fitted run stopped by early stopping."])
    lines.append(
        "These runs hit the token cap before early stopping fired, so their loss may still have been falling "
        "(an upper bound on the converged loss). They are fitted like the others and drawn hollow in the plots."
    )
    rows = [
        [r.get("run_id"), short(r.get(x)), r.get("seed", "—"), full(r.get("loss")), r.get("stop_reason", "—")]
        for r in runs
    ]
    return "\n".join([*lines, "", _table(["run", x, "seed", "loss", "stop reason"], rows)])


def preprocessing_section(pre: Mapping[str, Any] | None) -> str:
    lines = ["## Preprocessing", ""]
    pre = pre or {}
    lines.append(f"- source: {pre.get('source', '—')} `{pre.get('path', '')}`")
    for key in ("loss_metric", "n_definition", "status_filter", "column_mapping"):
        if pre.get(key) not in (None, {}, ""):
            lines.append(f"- {key}: `{pre[key]}`")
    if pre.get("n_rows_raw") is not None:
        lines.append(f"- rows: {pre.get('n_rows_raw')} read, {pre.get('n_rows')} fitted")
    steps = pre.get("steps") or []
    if not steps:
        lines.append("- no rows excluded or transformed")
    for s in steps:
        rest = ", ".join(f"{k}={v}" for k, v in s.items() if k not in ("rule", "run_ids", "dropped_values"))
        extra = ""
        if s.get("dropped_values"):
            extra = f"; dropped values {[short(v) for v in s['dropped_values']]}"
        if s.get("run_ids"):
            extra = f"; runs {s['run_ids']}"
        lines.append(f"- **{s.get('rule')}**: {rest}{extra}")
    return "\n".join(lines)


def figures_section(plots: Mapping[str, str]) -> str:
    lines = ["## Figures", ""]
    captions = {
        "scaling_curve": "Loss vs data: runs per seed, fit (dashed past the data), bootstrap band, held-out points",
        "residuals": "Residuals of every run (observed / predicted − 1)",
        "law_comparison": "Candidate laws overlaid; the chosen one thick",
        "isoflop": "IsoFLOP curves and the compute-optimal frontier",
        "conditions": "Per-condition curves",
        "domains": "Test loss per evaluation domain (one curve per domain)",
    }
    for name, rel in plots.items():
        lines += [f"### {captions.get(name, name)}", "", f"![{name}]({rel})", ""]
    return "\n".join(lines).rstrip()


def glossary_section(df: pd.DataFrame | None) -> str:
    """Column glossary: every schema column present in the run table (patterns like val_loss_<domain> once)."""
    lines = ["## Column glossary (`runs.parquet`)", ""]
    present = set(df.columns) if df is not None else set(COLUMNS)
    rows = []
    for name, doc in COLUMNS.items():
        if "<" in name:
            prefix = name.split("<")[0]
            if any(c.startswith(prefix) and c not in COLUMNS for c in present):
                rows.append([f"`{name}`", doc])
        elif name in present:
            rows.append([f"`{name}`", doc])
    return "\n".join([*lines, _table(["column", "meaning"], rows)])


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
    sections = [
        "\n".join(head),
        summary_section(summary),
        scaling_check_section(fit_json.get("scaling_check") or {}),
        fit_section(fit_json),
        holdout_section(fit_json.get("holdout")),
        comparison_section(fit_json.get("comparison")),
        diagnostics_section(fit_json),
        non_converged_section(fit_json.get("non_converged") or [], x),
        preprocessing_section(fit_json.get("preprocessing")),
    ]
    if plots:
        sections.append(figures_section(plots))
    sections.append(glossary_section(df))
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
