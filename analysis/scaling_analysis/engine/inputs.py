"""Run table -> law arrays, with input errors that name the column, the row and the value.

Why a module of its own: every consumer of a table (fit, bootstrap, held-out check, metrics) must refuse the
same bad input with the same message, and a message that names neither the column nor the row sends the reader
hunting through a CSV.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from .laws import Law


def resolve_variables(law: Law, df: pd.DataFrame, variables: Mapping[str, str] | None) -> dict[str, str]:
    """Law variable -> DataFrame column (identity unless ``variables`` says otherwise); all must exist."""
    mapping = {v: v for v in law.variables}
    if variables:
        unknown = sorted(set(variables) - set(law.variables))
        if unknown:
            raise ValueError(f"variables={dict(variables)}: keys must be law variables {list(law.variables)}")
        mapping.update({k: str(v) for k, v in variables.items()})
    missing = [f"{v}->{c}" for v, c in mapping.items() if c not in df.columns]
    if missing:
        raise ValueError(
            f"law {law.name!r}: columns {missing} not in the DataFrame (columns: {list(df.columns)}); "
            "pass variables={law_variable: column}"
        )
    return mapping


def raw_columns(df: pd.DataFrame, mapping: Mapping[str, str]) -> dict[str, np.ndarray]:
    """The mapped columns as arrays, keyed by law variable."""
    return {v: df[c].to_numpy() for v, c in mapping.items()}


def row_label(df: pd.DataFrame | None, position: int) -> str:
    """How to name one row in a message: its run id when the table has one, else its index."""
    if df is None:
        return f"row {position}"
    index = df["source_row"].iloc[position] if "source_row" in df.columns else df.index[position]
    if "run_id" in df.columns:
        return f"row {index} (run_id {df['run_id'].iloc[position]})"
    return f"row {index}"


def _as_float(values: np.ndarray) -> np.ndarray:
    """Floats, with NaN wherever a value is not a number (strings, None)."""
    return pd.to_numeric(pd.Series(np.asarray(values), dtype=object), errors="coerce").to_numpy(dtype=float)


def invalid_mask(values: np.ndarray, *, positive: bool = True) -> np.ndarray:
    """True where a value is non-numeric, non-finite, or (``positive``) not > 0."""
    numeric = _as_float(values)
    bad = ~np.isfinite(numeric)
    if positive:
        bad |= ~(numeric > 0)
    return bad


def numeric_column(
    values: np.ndarray, *, column: str, what: str, df: pd.DataFrame | None = None, positive: bool = True
) -> np.ndarray:
    """``values`` as floats, or a ValueError naming the column, the first bad row and its value."""
    bad = invalid_mask(values, positive=positive)
    if not bad.any():
        return _as_float(values)
    pos = int(np.nonzero(bad)[0][0])
    value: Any = np.asarray(values, dtype=object)[pos]
    if bad.all():
        raise ValueError(
            f"column {column!r} ({what}) has no usable value in any of its {len(bad)} rows "
            f"({row_label(df, pos)}: {value!r}): map the right column with --columns / variables=..."
        )
    need = "finite and > 0 (log-space fit)" if positive else "finite numbers"
    raise ValueError(
        f"column {column!r} ({what}): {row_label(df, pos)} has value {value!r}, but values must be {need}; "
        f"{int(bad.sum())} such row(s): drop them as a recorded preprocessing step (e.g. --exclude)"
    )


def encode_checked(
    law: Law,
    raw: Mapping[str, np.ndarray],
    mapping: Mapping[str, str] | None = None,
    df: pd.DataFrame | None = None,
) -> dict[str, np.ndarray]:
    """``law.encode(raw)`` after checking every numeric variable is finite and > 0 (named errors)."""
    checked = dict(raw)
    for v in law.variables:
        if v in law.categorical or v not in raw:
            continue
        column = (mapping or {}).get(v, v)
        checked[v] = numeric_column(raw[v], column=column, what=f"law variable {v}", df=df)
    return law.encode(checked)


def loss_array(df: pd.DataFrame, loss: str) -> np.ndarray:
    """The loss column as floats; every value must be finite and > 0 (named error otherwise)."""
    if loss not in df.columns:
        raise ValueError(f"loss={loss!r}: not a column (columns: {list(df.columns)})")
    return numeric_column(df[loss].to_numpy(), column=loss, what="loss", df=df)
