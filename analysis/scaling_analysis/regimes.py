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

from .derived import chinchilla_frontier
from .mdformat import markdown_table, short

CHINCHILLA_PARAMS = {"A", "B", "alpha", "beta"}


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


def step_regimes(fit: Any, df: pd.DataFrame, mapping: Mapping[str, str]) -> dict[str, Any]:
    """fit.json field ``regimes`` (a Chinchilla-type fit only)."""
    params = getattr(fit, "params", None) or {}
    if not set(params) >= CHINCHILLA_PARAMS:
        return {"regimes": {"skipped": "needs a Chinchilla-type fit (--law chinchilla or data_constrained)"}}
    rows = run_regimes(df, params, mapping)
    counts = {r: sum(x["regime"] == r for x in rows) for r in ("data-limited", "model-limited")}
    return {
        "regimes": {"runs": rows, "counts": counts, "columns": {"N": mapping.get("N"), "D": mapping.get("D")}}
    }


def regimes_section(fields: Mapping[str, Any]) -> str:
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
