"""The one JSON sanitiser: every fit.json, preprocessing record and ``to_dict`` goes through ``json_safe``.

Why one: two slightly different sanitisers disagreed on ``pd.NA`` and unknown types; fit.json must be strict
JSON (``allow_nan=False``), so non-finite floats become ``null`` everywhere.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd


def json_safe(value: Any) -> Any:
    """Plain JSON types: numpy scalars -> Python, non-finite floats and NA -> None, tuples/sets -> lists,
    DataFrames -> lists of row dicts, anything else unknown -> its ``str``."""
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, pd.DataFrame):
        return [json_safe(r) for r in value.to_dict(orient="records")]
    if isinstance(value, list | tuple | set):
        return [json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return [json_safe(v) for v in value.tolist()]
    if isinstance(value, np.bool_ | bool):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        v = float(value)
        return v if math.isfinite(v) else None
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, str | int):
        return value
    return str(value)
