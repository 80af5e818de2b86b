"""Decision accuracy in the manner of DataDecide (Magnusson et al. 2025): can small runs pick the data?

For each smaller size, the fraction of condition pairs ordered (by mean loss over seeds) as at the largest
size; beside it the seed-to-seed spread, so that a user sees from which size small runs can be trusted.
A pair tied at the largest size carries no decision and is left out; a tie at the small size counts one half.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd


def _pair_agreement(small: Mapping[str, float], large: Mapping[str, float]) -> tuple[float, int]:
    """(agreeing pairs, pairs decided at the large size) over the conditions present at both sizes."""
    common = sorted(set(small) & set(large))
    score, n = 0.0, 0
    for a, b in itertools.combinations(common, 2):
        big = np.sign(large[a] - large[b])
        if big == 0:
            continue
        little = np.sign(small[a] - small[b])
        score += 1.0 if little == big else 0.5 if little == 0 else 0.0
        n += 1
    return score, n


def _means(g: pd.DataFrame, loss: str) -> dict[str, float]:
    """Mean loss per condition."""
    return {str(k): float(v) for k, v in g.groupby("condition")[loss].mean().items()}


def _per_seed_accuracy(g: pd.DataFrame, large: Mapping[str, float], loss: str) -> list[float]:
    """Decision accuracy of each seed's runs alone at one small size (against the large size's means)."""
    out = []
    for _seed, s in g.groupby("seed", sort=True):
        score, n = _pair_agreement(_means(s, loss), large)
        if n:
            out.append(score / n)
    return out


def decision_accuracy(df: pd.DataFrame, *, x: str = "U", loss: str = "loss") -> dict[str, Any]:
    """Per smaller size: accuracy, pairs compared, seeds and seed spread (``df`` has ``condition``, ``x``).

    Returns ``{"skipped": reason}`` when there are fewer than two conditions or two sizes.
    """
    sizes = sorted(df[x].unique())
    levels = sorted(df["condition"].unique())
    if len(levels) < 2:
        return {"skipped": "one condition: nothing to rank"}
    by_size = {s: df.loc[df[x] == s] for s in sizes}
    ranked = [s for s in sizes if by_size[s]["condition"].nunique() >= 2]
    if len(ranked) < 2:
        return {"skipped": "fewer than two sizes with two or more conditions"}
    target = ranked[-1]
    large = _means(by_size[target], loss)
    seeds = sorted({int(s) for s in df["seed"]}) if "seed" in df else []
    rows = []
    for s in ranked[:-1]:
        g = by_size[s]
        score, n = _pair_agreement(_means(g, loss), large)
        row: dict[str, Any] = {x: float(s), "accuracy": score / n if n else None, "n_pairs": n}
        row["n_seeds"] = int(g["seed"].nunique()) if "seed" in g else 1
        row["seed_std"] = _seed_std(g, loss)
        per_seed = _per_seed_accuracy(g, large, loss) if row["n_seeds"] > 1 else []
        row["per_seed_accuracy"] = [min(per_seed), max(per_seed)] if per_seed else None
        row["min_gap"] = _min_gap(g, loss)
        rows.append(row)
    return {
        "x": x,
        "target_size": float(target),
        "n_conditions": len(levels),
        "seeds": seeds,
        "several_seeds": len(seeds) > 1,
        "rows": rows,
        "trusted_from": _trusted_from(rows, x),
    }


def _seed_std(g: pd.DataFrame, loss: str) -> float | None:
    """Mean over conditions of the seed-to-seed standard deviation of the loss (None with one seed each)."""
    std = g.groupby("condition")[loss].std(ddof=1).dropna()
    return float(std.mean()) if len(std) else None


def _min_gap(g: pd.DataFrame, loss: str) -> float | None:
    """The smallest difference between two conditions' mean losses at one size (what noise must not flip)."""
    means = np.sort(g.groupby("condition")[loss].mean().to_numpy(dtype=float))
    return float(np.min(np.diff(means))) if means.size > 1 else None


def _trusted_from(rows: list[dict[str, Any]], x: str, threshold: float = 1.0) -> float | None:
    """The smallest size from which every larger compared size ranks all pairs as the largest does."""
    trusted = None
    for row in reversed(rows):
        if row["accuracy"] is None or row["accuracy"] < threshold:
            break
        trusted = row[x]
    return trusted
