"""Which resource limits each run of a joint N x D study: the model or the data.

Under a Chinchilla-type fit ``L = E + A/N^α + B/D^β`` the reducible loss of a run splits into a model term
``A/N^α`` and a data term ``B/D^β``. A run is **data-limited** when its data term is the larger (more data
would lower its loss more than the same relative growth of the model would, since both terms fall with the
same power of their own resource at a rate set by α and β) and **model-limited** otherwise. The ratio of
the terms says how clear-cut that is; ``D/N`` against the compute-optimal tokens per parameter at the run's
own compute says which side of the frontier it sits on.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

from ..engine.derived import chinchilla_frontier
from ..render.text import markdown_table, short
from .base import Step, StepResult

CHINCHILLA_PARAMS = {"A", "B", "alpha", "beta"}
#: the fit.json field this step fills and what it holds (rendered into the docs by `make docs`)
FIELDS = {
    "regimes": "per run of a Chinchilla-type fit (`scaling_analysis.regimes`): {runs: [{run_id, N, D, "
    "model_term A/N^α, data_term B/D^β, regime (data-limited | model-limited: the larger term), term_ratio, "
    "N_over_N_opt (N against the compute-optimal N at the run's own 6ND)}], counts, columns {N, D}}; or "
    "{skipped}",
}


def run_regimes(df: pd.DataFrame, params: Mapping[str, float], mapping: Mapping[str, str]) -> list[dict]:
    """One entry per run: N, D (the columns the law's N and D were fitted against), both terms, regime."""
    n_col, d_col = mapping.get("N", "N"), mapping.get("D", "D")
    a, b, alpha, beta = (float(params[k]) for k in ("A", "B", "alpha", "beta"))
    rows = []
    for _, row in df.iterrows():
        n, d = float(row[n_col]), float(row[d_col])
        model_term, data_term = a / n**alpha, b / d**beta
        n_opt, _ = chinchilla_frontier(params, 6.0 * n * d)  # at the run's own compute C = 6ND
        rows.append({
            "run_id": row.get("run_id", ""),
            "N": n,
            "D": d,
            "model_term": model_term,
            "data_term": data_term,
            "regime": "data-limited" if data_term > model_term else "model-limited",
            "term_ratio": max(model_term, data_term) / min(model_term, data_term),
            "N_over_N_opt": n / n_opt,
        })  # fmt: skip
    return rows


def step_regimes(fit: Any, df: pd.DataFrame, mapping: Mapping[str, str]) -> StepResult:
    """fit.json field ``regimes`` (a Chinchilla-type fit only)."""
    params = getattr(fit, "params", None) or {}
    if not set(params) >= CHINCHILLA_PARAMS:
        reason = "needs a Chinchilla-type fit (--law chinchilla or data_constrained)"
        return StepResult.skip("regimes", FIELDS, reason)
    rows = run_regimes(df, params, mapping)
    counts = {r: sum(x["regime"] == r for x in rows) for r in ("data-limited", "model-limited")}
    columns = {"N": mapping.get("N"), "D": mapping.get("D")}
    return StepResult("regimes", {"regimes": {"runs": rows, "counts": counts, "columns": columns}})


def regimes_section(fields: Mapping[str, Any]) -> str:
    """The report's regime table: each run's model and data terms and which one limits it."""
    rows = sorted(fields["runs"], key=lambda r: (r["N"], r["D"]))
    table = [
        [f"{r['N']:,.0f}", f"{r['D']:,.0f}", short(r["model_term"], 3), short(r["data_term"], 3),
         r["regime"], short(r["term_ratio"], 3), short(r["N_over_N_opt"], 3)]
        for r in rows
    ]  # fmt: skip
    counts, cols = fields["counts"], fields["columns"]
    return "\n".join([
        "## Regime of each run",
        "",
        f"Under the fitted law each run's reducible loss is a model term A/N^α and a data term B/D^β (N = "
        f"`{cols['N']}`, D = `{cols['D']}`): the larger one limits it. {counts['data-limited']} runs are "
        f"data-limited, {counts['model-limited']} model-limited. N/N_opt < 1: smaller than compute-optimal "
        "at the run's own compute 6ND (more parameters would pay), > 1: larger.",
        "",
        markdown_table(["N", "D", "A/N^α", "B/D^β", "regime", "larger/smaller", "N/N_opt"], table),
    ])  # fmt: skip


def sections(fit_json: Mapping[str, Any]) -> list[str]:
    """The report section, when the fit was Chinchilla-type."""
    fields = fit_json.get("regimes") or {}
    return [regimes_section(fields)] if fields.get("runs") else []


STEP = Step("regimes", FIELDS, run=lambda ctx: step_regimes(ctx.fit, ctx.df, ctx.mapping), sections=sections)
