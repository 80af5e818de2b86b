"""The downstream step of a study analysis: how each downstream task's metric scales with the data U.

Accuracy is bounded (chance below, 1 above), so it is not fitted like a loss. Per task, mode and objective:

* **error power law**: the error left above perfect, normalised by chance, ``e = (1 - acc) / (1 - chance)``,
  fitted as ``e(U) = A·U^(−α)`` in log-log space; a 95% interval for α from a run-level bootstrap.
* **two-step prediction** (the OLMo ladder's "loss → accuracy"): step 1 a power law of the pretraining
  test loss in U, step 2 ``acc = chance + (1 − chance)·σ(−k·(L − L0))``; fitted without the largest U, it
  predicts that size's accuracy (the held-out error is reported).
* **at chance**: a size whose mean accuracy lies within the binomial 95% half-width of chance is at chance;
  the report says so plainly. **Saturation**: the smallest U that reaches 90% of the task's largest gain over
  chance; the task that gets there at the smallest U saturates first.
* **CLM against MLM** at equal U when the study has both objectives.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.optimize import curve_fit

from ..render.figure import COLORS, new_figure, save
from ..render.text import markdown_table, pct, short
from .base import Step, StepResult

COLUMN = re.compile(r"^ds_(?P<task>.+)_(?P<mode>probe|finetune|zeroshot|pseudo)_accuracy$")
PLOT_FILE = "downstream_accuracy.png"
SATURATION_SHARE = 0.9
Z95 = 1.96
#: the fit.json field this step fills and what it holds (rendered into the docs by `make docs`)
FIELDS = {
    "downstream": "downstream tasks against U (`scaling_analysis.downstream`): {tasks: [{task, mode "
    "(probe | finetune | zeroshot | pseudo), objective, sizes: [{U, accuracy, macro_f1, loss, chance, "
    "n_test, half_width (binomial 95%), at_chance}], at_chance_everywhere, error_power_law {alpha, A, "
    "alpha_interval (bootstrap 95%)} of (1 − acc)/(1 − chance) = A·U^(−α), two_step {k, L0, held_out_U, "
    "predicted_loss, predicted_accuracy, measured_accuracy, abs_error} (U → test loss → sigmoid accuracy, "
    "fitted without the largest U), saturated_at (smallest U reaching 90% of the largest gain over chance), "
    "still_rising}], saturates_first {task, mode, objective, saturated_at}, at_chance (tasks at chance at "
    "every size), objective_comparison [{task, mode, U, clm, mlm, mlm_minus_clm}], plot}; {skipped} without "
    "downstream results",
}


def long_table(df: pd.DataFrame) -> pd.DataFrame:
    """One row per run, task and mode: U, objective, test_loss, accuracy, macro_f1, loss, chance, n_test."""
    rows = []
    for col in df.columns:
        match = COLUMN.match(str(col))
        if not match:
            continue
        prefix = f"ds_{match['task']}_{match['mode']}_"
        part = df[["U", "test_loss"]].copy()
        part["objective"] = df.get("objective", "clm")
        for metric in ("accuracy", "macro_f1", "loss", "chance", "n_test"):
            part[metric] = df.get(prefix + metric, np.nan)
        task = re.sub(r"^(classify|continue)_", r"\1/", match["task"])  # the column's `/` was `_`
        rows.append(part.assign(task=task, mode=match["mode"]).dropna(subset=["accuracy"]))
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame()


def _loglog_slope(u: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(slope, intercept) of log y on log u."""
    slope, intercept = np.polyfit(np.log(u), np.log(y), 1)
    return float(slope), float(intercept)


def error_power_law(g: pd.DataFrame, n_resamples: int = 200, seed: int = 0) -> dict[str, Any]:
    """``e(U) = A·U^(−α)`` on the chance-normalised error, with a bootstrap 95% interval for α."""
    chance = float(g["chance"].iloc[0])
    err = ((1 - g["accuracy"]) / (1 - chance)).clip(lower=1e-3).to_numpy()
    u = g["U"].to_numpy(dtype=float)
    if len(np.unique(u)) < 3:
        return {"skipped": "fewer than 3 sizes"}
    slope, intercept = _loglog_slope(u, err)
    rng, alphas = np.random.default_rng(seed), []
    for _ in range(n_resamples):
        pick = rng.integers(0, len(u), len(u))
        if len(np.unique(u[pick])) >= 2:
            alphas.append(-_loglog_slope(u[pick], err[pick])[0])
    lo, hi = np.percentile(alphas, [2.5, 97.5]) if alphas else (math.nan, math.nan)
    return {"alpha": -slope, "A": math.exp(intercept), "alpha_interval": [float(lo), float(hi)]}


def _sigmoid_acc(loss: np.ndarray, k: float, l0: float, chance: float) -> np.ndarray:
    return chance + (1 - chance) / (1 + np.exp(np.clip(k * (loss - l0), -50, 50)))


def two_step(g: pd.DataFrame) -> dict[str, Any]:
    """Fit U → loss (power law) and loss → accuracy (sigmoid) without the largest U; predict it."""
    chance, top = float(g["chance"].iloc[0]), g["U"].max()
    train, held = g[g["U"] < top], g[g["U"] == top]
    if train["U"].nunique() < 3:
        return {"skipped": "fewer than 3 sizes below the largest"}
    slope, intercept = _loglog_slope(train["U"].to_numpy(float), train["test_loss"].to_numpy(float))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            (k, l0), _ = curve_fit(
                lambda x, k, l0: _sigmoid_acc(x, k, l0, chance),
                train["test_loss"].to_numpy(float),
                train["accuracy"].to_numpy(float),
                p0=[2.0, float(train["test_loss"].median())],
                maxfev=5000,
            )
    except (RuntimeError, ValueError) as exc:
        return {"skipped": f"sigmoid fit failed: {exc}"}
    predicted_loss = math.exp(intercept) * float(top) ** slope
    predicted = float(_sigmoid_acc(np.array([predicted_loss]), k, l0, chance)[0])
    measured = float(held["accuracy"].mean())
    return {
        "k": float(k),
        "L0": float(l0),
        "held_out_U": float(top),
        "predicted_loss": predicted_loss,
        "predicted_accuracy": predicted,
        "measured_accuracy": measured,
        "abs_error": abs(predicted - measured),
    }


def size_rows(g: pd.DataFrame) -> list[dict[str, Any]]:
    """Mean metrics per size, and whether that size is at chance (within the binomial 95% half-width)."""
    rows = []
    for _, s in g.groupby("U"):
        chance, n = float(s["chance"].iloc[0]), float(s["n_test"].sum())
        half_width = Z95 * math.sqrt(chance * (1 - chance) / max(n, 1))
        acc = float(s["accuracy"].mean())
        rows.append({
            "U": float(s["U"].iloc[0]), "accuracy": acc, "macro_f1": float(s["macro_f1"].mean()),
            "loss": float(s["loss"].mean()), "chance": chance, "n_test": int(n),
            "half_width": half_width, "at_chance": bool(abs(acc - chance) <= half_width),
        })  # fmt: skip
    return rows


def saturation(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The smallest U reaching ``SATURATION_SHARE`` of the largest gain over chance; still rising?"""
    gains = [r["accuracy"] - r["chance"] for r in rows]
    best = max(gains)
    if best <= 0 or all(r["at_chance"] for r in rows):
        return {"saturated_at": None, "still_rising": False}
    first = next(r["U"] for r, g in zip(rows, gains, strict=True) if g >= SATURATION_SHARE * best)
    rising = len(rows) > 1 and gains[-1] - gains[-2] > rows[-1]["half_width"]
    return {"saturated_at": first, "still_rising": bool(rising)}


def task_entry(g: pd.DataFrame, seed: int) -> dict[str, Any]:
    rows = size_rows(g)
    return {
        "task": str(g["task"].iloc[0]),
        "mode": str(g["mode"].iloc[0]),
        "objective": str(g["objective"].iloc[0]),
        "sizes": rows,
        "at_chance_everywhere": all(r["at_chance"] for r in rows),
        "error_power_law": error_power_law(g, seed=seed),
        "two_step": two_step(g),
        **saturation(rows),
    }


def objective_comparison(table: pd.DataFrame) -> list[dict[str, Any]]:
    """Accuracy of MLM minus CLM per task and U (zero-shot CLM against pseudo-likelihood MLM as one mode)."""
    if set(table["objective"]) != {"clm", "mlm"}:
        return []
    t = table.assign(mode=table["mode"].replace({"zeroshot": "zero-shot", "pseudo": "zero-shot"}))
    means = t.groupby(["task", "mode", "U", "objective"])["accuracy"].mean().unstack("objective").dropna()
    rows = []
    for key, r in means.iterrows():
        task, mode, u = (str(k) for k in key)  # type: ignore[attr-defined]
        rows.append({"task": str(task), "mode": str(mode), "U": float(u), "clm": float(r["clm"]),
                     "mlm": float(r["mlm"]), "mlm_minus_clm": float(r["mlm"] - r["clm"])})  # fmt: skip
    return rows


def accuracy_plot(entries: list[dict[str, Any]], path: Path) -> None:
    """Accuracy against U per task (one panel each), a line per mode and objective, chance dashed."""
    tasks = sorted({e["task"] for e in entries})
    fig, axes = new_figure(len(tasks), width=4.2, height=3.6)
    for ax, task in zip(axes, tasks, strict=True):
        for i, e in enumerate(e for e in entries if e["task"] == task):
            u = [r["U"] for r in e["sizes"]]
            ax.plot(u, [r["accuracy"] for r in e["sizes"]], "o-", color=COLORS[i % len(COLORS)],
                    label=f"{e['objective']} {e['mode']}")  # fmt: skip
            ax.axhline(e["sizes"][0]["chance"], color="gray", ls="--", lw=1)
        ax.set_xscale("log")
        ax.set_xlabel("U (unique tokens)")
        ax.set_ylabel("test accuracy")
        ax.set_title(task, fontsize=9)
        ax.legend(fontsize=7)
    save(fig, path)


def step_downstream(df: pd.DataFrame, out: Path, seed: int = 0) -> StepResult:
    """Every downstream result of a study; ``{"skipped": ...}`` when the runs have none."""
    table = long_table(df) if "U" in df and "test_loss" in df else pd.DataFrame()
    if table.empty:
        reason = "no downstream results in the runs (train with downstream=suite)"
        return StepResult.skip("downstream", FIELDS, reason)
    entries = [task_entry(g, seed) for _, g in table.groupby(["task", "mode", "objective"])]
    ranked = sorted((e for e in entries if e["saturated_at"] is not None), key=lambda e: e["saturated_at"])
    step = StepResult("downstream", {
        "downstream": {
            "tasks": entries,
            "saturates_first": {k: ranked[0][k] for k in ("task", "mode", "objective", "saturated_at")}
            if ranked else None,
            "at_chance": [f"{e['task']} ({e['objective']} {e['mode']})" for e in entries
                          if e["at_chance_everywhere"]],
            "objective_comparison": objective_comparison(table),
        }
    })  # fmt: skip
    path = out / PLOT_FILE
    step.figure("downstream_accuracy", path, lambda p: accuracy_plot(entries, p), fit_field="downstream",
                label="downstream")  # fmt: skip
    return step


def _fit_cells(e: dict[str, Any]) -> list[str]:
    epl, ts = e["error_power_law"], e["two_step"]
    alpha = "—" if "skipped" in epl else f"{short(epl['alpha'], 3)} [{short(epl['alpha_interval'][0], 3)}, "
    alpha += "" if "skipped" in epl else f"{short(epl['alpha_interval'][1], 3)}]"
    two = "—" if "skipped" in ts else f"{pct(ts['predicted_accuracy'])} vs {pct(ts['measured_accuracy'])}"
    return [alpha, two]


def _flag(size: dict[str, Any]) -> str:
    """`` (chance)`` within the binomial half-width of chance, `` (below chance)`` beneath it."""
    if size["at_chance"]:
        return " (chance)"
    return " (below chance)" if size["accuracy"] < size["chance"] else ""


def downstream_section(ds: dict[str, Any]) -> str:
    """The report section: accuracy per size, at-chance flags, fits, saturation, CLM against MLM."""
    lines = ["## Downstream tasks", ""]
    lines.append(
        "Test accuracy per task against U (mean over seeds); *at chance* marks a size whose accuracy is "
        "within the binomial 95% half-width of chance. Error power law: α of "
        "`(1 − acc)/(1 − chance) = A·U^(−α)` with a bootstrap 95% interval. Two-step: accuracy at the "
        "largest U predicted from the smaller sizes "
        "(U → test loss → accuracy by a sigmoid), against the measured one."
    )
    sizes = sorted({r["U"] for e in ds["tasks"] for r in e["sizes"]})
    rows = []
    for e in ds["tasks"]:
        by_u = {r["U"]: r for r in e["sizes"]}
        cells = [f"{pct(by_u[u]['accuracy'])}{_flag(by_u[u])}" if u in by_u else "—" for u in sizes]
        chance = pct(e["sizes"][0]["chance"])
        rows.append([e["task"], f"{e['objective']} {e['mode']}", chance, *cells, *_fit_cells(e)])
    header = ["task", "objective mode", "chance", *(f"U={short(u)}" for u in sizes), "α (error)", "two-step"]
    lines += ["", markdown_table(header, rows)]
    if ds["at_chance"]:
        lines += ["", f"**At chance at every size** (no transfer measured): {', '.join(ds['at_chance'])}."]
    first = ds.get("saturates_first")
    if first:
        lines += [
            "",
            f"Saturates first: **{first['task']}** ({first['objective']} {first['mode']}), reaching "
            f"{SATURATION_SHARE:.0%} of its largest gain over chance at U = {short(first['saturated_at'])}.",
        ]
    if ds["objective_comparison"]:
        cmp_rows = [[r["task"], r["mode"], short(r["U"]), pct(r["clm"]), pct(r["mlm"]),
                     pct(r["mlm_minus_clm"])] for r in ds["objective_comparison"]]  # fmt: skip
        lines += ["", "CLM against MLM at equal data (accuracy; pretraining losses are in different units: "
                  "nats per next token against nats per masked token, so only the tasks compare):", "",
                  markdown_table(["task", "mode", "U", "clm", "mlm", "mlm − clm"], cmp_rows)]  # fmt: skip
    if ds.get("plot"):
        lines += ["", f"![downstream accuracy against U]({ds['plot']})"]
    return "\n".join(lines)


def sections(fit_json: Mapping[str, Any]) -> list[str]:
    """The report section, when some task has results."""
    ds = fit_json.get("downstream") or {}
    return [downstream_section(ds)] if ds.get("tasks") else []


STEP = Step(
    "downstream",
    FIELDS,
    run=lambda ctx: step_downstream(ctx.df, ctx.out, seed=ctx.seed),
    sections=sections,
)
