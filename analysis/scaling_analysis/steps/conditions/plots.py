"""Figures of a condition study: per-condition curves with bands, k per condition, the domain matrix, the
mixing law and decision accuracy. Same conventions as ``render.figure`` (Agg canvas, no pyplot state, PNG on
``path``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from ...render.figure import COLORS, finish_axes, log_grid, new_figure, save
from ..checks import CONFIDENCE
from .effective import EffectiveDataFit
from .mixing import MixingLaw, mixture_matrix

BAND_ALPHA = 0.15


def joint_band(
    result: EffectiveDataFit, level: str, grid: np.ndarray
) -> tuple[np.ndarray, np.ndarray] | None:
    """Pointwise bootstrap band of one condition's curve from the joint fit (None without a bootstrap)."""
    boot = result.bootstrap
    if boot is None:
        return None
    law = result.fit.bound_law
    ok = boot.samples.loc[~boot.samples["failed"]]
    if len(ok) < 2:
        return None
    samples = ok[list(law.params)].to_dict("records")
    theta = np.vstack(
        [law.to_theta({**result.fit.params, **{str(k): float(v) for k, v in r.items()}}) for r in samples]
    )
    X = law.encode({"D": grid, "condition": np.full(grid.shape, level, dtype=object)})
    lp, _ = law.log_predict(theta, X)
    with np.errstate(all="ignore"):
        pred = np.exp(lp)
    q = (1 - CONFIDENCE) / 2
    return np.nanquantile(pred, q, axis=0), np.nanquantile(pred, 1 - q, axis=0)


def _panels(table: pd.DataFrame, axes: Sequence[str]) -> list[tuple[str, pd.DataFrame]]:
    """One panel per value of the last condition axis when there are several axes, else one panel."""
    if len(axes) < 2:
        return [("", table)]
    col = f"axis_{axes[-1]}"
    return [(f"{axes[-1]}={v}", g) for v, g in table.groupby(table[col].astype(str), sort=True)]


def _draw_condition(
    ax: Any, g: pd.DataFrame, level: str, color: str, result: EffectiveDataFit | None
) -> None:
    x = "U"
    ax.scatter(g[x], g["loss"], color=color, s=26, zorder=3, label=level)
    if result is None:
        means = g.groupby(x)["loss"].mean()
        ax.plot(means.index, means.to_numpy(), color=color, lw=1.0, alpha=0.7)
        return
    grid = log_grid(float(g[x].min()) / 1.5, float(g[x].max()) * 1.5)
    law = result.fit.bound_law
    pred = law.predict(result.fit.params, {"D": grid, "condition": np.full(grid.shape, level, dtype=object)})
    ax.plot(grid, pred, color=color, lw=1.5)
    band = joint_band(result, level, grid)
    if band is not None:
        ax.fill_between(grid, band[0], band[1], color=color, alpha=BAND_ALPHA, lw=0)
    own = result.per_condition.get(level)
    if own is not None:
        ax.plot(grid, own.predict({"U": grid}), color=color, lw=1.0, ls="--")


def condition_curves(
    table: pd.DataFrame,
    levels: Sequence[str],
    axes: Sequence[str],
    result: EffectiveDataFit | None,
    path: Path | str | None = None,
) -> Figure:
    """Loss vs U per condition: runs, the joint effective-data fit (solid) with its band, own fits dashed."""
    panels = _panels(table, axes)
    fig, axs = new_figure(len(panels))
    colors = {lvl: COLORS[i % len(COLORS)] for i, lvl in enumerate(levels)}
    for ax, (title, part) in zip(axs, panels, strict=True):
        for level, g in part.groupby("condition", sort=False):
            _draw_condition(ax, g, str(level), colors[str(level)], result)
        band_note = f", {CONFIDENCE:.0%} band" if result is not None and result.bootstrap is not None else ""
        finish_axes(
            ax, "U", "loss", title or f"per-condition curves (joint fit solid{band_note}; own fit dashed)"
        )
    return save(fig, path)


def multiplier_plot(
    rows: Sequence[Mapping[str, Any]], reference: str, path: Path | str | None = None
) -> Figure:
    """k per condition with its bootstrap interval, on a log axis with the reference at 1."""
    fig, (ax,) = new_figure(width=max(6.4, 1.1 * len(rows) + 2))
    xs = np.arange(len(rows))
    ks = np.array([r["k"] for r in rows], dtype=float)
    lo = np.array([(r["interval"] or [np.nan, np.nan])[0] for r in rows], dtype=float)
    hi = np.array([(r["interval"] or [np.nan, np.nan])[1] for r in rows], dtype=float)
    err = np.vstack([np.where(np.isfinite(lo), ks - lo, 0), np.where(np.isfinite(hi), hi - ks, 0)])
    ax.errorbar(xs, ks, yerr=np.clip(err, 0, None), fmt="o", color=COLORS[0], capsize=4)
    ax.axhline(1.0, color="0.5", lw=1, ls=":")
    ax.set_xticks(xs, [str(r["condition"]) for r in rows], rotation=30, ha="right", fontsize=8)
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:.3g}"))
    ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _pos: f"{v:.2g}"))
    ax.set_xlim(-0.5, len(rows) - 0.5)
    ax.set_ylabel("k: reference tokens per token")
    ax.set_xlabel(f"condition (reference, k = 1: {reference})", fontsize=9)
    ax.set_title(f"effective-data multiplier k ({CONFIDENCE:.0%} bootstrap interval)", fontsize=10)
    ax.grid(True, which="both", alpha=0.25)
    return save(fig, path)


def domain_matrix_plot(matrix: Mapping[str, Any], path: Path | str | None = None) -> Figure:
    """Heatmaps of test loss, train domain (rows) × eval domain (columns), one panel per size."""
    sizes = list(matrix["matrices"])
    fig, axs = new_figure(len(sizes), width=4.2, height=3.8)
    trains, evals = matrix["train_domains"], matrix["eval_domains"]
    values = [
        [[matrix["matrices"][s].get(t, {}).get(e, np.nan) for e in evals] for t in trains] for s in sizes
    ]
    vmin, vmax = float(np.nanmin(values)), float(np.nanmax(values))
    for ax, s, grid in zip(axs, sizes, values, strict=True):
        im = ax.imshow(np.array(grid, dtype=float), cmap="viridis_r", vmin=vmin, vmax=vmax)
        for (i, j), v in np.ndenumerate(np.array(grid, dtype=float)):
            if np.isfinite(v):
                light = (v - vmin) / max(vmax - vmin, 1e-12) < 0.5  # viridis_r: low losses are pale
                ax.text(j, i, f"{v:.3g}", ha="center", va="center", fontsize=8, color="k" if light else "w")
        ax.set_xticks(range(len(evals)), evals, rotation=30, ha="right", fontsize=8)
        ax.set_yticks(range(len(trains)), trains, fontsize=8)
        ax.set_xlabel("eval domain")
        ax.set_title(f"U = {s}", fontsize=9)
    axs[0].set_ylabel("train domain")
    fig.colorbar(im, ax=axs, shrink=0.8, label="test loss")
    return save(fig, path)


def mixing_plot(mixing: Mapping[str, Any], measured: pd.DataFrame, path: Path | str | None = None) -> Figure:
    """Two domains: loss vs the first domain's share per eval domain (runs, law, proposal); else predicted
    vs measured mean loss at the largest size."""
    train = list(mixing["train_domains"])
    top = mixing["sizes"][-1]
    laws = {
        e: MixingLaw(e, tuple(train), d["c"], d["k"], d["t"], d["rmse"], d["n_mixtures"])
        for e, d in top["laws"].items()
    }
    fig, (ax,) = new_figure()
    share = np.linspace(0, 1, 101)
    R = np.column_stack([share, 1 - share]) if len(train) == 2 else None
    at_top = measured.loc[measured["U"] == top["U"]]
    for i, (e, law) in enumerate(laws.items()):
        color = COLORS[i % len(COLORS)]
        col = "loss" if e == "mean" else f"test_loss_{e}"
        runs = mixture_matrix(list(at_top["_weights"]), train)
        if R is not None:
            ax.plot(share, law.predict(R), color=color, lw=1.4, label=f"eval {e}")
            ax.scatter(runs[:, 0], at_top[col], color=color, s=24, zorder=3)
        else:
            ax.scatter(law.predict(runs), at_top[col], color=color, s=24, label=f"eval {e}")
    best = mixing["proposal"]["weights"]
    if R is not None and len(laws) > 1:
        mean = np.mean([law.predict(R) for law in laws.values()], axis=0)
        ax.plot(share, mean, color="k", lw=1.2, ls="--", label="mean over eval domains (minimised)")
        ax.scatter(at_top_share(at_top, train), at_top["loss"], color="k", s=18, zorder=3)
    if R is not None:
        ax.axvline(best[train[0]], color="0.3", ls=":", lw=1, label=f"proposed {train[0]}={best[train[0]]:g}")
        ax.set_xlabel(f"share of {train[0]} (rest {train[1]})")
    else:
        ax.set_xlabel("predicted loss")
    ax.set_ylabel("test loss")
    ax.set_title(f"data mixing law at U = {top['U']:g} (Ye et al.)")
    ax.grid(True, alpha=0.25)
    ax.legend(fontsize=8)
    return save(fig, path)


def at_top_share(runs: pd.DataFrame, train: Sequence[str]) -> np.ndarray:
    """The first training domain's share in each run's mixture."""
    return mixture_matrix(list(runs["_weights"]), train)[:, 0]


def decision_plot(decision: Mapping[str, Any], path: Path | str | None = None) -> Figure:
    """Decision accuracy against size, with the per-seed range and the bootstrap interval over seeds where
    there are several seeds."""
    x = decision["x"]
    rows = [r for r in decision["rows"] if r["accuracy"] is not None]
    fig, (ax,) = new_figure()
    xs = [r[x] for r in rows]
    ax.plot(xs, [r["accuracy"] for r in rows], "o-", color=COLORS[0], label="seed-mean losses")
    for r in rows:
        if r.get("per_seed_accuracy"):
            ax.vlines(
                r[x], *r["per_seed_accuracy"], color=COLORS[0], alpha=0.4, lw=4, label="one seed (range)"
            )
        if r.get("accuracy_interval"):
            lo, hi = r["accuracy_interval"]
            # drawn from its middle: a percentile interval need not hold the estimate
            ax.errorbar(r[x] * 1.04, (lo + hi) / 2, yerr=(hi - lo) / 2, fmt="none", color=COLORS[1],
                        capsize=4, label="95% bootstrap over seeds")  # fmt: skip
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
    ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _pos: ""))
    ax.set_xticks(xs)
    ax.set_ylim(-0.05, 1.05)
    ax.set_xlabel(x)
    ax.set_ylabel(f"pairs ranked as at {x} = {decision['target_size']:g}")
    ax.set_title("decision accuracy (DataDecide)")
    ax.grid(True, which="both", alpha=0.25)
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles, strict=True))
    ax.legend(unique.values(), unique.keys(), fontsize=8)
    return save(fig, path)
