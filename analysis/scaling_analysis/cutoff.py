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

from .compare import holdout_extrapolation
from .mdformat import markdown_table, short

TARGET = 0.03
MIN_SIZES = 5


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


def cutoff_section(fields: Mapping[str, Any]) -> str:
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
