"""Decision accuracy in the manner of DataDecide (Magnusson et al. 2025): can small runs pick the data?

For each smaller size, the fraction of condition pairs ordered (by mean loss over seeds) as at the largest
size; beside it the seed-to-seed spread, so that a user sees from which size small runs can be trusted.
A pair tied at the largest size carries no decision and is left out; a tie at the small size counts one half.

The spread comes two ways: each seed's runs alone (per-seed accuracy: min, max, std), and a bootstrap over
seeds within cells (each (condition, size) cell's runs drawn with replacement, the target size's too, and the
accuracy recomputed), whose percentile interval says how far the accuracy itself could move with other seeds.
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


def decision_accuracy(
    df: pd.DataFrame, *, x: str = "U", loss: str = "loss", n_resamples: int = 1000, seed: int = 0
) -> dict[str, Any]:
    """Per smaller size: accuracy, pairs compared, seeds and seed spread (``df`` has ``condition``, ``x``),
    with a bootstrap interval over seeds within cells (``n_resamples`` draws, rng ``seed``).

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
    rows = [_size_row(by_size[s], large, x, s, loss) for s in ranked[:-1]]
    boot = _bootstrap(df, ranked, x, loss, n_resamples, seed)
    for row, interval in zip(rows, boot.pop("intervals", [None] * len(rows)), strict=True):
        row["accuracy_interval"] = interval
    return {
        "x": x,
        "target_size": float(target),
        "n_conditions": len(levels),
        "seeds": seeds,
        "several_seeds": len(seeds) > 1,
        "rows": rows,
        "trusted_from": _trusted_from(rows, x),
        "bootstrap": boot,
    }


def _size_row(g: pd.DataFrame, large: Mapping[str, float], x: str, size: Any, loss: str) -> dict[str, Any]:
    """One smaller size: accuracy of the seed-mean losses, pairs, seeds, per-seed accuracies, std, gap."""
    score, n = _pair_agreement(_means(g, loss), large)
    row: dict[str, Any] = {x: float(size), "accuracy": score / n if n else None, "n_pairs": n}
    row["n_seeds"] = int(g["seed"].nunique()) if "seed" in g else 1
    row["seed_std"] = _seed_std(g, loss)
    per_seed = _per_seed_accuracy(g, large, loss) if row["n_seeds"] > 1 else []
    row["per_seed_accuracy"] = [min(per_seed), max(per_seed)] if per_seed else None
    row["per_seed_std"] = float(np.std(per_seed, ddof=1)) if len(per_seed) > 1 else None
    row["min_gap"] = _min_gap(g, loss)
    return row


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


#: what one bootstrap draw of the decision accuracy takes
RESAMPLED = "runs within each (condition, size) cell, the target size's too"


def _cell_means(
    df: pd.DataFrame, sizes: list[Any], x: str, loss: str, n_resamples: int, rng: np.random.Generator
) -> dict[Any, dict[str, np.ndarray]]:
    """Per size and condition: the mean loss of each resample [R] (the cell's runs drawn with replacement)."""
    out: dict[Any, dict[str, np.ndarray]] = {}
    for size in sizes:
        g = df.loc[df[x] == size]
        out[size] = {}
        for cond, values in sorted(g.groupby("condition")[loss]):
            v = values.to_numpy(dtype=float)
            out[size][str(cond)] = v[rng.integers(0, v.size, size=(n_resamples, v.size))].mean(axis=1)
    return out


def _resampled_accuracy(small: Mapping[str, np.ndarray], large: Mapping[str, np.ndarray]) -> np.ndarray:
    """Decision accuracy of every resample at once [R] (NaN where no pair is decided at the large size)."""
    common = sorted(set(small) & set(large))
    score = np.zeros_like(next(iter(large.values())))
    n = np.zeros_like(score)
    for a, b in itertools.combinations(common, 2):
        big = np.sign(large[a] - large[b])
        little = np.sign(small[a] - small[b])
        decided = big != 0
        score += decided * ((little == big) + 0.5 * (little == 0))
        n += decided
    with np.errstate(invalid="ignore", divide="ignore"):
        return score / n


def _bootstrap(
    df: pd.DataFrame, ranked: list[Any], x: str, loss: str, n_resamples: int, seed: int, level: float = 0.95
) -> dict[str, Any]:
    """Percentile intervals of the accuracy at each smaller size (``intervals``, in ``ranked`` order), or
    ``{"skipped": reason}`` without draws or without a cell of two runs."""
    if n_resamples < 1:
        return {"skipped": "no resamples requested"}
    repeats = df.loc[df[x].isin(ranked)].groupby(["condition", x])[loss].count()
    if not (repeats >= 2).any():
        return {"skipped": "no seed repeats: nothing to resample"}
    means = _cell_means(df, ranked, x, loss, n_resamples, np.random.default_rng(seed))
    tails = [100 * (1 - level) / 2, 100 * (1 + level) / 2]
    intervals = []
    for size in ranked[:-1]:
        acc = _resampled_accuracy(means[size], means[ranked[-1]])
        ok = acc[np.isfinite(acc)]
        intervals.append([float(v) for v in np.percentile(ok, tails)] if ok.size else None)
    info = {"n_resamples": n_resamples, "seed": seed, "confidence": level, "resampled": RESAMPLED}
    return {**info, "intervals": intervals}
