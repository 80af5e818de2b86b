"""The learning-rate step of a study analysis: the best learning rate per model size, and its rule in N.

For a study that sweeps ``optim.lr`` (axis ``lr``) at several model sizes (the ``hparams`` study):

* per (N, U) cell, the best learning rate by the **validation** loss (what the search optimised; the test
  set stays unseen): the grid point with the lowest loss, refined by a parabola in log lr through it and its
  two neighbours when it is interior; a best value at the edge of the grid is flagged (the optimum may lie
  outside it);
* the rule ``lr*(N) = c (N / N0)^x`` by least squares in log-log space over the sizes (N non-embedding, N0
  their geometric mean), with a 95% t-interval for x when there are 3 or more sizes;
* ``lr_rule.yaml``: the rule as the Hydra leaf ``conf/lr_rule/fitted.yaml`` (``lr_rule=fitted``), written
  back with ``python -m scaling_analysis <study> --write-lr-rule conf/lr_rule/fitted.yaml``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from ..render.figure import COLORS, new_figure, save
from ..render.text import markdown_table, short
from .base import Step, StepResult

LR_COLUMN = "axis_lr"
PLOT_FILE = "lr_rule.png"
RULE_FILE = "lr_rule.yaml"
LEAF_TARGET = "datascale.ladder_rules.PowerLR"
#: the fit.json field this step fills and what it holds (rendered into the docs by `make docs`)
FIELDS = {
    "lr_rule": "best learning rate per model size and its rule (`scaling_analysis.lr_rule`; a study "
    "sweeping optim.lr at 2+ sizes): {cells: [{N (non-embedding), U, grid, val_loss, grid_best, best "
    "(parabola-refined in log lr), at_grid_edge}], rule {coefficient, exponent, exponent_interval (95% t, "
    "3+ sizes), reference_params, source} of lr*(N) = coefficient·(N/reference_params)^exponent, leaf "
    "(lr_rule.yaml: the Hydra leaf for conf/lr_rule/fitted.yaml), plot}; or {skipped}",
}


def best_lr(cell: pd.DataFrame) -> dict[str, Any]:
    """The best learning rate of one (N, U) cell: grid argmin, parabola-refined in log lr when interior."""
    by_lr = cell.groupby(LR_COLUMN)["best_val_loss"].mean().sort_index()
    lrs, losses = np.log(by_lr.index.to_numpy(float)), by_lr.to_numpy(float)
    i = int(np.argmin(losses))
    edge = i in (0, len(lrs) - 1)
    log_best = lrs[i]
    if not edge:
        a, b, _ = np.polyfit(lrs[i - 1 : i + 2], losses[i - 1 : i + 2], 2)
        if a > 0:  # a proper minimum: its vertex, kept between the neighbours
            log_best = float(np.clip(-b / (2 * a), lrs[i - 1], lrs[i + 1]))
    return {
        "N": int(cell["N_non_embedding"].iloc[0]),
        "U": int(cell["U"].iloc[0]),
        "grid": [float(v) for v in by_lr.index],
        "val_loss": [float(v) for v in losses],
        "grid_best": float(by_lr.index[i]),
        "best": float(math.exp(log_best)),
        "at_grid_edge": bool(edge),
    }


def fit_rule(points: list[dict[str, Any]]) -> dict[str, Any]:
    """Least squares of log best lr on log N: coefficient at N0, exponent x and its 95% interval."""
    n = np.array([p["N"] for p in points], float)
    lr = np.array([p["best"] for p in points], float)
    n0 = float(np.exp(np.log(n).mean()))
    x, log_c = np.polyfit(np.log(n / n0), np.log(lr), 1)
    interval = None
    if len(points) >= 3:
        residuals = np.log(lr) - (log_c + x * np.log(n / n0))
        s2 = float(residuals @ residuals) / (len(points) - 2)
        se = math.sqrt(s2 / float(((np.log(n / n0)) ** 2).sum()))
        half = float(stats.t.ppf(0.975, len(points) - 2)) * se
        interval = [float(x - half), float(x + half)]
    return {
        "coefficient": float(math.exp(log_c)),
        "exponent": float(x),
        "exponent_interval": interval,
        "reference_params": n0,
    }


def step_lr_rule(df: pd.DataFrame, out: Path, source: str = "") -> StepResult:
    """Best lr per size and the fitted rule; ``{"skipped": ...}`` unless lr was swept at 2+ sizes."""
    needed = {LR_COLUMN, "N_non_embedding", "U", "best_val_loss"}
    if not needed <= set(df.columns) or df[LR_COLUMN].nunique() < 2 or df["N_non_embedding"].nunique() < 2:
        return StepResult.skip("lr_rule", FIELDS, "the study does not sweep optim.lr at 2 or more sizes")
    done = df[df["status"] == "done"] if "status" in df else df
    groups = [g for _, g in done.groupby(["N_non_embedding", "U"])]
    cells = [best_lr(pd.DataFrame(g)) for g in groups if g[LR_COLUMN].nunique() >= 2]
    if len({c["N"] for c in cells}) < 2:
        return StepResult.skip("lr_rule", FIELDS, "fewer than 2 sizes with 2 or more learning rates")
    rule = fit_rule(cells) | {"source": f"{source or out} ({date.today().isoformat()})"}
    step = StepResult("lr_rule", {"lr_rule": {"cells": cells, "rule": rule, "leaf": RULE_FILE}})
    write_leaf(rule, out / RULE_FILE)
    step.files["lr_rule"] = out / RULE_FILE
    step.figure("lr_rule", out / PLOT_FILE, lambda p: rule_plot(cells, rule, p), fit_field="lr_rule",
                label="lr rule")  # fmt: skip
    return step


def write_leaf(rule: dict[str, Any], path: Path) -> None:
    """The rule as the Hydra leaf of ``conf/lr_rule/fitted.yaml``."""
    interval = rule["exponent_interval"]
    lines = [
        "# lr(N) = coefficient * (N / reference_params) ** exponent: the best learning rate per ladder",
        f"# size, fitted by scaling_analysis from {rule['source']}. Use it with lr_rule=fitted.",
        f"_target_: {LEAF_TARGET}",
        f"coefficient: {rule['coefficient']:.6g}",
        f"exponent: {rule['exponent']:.6g}",
        f"reference_params: {rule['reference_params']:.6g}",
        "exponent_interval: " + ("null" if interval is None else f"[{interval[0]:.6g}, {interval[1]:.6g}]"),
        f'source: "{rule["source"]}"',
    ]
    Path(path).write_text("\n".join(lines) + "\n")


def rule_plot(cells: list[dict[str, Any]], rule: dict[str, Any], path: Path) -> None:
    fig, (left, right) = new_figure(ncols=2, width=5.0, height=4.0)
    for i, cell in enumerate(sorted(cells, key=lambda c: c["N"])):
        color = COLORS[i % len(COLORS)]
        left.plot(cell["grid"], cell["val_loss"], "o-", color=color, label=f"N={cell['N']:,} U={cell['U']:,}")
        left.axvline(cell["best"], color=color, ls=":", lw=1)
    left.set(xscale="log", xlabel="peak learning rate", ylabel="best validation loss (nats)")
    left.legend(fontsize=7)
    n = np.array(sorted({c["N"] for c in cells}), float)
    right.plot(
        [c["N"] for c in cells], [c["best"] for c in cells], "o", color=COLORS[0], label="best per cell"
    )
    fitted = rule["coefficient"] * (n / rule["reference_params"]) ** rule["exponent"]
    right.plot(n, fitted, "-", color=COLORS[1], label=f"fit: lr ∝ N^{rule['exponent']:.2f}")
    right.set(xscale="log", yscale="log", xlabel="non-embedding parameters N", ylabel="best learning rate")
    right.legend(fontsize=8)
    save(fig, path)


def lr_rule_section(fields: dict[str, Any]) -> str:
    """The report's learning-rate section."""
    rule, cells = fields["rule"], fields["cells"]
    rows = [
        [f"{c['N']:,}", f"{c['U']:,}", ", ".join(short(v, 2) for v in c["grid"]), short(c["grid_best"], 3),
         short(c["best"], 3), "yes: widen the grid" if c["at_grid_edge"] else "no"]
        for c in sorted(cells, key=lambda c: (c["N"], c["U"]))
    ]  # fmt: skip
    interval = rule["exponent_interval"]
    ci = (
        "no interval with 2 sizes"
        if interval is None
        else f"95% interval [{interval[0]:.3f}, {interval[1]:.3f}]"
    )
    law = f"{rule['coefficient']:.3g} · (N / {rule['reference_params']:.3g})^{rule['exponent']:.3f}"
    lines = [
        "## Learning-rate rule",
        "",
        "Best peak learning rate per model size by validation loss (parabola in log lr around the best grid",
        "point), and the rule fitted through them:",
        "",
        f"**lr\\*(N) = {law}**"
        f" ({ci}); `lr_rule=fitted` uses it once written back with `--write-lr-rule conf/lr_rule/fitted.yaml`"
        f" (the leaf is `{fields['leaf']}` here).",
        "",
        markdown_table(["N (non-emb.)", "U", "grid", "grid best", "refined best", "at grid edge"], rows),
    ]
    if fields.get("plot"):
        lines += ["", f"![learning-rate rule]({fields['plot']})"]
    return "\n".join(lines)


def sections(fit_json: Mapping[str, Any]) -> list[str]:
    """The report section, when a rule was fitted."""
    fields = fit_json.get("lr_rule") or {}
    return [lr_rule_section(fields)] if fields.get("rule") else []


STEP = Step(
    "lr_rule",
    FIELDS,
    run=lambda ctx: step_lr_rule(ctx.df, ctx.out, ctx.source),
    sections=sections,
)
