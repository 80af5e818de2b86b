"""The figure conventions every plot of the package shares: an Agg canvas, the colours, log axes, PNG output.

Why a module of its own: the core figures (``report.plots``) and each study step's figures (downstream, the
learning-rate rule, the condition plots) draw in one style; they all start from ``new_figure`` and end in
``save``, never touching pyplot's global state, so they work headless and in notebooks alike.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")
DPI = 120


def new_figure(ncols: int = 1, *, width: float = 6.4, height: float = 4.6) -> tuple[Figure, list[Any]]:
    """A Figure with an Agg canvas and ``ncols`` axes side by side."""
    fig = Figure(figsize=(width * ncols, height), layout="constrained")
    FigureCanvasAgg(fig)
    axes = [fig.add_subplot(1, ncols, i + 1) for i in range(ncols)]
    return fig, axes


def save(fig: Figure, path: Path | str | None) -> Figure:
    """Save ``fig`` as PNG when a path is given; returns the figure for chaining."""
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=DPI)
    return fig


def log_grid(lo: float, hi: float, n: int = 200) -> np.ndarray:
    return np.logspace(np.log10(lo), np.log10(hi), n)


def _minor_x_label(ax: Any) -> FuncFormatter:
    """Label the 2x and 5x minor ticks of a log x axis, but only when it spans under 2.5 decades."""

    def fmt(v: float, _pos: int | None) -> str:
        lo, hi = ax.get_xlim()
        if v <= 0 or lo <= 0 or np.log10(hi / lo) > 2.5:
            return ""
        exponent = int(np.floor(np.log10(v) + 1e-9))
        mantissa = v / 10**exponent
        for m in (2, 5):
            if abs(mantissa - m) < 1e-6:
                return f"${m}\\times10^{{{exponent}}}$"
        return ""

    return FuncFormatter(fmt)


def tidy_log_axes(ax: Any, *, y_log: bool = True) -> None:
    """Plain loss tick labels (3.5, not 3.5x10^0) and sparse minor labels on the x axis."""
    ax.xaxis.set_minor_formatter(_minor_x_label(ax))
    ax.tick_params(axis="x", which="minor", labelsize=7)
    if y_log:
        plain = FuncFormatter(lambda v, _pos: f"{v:.3g}")
        ax.yaxis.set_major_formatter(plain)
        ax.yaxis.set_minor_formatter(plain)


def finish_axes(ax: Any, x: str, loss: str, title: str | None) -> None:
    """Log-log axes with labels, an optional title, a light grid and the legend."""
    ax.set_xscale("log")
    ax.set_yscale("log")
    tidy_log_axes(ax)
    ax.set_xlabel(x)
    ax.set_ylabel(loss)
    if title:
        ax.set_title(title)
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(fontsize=8, loc="best")
