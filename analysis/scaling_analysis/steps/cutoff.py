"""Where the law extrapolates: the held-out check again with the smallest sizes left out, one more each time.

A curve that steepens (small-data region at the low end) makes a power law fitted over the whole range miss
the largest size. Refitting from each lower cutoff (every row at U >= cutoff, the largest size still held out)
shows from which size on the law predicts the largest one within ``TARGET`` (3%), and how many fitting sizes
that leaves; the report turns it into what a study would need: its sizes from that cutoff up, and more of
them above it. One-variable fits with 5+ distinct sizes only.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from ..engine import holdout_extrapolation
from ..render.text import markdown_table, short
from .base import Step, StepResult, StudyContext

TARGET = 0.03
MIN_SIZES = 5
#: the fit.json field this step fills and what it holds (rendered into the docs by `make docs`)
FIELDS = {
    "cutoff_scan": "the held-out check from each lower cutoff (`scaling_analysis.steps.cutoff`; "
    "one-variable fits without conditions, 5+ sizes): {x, held_out, target (0.03), rows: [{cutoff, "
    "n_fit_sizes, predicted, "
    "observed, rel_error}], first_within_target (the smallest cutoff predicting the largest size within the "
    "target, or null)}; or {skipped}",
}


def cutoff_scan(df: pd.DataFrame, law: Any, x: str, fit_kwargs: Mapping[str, Any], n_free: int) -> dict:
    """fit.json field ``cutoff_scan``: per lower cutoff, the held-out error on the largest size."""
    sizes = np.sort(pd.unique(df[x].to_numpy(dtype=float)))
    if len(sizes) < MIN_SIZES:
        return {"skipped": f"{len(sizes)} distinct {x} values; the scan needs {MIN_SIZES}"}
    rows: list[dict[str, Any]] = []
    for cutoff in sizes[: len(sizes) - n_free]:  # leave n_free sizes to fit, plus the held-out one
        part = df[df[x].to_numpy(dtype=float) >= cutoff]
        try:
            ho = holdout_extrapolation(law, part, by=x, n_holdout_values=1, **dict(fit_kwargs))
        except (ValueError, RuntimeError) as exc:
            rows.append({"cutoff": float(cutoff), "skipped": f"failed: {exc}"})
            continue
        rows.append({
            "cutoff": float(cutoff),
            "n_fit_sizes": int(part[x].nunique()) - 1,
            "predicted": float(np.mean(ho.predictions["predicted"])),
            "observed": float(np.mean(ho.predictions["observed"])),
            "rel_error": ho.mape,
        })  # fmt: skip
    within = [r for r in rows if float(r.get("rel_error", np.inf)) <= TARGET]
    return {
        "x": x,
        "held_out": float(sizes[-1]),
        "target": TARGET,
        "rows": rows,
        "first_within_target": within[0]["cutoff"] if within else None,
    }


def step_cutoff(ctx: StudyContext) -> StepResult:
    """fit.json ``cutoff_scan``: the held-out check from each lower cutoff (one-variable, one-condition)."""
    conditions = ctx.done.get("conditions")
    if len(ctx.design_cols) != 1 or (conditions is not None and conditions.skipped is None):
        return StepResult.skip("cutoff", FIELDS, "only for one-variable fits without conditions")
    scan = cutoff_scan(ctx.df, ctx.law, ctx.x, ctx.fit_kwargs, ctx.n_free)
    return StepResult("cutoff", {"cutoff_scan": scan}, skipped=scan.get("skipped"))


def cutoff_section(fields: Mapping[str, Any]) -> str:
    """The report's cutoff table and what it means for the sizes a study needs."""
    x, rows = fields["x"], [r for r in fields["rows"] if "rel_error" in r]
    table = [
        [f"{r['cutoff']:,.0f}", r["n_fit_sizes"], short(r["predicted"], 4), short(r["observed"], 4),
         f"{100 * r['rel_error']:.1f}%"]
        for r in rows
    ]  # fmt: skip
    first, target = fields["first_within_target"], fields["target"]
    if first is None:
        verdict = (
            f"No cutoff predicts the largest {x} ({fields['held_out']:,.0f}) within {100 * target:.0f}%: the "
            f"curve is not a power law over any part of this range; larger sizes are needed."
        )
    else:
        n_fit = next(r["n_fit_sizes"] for r in rows if r["cutoff"] == first)
        verdict = (
            f"From {x} = {first:,.0f} up the law predicts the largest size within {100 * target:.0f}% "
            f"(fitted on {n_fit} sizes). A study that predicts reliably needs its sizes from there up, and "
            f"more than {n_fit} of them below the size it predicts: larger sizes, at roughly the cost of the "
            "largest run per doubling."
        )
    return "\n".join([
        "## Where the law extrapolates",
        "",
        f"The held-out check again, fitted only on the sizes at or above each cutoff (the largest {x} still "
        "held out):",
        "",
        markdown_table([f"{x} ≥", "sizes fitted", "predicted", "observed", "held-out error"], table),
        "",
        verdict,
    ])  # fmt: skip


def sections(fit_json: Mapping[str, Any]) -> list[str]:
    """The report section, when the scan ran."""
    fields = fit_json.get("cutoff_scan") or {}
    return [cutoff_section(fields)] if fields.get("rows") else []


STEP = Step("cutoff", FIELDS, run=step_cutoff, sections=sections)
