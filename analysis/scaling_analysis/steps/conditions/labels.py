"""Conditions of a study: the values of its swept axes other than size and seed, with readable labels.

Why: a domain, mixture, quality, noise or dedup study sweeps one or more data axes at several sizes; every
per-condition result (curves, the effective-data multiplier k, decision accuracy) needs the same grouping and
the same labels (``literature=0.5,code=0.5``, ``q=0.3``, ``fraction=0.25 filter=c4``). Records put each axis
into an ``axis_<name>`` column (``tables.runs.record_row``); mixture weights arrive as a mapping.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

#: swept axes that are not data conditions: the size axis and the training seed
NOT_CONDITION_AXES = frozenset({"unique_tokens", "seed", "tokens", "max_tokens"})
#: string values that name the untransformed pool (the natural reference level)
CLEAN_VALUES = ("none", "null", "identity", "off", "")
#: axes whose smallest value is the clean one (planted noise) and whose largest is (kept fraction)
MIN_IS_CLEAN = frozenset({"fraction", "p", "noise", "rate"})
MAX_IS_CLEAN = frozenset({"q", "keep", "top_q"})


@dataclass
class Conditions:
    """The condition axes of a table, the label of every row, and the reference level (k = 1)."""

    axes: list[str]
    labels: pd.Series
    levels: list[str]
    reference: str
    reference_reason: str

    @property
    def n_levels(self) -> int:
        return len(self.levels)


def is_mapping(value: Any) -> bool:
    return isinstance(value, Mapping)


def format_value(value: Any) -> str:
    """A swept value as text: numbers without trailing zeros, mappings as ``a=0.5,b=0.5`` (None dropped)."""
    if is_mapping(value):
        parts = [f"{k}={format_value(v)}" for k, v in value.items() if v is not None and not _is_nan(v)]
        return ",".join(parts)
    if isinstance(value, bool | np.bool_):
        return str(bool(value))
    if isinstance(value, int | float | np.integer | np.floating):
        return f"{float(value):g}"
    return "none" if value is None else str(value)


def _is_nan(v: Any) -> bool:
    return isinstance(v, float | np.floating) and math.isnan(float(v))


def condition_axes(df: pd.DataFrame) -> list[str]:
    """Axis names (``axis_<name>`` columns) other than size and seed whose values vary across runs."""
    out = []
    for col in df.columns:
        name = str(col)
        if not name.startswith("axis_") or name.removeprefix("axis_") in NOT_CONDITION_AXES:
            continue
        if df[col].map(format_value).nunique() > 1:
            out.append(name.removeprefix("axis_"))
    return out


def row_label(row: Mapping[Any, Any], axes: Sequence[str]) -> str:
    """One row's condition label: a mapping axis shows only its items, other axes as ``name=value``."""
    parts = []
    for axis in axes:
        value = row[f"axis_{axis}"]
        parts.append(format_value(value) if is_mapping(value) else f"{axis}={format_value(value)}")
    return " ".join(parts)


def _sort_key(value: Any) -> tuple[int, float, str]:
    """Numbers before text, numbers by value (so q=0.3 < q=0.6 < q=1)."""
    if isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool):
        return (0, float(value), "")
    return (1, 0.0, format_value(value))


def _clean_value(axis: str, values: Sequence[Any]) -> Any | None:
    """The value of ``axis`` meaning "no intervention": none, the least noise, the largest kept fraction."""
    texts = {format_value(v).lower(): v for v in values}
    for clean in CLEAN_VALUES:
        if clean in texts:
            return texts[clean]
    numeric = [v for v in values if _sort_key(v)[0] == 0]
    if numeric and axis in MIN_IS_CLEAN:
        return min(numeric, key=float)
    if numeric and axis in MAX_IS_CLEAN:
        return max(numeric, key=float)
    return None


def _reference(
    df: pd.DataFrame, axes: Sequence[str], labels: pd.Series, levels: list[str]
) -> tuple[str, str]:
    """The reference level: every axis at its clean value when such a run exists, else the first level."""
    mask = pd.Series(True, index=df.index)
    said = []
    for axis in axes:
        values = list(df[f"axis_{axis}"])
        clean = _clean_value(axis, values)
        if clean is None:
            continue
        mask &= df[f"axis_{axis}"].map(format_value) == format_value(clean)
        said.append(f"{axis}={format_value(clean)}")
    if said and mask.any():
        return str(labels[mask].iloc[0]), f"the unmodified condition ({', '.join(said)})"
    return levels[0], "the first condition (no axis has a 'none' / clean value)"


def find_conditions(df: pd.DataFrame) -> Conditions | None:
    """The table's conditions, or None for a plain size study (no varying axis besides size and seed).

    A table without axis columns but with a ``condition`` column (external tables) uses that column.
    """
    axes = condition_axes(df)
    if not axes:
        if "condition" in df and df["condition"].nunique() > 1:
            labels = df["condition"].astype(str)
            levels = sorted(labels.unique())
            return Conditions([], labels, levels, levels[0], "the first condition")
        return None
    records = df[[f"axis_{a}" for a in axes]].to_dict("records")
    labels = pd.Series([row_label(r, axes) for r in records], index=df.index, dtype=object)
    order = df.apply(lambda r: tuple(_sort_key(r[f"axis_{a}"]) for a in axes), axis=1)
    levels = list(dict.fromkeys(labels[order.sort_values(kind="stable").index]))
    reference, why = _reference(df, axes, labels, levels)
    return Conditions(axes, labels, levels, reference, why)


def with_condition(df: pd.DataFrame, conditions: Conditions) -> pd.DataFrame:
    """A copy of ``df`` with a string ``condition`` column (what the effective-data law is fitted on)."""
    out = df.copy()
    out["condition"] = conditions.labels.astype(str).to_numpy()
    out.attrs = dict(df.attrs)
    return out


def mean_loss_table(df: pd.DataFrame, x: str = "U", loss: str = "loss") -> pd.DataFrame:
    """Mean, standard deviation and seed count of ``loss`` per (condition, size)."""
    g = df.groupby(["condition", x], sort=True)[loss]
    out = g.agg(mean="mean", std="std", n="size").reset_index()
    return out
