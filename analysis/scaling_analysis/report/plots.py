"""Figures for scaling studies: every function returns a matplotlib Figure and, given ``path``, saves a PNG.

Figures are built with the object-oriented API (``matplotlib.figure.Figure`` on an Agg canvas), never through
pyplot's global state: nothing is shown, nothing leaks between calls, and it works headless and in notebooks
(``IPython.display.Image(path)`` or ``display(fig)``).

Conventions in every plot: one colour per seed (or per condition); hollow markers are runs that did not
converge (``converged == False``: the token cap stopped them, so their loss is an upper bound) and they are
also listed in a note under the axes; held-out points are red stars, joined to their extrapolated prediction.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ..engine import law_of, predict
from ..engine.compare import holdout_test_rows, prediction_column
from ..render.figure import COLORS, finish_axes, log_grid, new_figure, save, tidy_log_axes
from ..tables.runs import non_converged

HOLDOUT_COLOR = "#d62728"
#: hollow stars: runs left out of the fit and predicted by it
HOLDOUT_MARKER = {
    "marker": "*",
    "s": 170,
    "facecolors": "none",
    "edgecolors": HOLDOUT_COLOR,
    "linewidths": 1.3,
    "zorder": 5,
}
MAX_CURVES = 8  # more distinct values of a law's other variables than this: predictions per run, not curves


# -------------------------------------------------------------------------------------------- helpers


def x_column(fit: Any, df: pd.DataFrame | None = None, x: str | None = None) -> str:
    """The data column on the horizontal axis: explicit ``x``, else the column of the fit's first variable."""
    if x is not None:
        return x
    if fit is not None:
        law = law_of(fit)
        variables = getattr(fit, "variables", None) or {v: v for v in law.variables}
        return variables[law.variables[0]]
    if df is not None:
        for col in ("U", "D", "N", "C"):
            if col in df and df[col].nunique() > 1:
                return col
    raise ValueError("x_column: pass x=... (no fit and no varying U/D/N/C column)")


def _law_inputs(fit: Any, df: pd.DataFrame) -> dict[str, np.ndarray]:
    """{law variable: values} for the rows of ``df``, through the fit's variable -> column mapping."""
    law = law_of(fit)
    variables = getattr(fit, "variables", None) or {v: v for v in law.variables}
    return {v: df[variables[v]].to_numpy(dtype=float) for v in law.variables}


def _other_groups(fit: Any, df: pd.DataFrame, x: str) -> list[tuple[str, dict[str, float]]]:
    """For multi-variable laws: one (label, {var: value}) per distinct combination of the non-x variables."""
    law = law_of(fit)
    variables = getattr(fit, "variables", None) or {v: v for v in law.variables}
    others = [v for v in law.variables if variables[v] != x]
    if not others:
        return [("", {})]
    cols = [variables[v] for v in others]
    groups = []
    for key, _ in df.groupby(cols, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        values = {v: float(cast(Any, k)) for v, k in zip(others, key, strict=True)}
        label = ", ".join(f"{c}={k:.3g}" for c, k in zip(cols, key, strict=True))
        groups.append((label, values))
    return groups


def _curve_inputs(
    fit: Any, x: str, grid: np.ndarray, fixed_values: Mapping[str, float]
) -> dict[str, np.ndarray]:
    law = law_of(fit)
    variables = getattr(fit, "variables", None) or {v: v for v in law.variables}
    X = {v: np.full_like(grid, fixed_values[v]) for v in fixed_values}
    for v in law.variables:
        if variables[v] == x:
            X[v] = grid
    return X


def band(
    fit: Any, samples: pd.DataFrame, X: Mapping[str, np.ndarray], confidence: float = 0.95
) -> tuple[np.ndarray, np.ndarray]:
    """Pointwise ``confidence`` band of the prediction: each bootstrap sample's params predicted on ``X``."""
    law = law_of(fit)
    params = [p for p in law.params if p in samples]
    preds = []
    for row in samples[params].itertuples(index=False):
        p = dict(fit.params)
        p.update(dict(zip(params, row, strict=True)))
        if not all(np.isfinite(list(p.values()))):
            continue
        with np.errstate(all="ignore"):
            preds.append(predict(fit, p, X))
    if not preds:
        raise ValueError("band: no finite bootstrap sample")
    arr = np.vstack(preds)
    q = (1 - confidence) / 2
    return np.nanquantile(arr, q, axis=0), np.nanquantile(arr, 1 - q, axis=0)


def _note_non_converged(fig: Figure, df: pd.DataFrame, x: str) -> None:
    nc = non_converged(df)
    if nc.empty:
        return
    ids = nc["run_id"].astype(str).tolist() if "run_id" in nc else [str(i) for i in nc.index]
    # a long table (one row per run and domain) lists each run once
    items = list(dict.fromkeys(f"{i} ({x}={v:.3g})" for i, v in zip(ids, nc[x], strict=True)))
    shown = ", ".join(items[:6]) + (f", … (+{len(items) - 6})" if len(items) > 6 else "")
    fig.text(
        0.01, 0.005, f"not converged (hollow, token cap hit): {shown}", fontsize=7, va="bottom", ha="left"
    )
    engine = fig.get_layout_engine()
    if engine is not None:
        engine.set(rect=(0, 0.04, 1, 0.96))  # type: ignore[call-arg]


def _scatter_runs(ax: Any, df: pd.DataFrame, x: str, loss: str, *, color_by: str | None = "seed") -> None:
    """Data points, one colour per seed, hollow when not converged."""
    conv = ~df.index.isin(non_converged(df).index)
    groups: list[tuple[Any, pd.DataFrame]]
    if color_by in df and df[color_by].nunique() > 1:
        groups = list(df.groupby(color_by, sort=True))
    else:
        groups = [(None, df)]
    for i, (key, g) in enumerate(groups):
        color = COLORS[i % len(COLORS)]
        label = f"{color_by}={key}" if key is not None else "runs"
        gc = conv[df.index.get_indexer(g.index)]
        ax.scatter(g.loc[gc, x], g.loc[gc, loss], s=28, color=color, label=label, zorder=3)
        if (~gc).any():
            ax.scatter(g.loc[~gc, x], g.loc[~gc, loss], s=28, facecolors="none", edgecolors=color, zorder=3)
    if (~conv).any():
        ax.scatter([], [], s=28, facecolors="none", edgecolors="k", label="not converged")


def _pad_single_x(ax: Any, values: pd.Series) -> None:
    """A log x axis needs a positive range even when every run has the same x (a one-size study)."""
    if values.nunique() == 1 and float(values.iloc[0]) > 0:
        v = float(values.iloc[0])
        ax.set_xlim(v / 3, v * 3)


# ---------------------------------------------------------------------------------------------- plots


def _draw_holdout(ax: Any, holdout: Any, x: str, loss: str) -> None:
    """Held-out points as red stars, joined to the held-out fit's prediction."""
    test = holdout_test_rows(holdout)
    if test is not None and len(test):
        pc = prediction_column(test)
        xs = test[x].to_numpy(dtype=float) if x in test else None
        obs_col = "observed" if "observed" in test else loss
        if xs is not None:
            ax.scatter(
                xs,
                test[obs_col],
                **HOLDOUT_MARKER,
                label="held out (fit without them)",
            )
            ax.scatter(
                xs,
                test[pc],
                marker="_",
                s=220,
                color=HOLDOUT_COLOR,
                zorder=4,
                label="extrapolated prediction",
            )
            for xi, o, p in zip(xs, test[obs_col], test[pc], strict=True):
                ax.plot([xi, xi], [o, p], color=HOLDOUT_COLOR, lw=0.9, zorder=3)


def scaling_curve(
    df: pd.DataFrame,
    fit: Any = None,
    *,
    bootstrap: Any = None,
    holdout: Any = None,
    x: str | None = None,
    loss: str = "loss",
    extend: float = 10.0,
    title: str | None = None,
    path: Path | str | None = None,
) -> Figure:
    """Log-log loss vs the scaling variable: runs per seed, the fit (dashed past the data), its bootstrap
    band, held-out points.

    ``extend`` stretches the curve to ``extend`` x the largest data value, the extrapolation the report
    quotes. Held-out points (from ``holdout``) are red stars joined to the held-out fit's prediction.
    """
    x = x_column(fit, df, x)
    fig, (ax,) = new_figure()
    _scatter_runs(ax, df, x, loss)
    groups = _other_groups(fit, df, x) if fit is not None else []
    name = getattr(law_of(fit), "name", "fit") if fit is not None else ""
    if len(groups) > MAX_CURVES:
        # a law of several variables with many distinct values of the others: no single curve, so show the
        # fit's prediction at every run instead (isoflop() draws the curves for laws of N and D)
        ax.scatter(
            df[x],
            predict(fit, None, _law_inputs(fit, df)),
            marker="x",
            s=18,
            color="k",
            lw=0.8,
            label=f"{name} fit at each run",
            zorder=4,
        )
        groups = []
    lo, hi = (float(df[x].min()) / 1.5, float(df[x].max())) if len(df) else (1.0, 1.0)
    samples = getattr(bootstrap, "samples", None)
    for j, (label, fixed) in enumerate(groups):
        color = "k" if not label else COLORS[j % len(COLORS)]
        inside, beyond = log_grid(lo, hi), log_grid(hi, hi * extend, 60)
        lbl = f"{name} fit" + (f" ({label})" if label else "")
        ax.plot(
            inside, predict(fit, None, _curve_inputs(fit, x, inside, fixed)), color=color, lw=1.6, label=lbl
        )
        ax.plot(
            beyond, predict(fit, None, _curve_inputs(fit, x, beyond, fixed)), color=color, lw=1.4, ls="--"
        )
        if samples is not None and len(samples):
            full = np.concatenate([inside, beyond[1:]])
            conf = float(getattr(bootstrap, "confidence", 0.95))
            low, high = band(fit, samples, _curve_inputs(fit, x, full, fixed), conf)
            band_label = f"{conf:.0%} bootstrap band" if j == 0 else None
            ax.fill_between(full, low, high, color=color, alpha=0.18, lw=0, label=band_label)
    _draw_holdout(ax, holdout, x, loss)
    finish_axes(ax, x, loss, title)
    _note_non_converged(fig, df, x)
    return save(fig, path)


def residuals(
    df: pd.DataFrame,
    fit: Any,
    *,
    holdout: Any = None,
    x: str | None = None,
    loss: str = "loss",
    title: str | None = None,
    path: Path | str | None = None,
) -> Figure:
    """Relative residuals (observed / predicted - 1, in %) of every run vs the scaling variable.

    Systematic curvature here is what a too-simple law looks like; held-out points use the held-out fit.
    """
    x = x_column(fit, df, x)
    fig, (ax,) = new_figure(height=3.8)
    pred = predict(fit, None, _law_inputs(fit, df))
    res = df.assign(_res=100.0 * (df[loss].to_numpy(dtype=float) / pred - 1.0))
    _scatter_runs(ax, res, x, "_res")
    test = holdout_test_rows(holdout)
    if test is not None and len(test) and x in test:
        pc = prediction_column(test)
        obs_col = "observed" if "observed" in test else loss
        ax.scatter(
            test[x],
            100.0 * (test[obs_col].to_numpy(dtype=float) / test[pc].to_numpy(dtype=float) - 1.0),
            **HOLDOUT_MARKER,
            label="held out (vs the fit without them)",
        )
    ax.axhline(0.0, color="k", lw=0.8)
    ax.set_xscale("log")
    _pad_single_x(ax, df[x])
    tidy_log_axes(ax, y_log=False)
    ax.set_xlabel(x)
    ax.set_ylabel("residual: observed / predicted - 1 (%)")
    ax.set_title(title or "residuals")
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(fontsize=8, loc="best")
    _note_non_converged(fig, df, x)
    return save(fig, path)


def _pct_or_none(v: Any) -> str | None:
    return f"{100 * float(v):.2f}%" if v is not None and np.isfinite(float(v)) else None


def _comparison_labels(comparison: Any) -> dict[str, str]:
    """Legend suffix per law: held-out MAPE (a ComparisonResult), or rule score and held-out MAPE marked as
    not used for the choice (a TournamentResult)."""
    out: dict[str, str] = {}
    for name, ho in (getattr(comparison, "holdouts", None) or {}).items():
        mape = _pct_or_none(getattr(ho, "mape", None))
        out[name] = f" (held-out MAPE {mape})" if mape else ""
    table, held = getattr(comparison, "table", None), getattr(comparison, "held_out", None)
    if isinstance(held, pd.DataFrame) and isinstance(table, pd.DataFrame) and "rule_score" in table:
        mapes = dict(zip(held["law"], held["mape"], strict=True)) if len(held) else {}
        for _, row in table.iterrows():
            parts = [f"score {s}" for s in [_pct_or_none(row["rule_score"])] if s]
            parts += [f"held-out {m}, not used" for m in [_pct_or_none(mapes.get(row["law"]))] if m]
            out[str(row["law"])] = f" ({'; '.join(parts)})" if parts else ""
    return out


def law_comparison(
    df: pd.DataFrame,
    comparison: Any,
    *,
    x: str | None = None,
    loss: str = "loss",
    extend: float = 10.0,
    title: str | None = None,
    path: Path | str | None = None,
) -> Figure:
    """Every candidate law's fit overlaid on the runs; the chosen one drawn thick, legend with held-out
    MAPE (a tournament's: its rule score, and the held-out MAPE marked as not used for the choice)."""
    fits = dict(getattr(comparison, "fits", {}) or {})
    chosen = getattr(comparison, "chosen", None)
    labels = _comparison_labels(comparison)
    first = next(iter(fits.values()), None)
    x = x_column(first, df, x)
    fig, (ax,) = new_figure()
    _scatter_runs(ax, df, x, loss)
    lo, hi = float(df[x].min()) / 1.5, float(df[x].max()) * extend
    grid = log_grid(lo, hi)
    for i, (name, fit) in enumerate(fits.items()):
        if fit is None:
            continue
        groups = _other_groups(fit, df, x)
        if len(groups) > 1:
            continue  # a multi-variable candidate has no single curve against x
        label = name + labels.get(name, "")
        if name == chosen:
            label += "  [chosen]"
        ax.plot(
            grid,
            predict(fit, None, _curve_inputs(fit, x, grid, groups[0][1])),
            color=COLORS[(i + 2) % len(COLORS)],
            lw=2.6 if name == chosen else 1.3,
            ls="-" if name == chosen else "--",
            label=label,
        )
    ax.axvline(float(df[x].max()), color="k", lw=0.6, ls=":")
    finish_axes(ax, x, loss, title or "law comparison")
    _note_non_converged(fig, df, x)
    return save(fig, path)


def compute_optimal(
    fit: Any, budgets: np.ndarray, *, n_range: tuple[float, float] = (1e5, 1e13)
) -> pd.DataFrame:
    """N_opt, D_opt = C/(6 N_opt) and the minimal loss per compute budget C, by a dense log-grid search.

    Numerical rather than the closed form so that it works for any law of (N, D), not only Chinchilla's.
    """
    law = law_of(fit)
    if not {"N", "D"} <= set(law.variables):
        raise ValueError(f"law {law.name}: isoFLOP needs variables N and D (has {list(law.variables)})")
    rows = []
    ns = log_grid(*n_range, n=4000)
    for c in np.atleast_1d(budgets).astype(float):
        ds = c / (6.0 * ns)
        with np.errstate(all="ignore"):
            lv = predict(fit, None, {"N": ns, "D": ds})
        i = int(np.nanargmin(lv))
        # refine with a parabola in log N around the grid minimum
        if 0 < i < len(ns) - 1:
            xs, ys = np.log(ns[i - 1 : i + 2]), lv[i - 1 : i + 2]
            a, b, _ = np.polyfit(xs, ys, 2)
            n_opt = float(np.exp(-b / (2 * a))) if a > 0 else float(ns[i])
        else:
            n_opt = float(ns[i])
        d_opt = c / (6.0 * n_opt)
        l_opt = float(predict(fit, None, {"N": np.array([n_opt]), "D": np.array([d_opt])})[0])
        rows.append(
            {"C": c, "N_opt": n_opt, "D_opt": d_opt, "loss_opt": l_opt, "tokens_per_param": d_opt / n_opt}
        )
    return pd.DataFrame(rows)


def _frontier_panel(ax2: Any, fit: Any, budgets: np.ndarray, df: pd.DataFrame | None, c_data: Any) -> None:
    """Right panel of ``isoflop``: N_opt(C) and D_opt(C) with the runs, and the fitted frontier slopes."""
    cs = log_grid(budgets.min() / 10, budgets.max() * 10, 60)
    full = compute_optimal(fit, cs, n_range=(1e4, 1e14))
    ax2.plot(full["C"], full["N_opt"], color="C0", label="N_opt(C)")
    ax2.plot(full["C"], full["D_opt"], color="C1", label="D_opt(C) = C / (6 N_opt)")
    if df is not None:
        ax2.scatter(c_data, df["N"], s=10, color="C0", alpha=0.35, label="runs: N")
        ax2.scatter(c_data, df["D"], s=10, color="C1", alpha=0.35, label="runs: D")
    slope_n = np.polyfit(np.log(full["C"]), np.log(full["N_opt"]), 1)[0]
    slope_d = np.polyfit(np.log(full["C"]), np.log(full["D_opt"]), 1)[0]
    ax2.set_xscale("log")
    ax2.set_yscale("log")
    ax2.set_xlabel("C (FLOP, 6ND)")
    ax2.set_ylabel("N or D")
    ax2.set_title(f"compute-optimal frontier: N ∝ C^{slope_n:.3f}, D ∝ C^{slope_d:.3f}")
    ax2.grid(True, which="both", alpha=0.25)
    ax2.legend(fontsize=8, loc="upper left")


def isoflop(
    fit: Any,
    *,
    df: pd.DataFrame | None = None,
    budgets: Sequence[float] | np.ndarray | None = None,
    n_budgets: int = 6,
    title: str | None = None,
    path: Path | str | None = None,
) -> Figure:
    """IsoFLOP curves L(N, C/(6N)) per budget with their minima (left) and the compute-optimal frontier
    (right).

    Budgets default to ``n_budgets`` log-spaced values across the data's compute range (``C``, or 6·N·D); data
    points are coloured by log10 compute on the same colour scale.
    """
    if df is not None:
        c_data = (
            df["C"].to_numpy(dtype=float)
            if "C" in df
            else 6.0 * df["N"].to_numpy(float) * df["D"].to_numpy(float)
        )
    else:
        c_data = None
    if budgets is None:
        if c_data is None:
            raise ValueError("isoflop: pass budgets=... or df=...")
        budgets = np.logspace(np.log10(c_data.min()), np.log10(c_data.max()), n_budgets)
    budgets = np.asarray(budgets, dtype=float)
    assert isinstance(budgets, np.ndarray)
    if df is not None:
        n_lo, n_hi = float(df["N"].min()) / 10, float(df["N"].max()) * 10
    else:
        n_lo, n_hi = 1e6, 1e11
    frontier = compute_optimal(fit, budgets, n_range=(min(n_lo, 1e5), max(n_hi, 1e12)))
    import matplotlib as mpl

    cmap = mpl.colormaps["viridis"]
    lc = np.log10(budgets)
    lc_all = np.concatenate([lc, np.log10(c_data)]) if c_data is not None else lc
    norm = mpl.colors.Normalize(vmin=lc_all.min(), vmax=lc_all.max())
    fig, (ax, ax2) = new_figure(2)
    ns = log_grid(n_lo, n_hi, 300)
    for c, row in zip(budgets, frontier.itertuples(index=False), strict=True):
        color = cmap(norm(np.log10(c)))
        with np.errstate(all="ignore"):
            lv = predict(fit, None, {"N": ns, "D": c / (6.0 * ns)})
        ax.plot(ns, lv, color=color, lw=1.3, label=f"C={c:.2g}")
        ax.scatter([row.N_opt], [row.loss_opt], color=color, marker="D", s=30, zorder=4, edgecolors="k")
    if df is not None:
        ax.scatter(
            df["N"],
            df["loss"],
            c=np.log10(np.asarray(c_data)),
            cmap=cmap,
            norm=norm,
            s=14,
            alpha=0.7,
            zorder=3,
        )
        lmin, lmax = float(df["loss"].min()), float(df["loss"].max())
        ax.set_ylim(min(lmin, float(frontier["loss_opt"].min())) * 0.95, lmax * 1.3)
    ax.plot(frontier["N_opt"], frontier["loss_opt"], color="k", lw=0.9, ls=":", label="optimum")
    ax.set_xscale("log")
    ax.set_yscale("log")
    tidy_log_axes(ax)
    ax.set_xlabel("N (parameters)")
    ax.set_ylabel("loss")
    ax.set_title(title or "isoFLOP curves")
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(fontsize=7, loc="upper right")
    _frontier_panel(ax2, fit, budgets, df, c_data)
    return save(fig, path)


def conditions(
    df: pd.DataFrame,
    *,
    condition: str = "condition",
    x: str | None = None,
    loss: str = "loss",
    fits: Mapping[str, Any] | None = None,
    title: str | None = None,
    path: Path | str | None = None,
) -> Figure:
    """One curve per condition (domain, mixture, quality level): runs and, if given, each condition's fit.

    ``tables.runs.domain_long`` turns the per-domain loss columns of a study into a ``condition`` column.
    """
    if condition not in df:
        raise ValueError(f"conditions: no {condition!r} column (columns: {list(df.columns)})")
    first = next(iter((fits or {}).values()), None)
    x = x_column(first, df, x)
    fig, (ax,) = new_figure()
    nc_idx = set(non_converged(df).index)
    for i, (name, g) in enumerate(df.groupby(condition, sort=True)):
        color = COLORS[i % len(COLORS)]
        filled = ~g.index.isin(list(nc_idx))
        ax.scatter(g.loc[filled, x], g.loc[filled, loss], color=color, s=24, label=str(name), zorder=3)
        if (~filled).any():
            ax.scatter(
                g.loc[~filled, x], g.loc[~filled, loss], facecolors="none", edgecolors=color, s=24, zorder=3
            )
        fit = (fits or {}).get(cast(Any, name))
        if fit is not None:
            grid = log_grid(float(g[x].min()) / 1.5, float(g[x].max()) * 3)
            groups = _other_groups(fit, g, x)
            ax.plot(grid, predict(fit, None, _curve_inputs(fit, x, grid, groups[0][1])), color=color, lw=1.4)
        elif g[x].nunique() > 1:
            means = g.groupby(x, sort=True)[loss].mean()
            ax.plot(means.index, means.to_numpy(), color=color, lw=1.0, alpha=0.7)
    finish_axes(ax, x, loss, title or f"per-{condition} curves")
    _note_non_converged(fig, df, x)
    return save(fig, path)
