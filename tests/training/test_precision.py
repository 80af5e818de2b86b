"""Evaluation precision: clustered standard errors from per-window sums, and the windows a target needs."""

from __future__ import annotations

import math

import numpy as np
import pytest

from datascale.training.precision import (
    BYTES,
    NATS,
    SEEN,
    TOKENS,
    WINDOW_ROWS,
    choose_subset,
    clustered_se,
    evenly_spaced,
    macro_se,
    summarize,
)


def window_sums(nats: np.ndarray, tokens: np.ndarray, nbytes: np.ndarray | None = None) -> np.ndarray:
    arr = np.zeros((WINDOW_ROWS, len(nats)))
    arr[NATS], arr[TOKENS], arr[SEEN] = nats, tokens, 1.0
    arr[BYTES] = 3 * tokens if nbytes is None else nbytes
    return arr


def test_clustered_se_is_the_ratio_estimator_over_windows() -> None:
    rng = np.random.default_rng(0)
    tokens = rng.integers(60, 129, 50).astype(float)
    nats = tokens * rng.normal(5.0, 0.3, 50)
    mean = nats.sum() / tokens.sum()
    by_hand = math.sqrt(50 / 49 * ((nats - mean * tokens) ** 2).sum()) / tokens.sum()
    assert clustered_se(nats, tokens) == pytest.approx(by_hand)
    # equal windows: the SE of the mean of the window means
    equal = np.full(50, 128.0)
    per_window = rng.normal(5.0, 0.3, 50)
    expected = per_window.std(ddof=1) / math.sqrt(50)
    assert clustered_se(per_window * equal, equal) == pytest.approx(expected)
    assert math.isnan(clustered_se(nats[:1], tokens[:1]))


def test_macro_se_of_independent_domains() -> None:
    assert macro_se({"a": 0.03, "b": 0.04}) == pytest.approx(0.025)
    assert macro_se({"a": 0.03, "b": 0.04}, ["b"]) == pytest.approx(0.04)


def test_evenly_spaced_windows() -> None:
    assert evenly_spaced(10, 5).tolist() == [0, 2, 4, 6, 8]
    assert evenly_spaced(10, 3).tolist() == [0, 3, 6]
    assert evenly_spaced(4, 9).tolist() == [0, 1, 2, 3]


def two_evaluations(noise: float, n: int = 200) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Two evaluations of the same windows of two domains: the second a noisy improvement of the first."""
    rng = np.random.default_rng(1)
    tokens = np.full(n, 128.0)
    first = {d: window_sums(tokens * rng.normal(6.0, 1.0, n), tokens) for d in ("a", "b")}
    second = {}
    for d, arr in first.items():
        change = tokens * rng.normal(-0.1, noise, n)
        second[d] = window_sums(arr[NATS] + change, tokens)
    return first, second


def test_the_paired_se_of_two_full_evaluations_sets_the_share_of_windows() -> None:
    previous, current = two_evaluations(noise=0.05)
    subset = choose_subset(current, previous, ["a", "b"], target=0.004, step=16)
    pair = macro_se({d: clustered_se(current[d][NATS] - previous[d][NATS], current[d][TOKENS]) for d in "ab"})
    assert subset.pair_se == pytest.approx(pair)
    assert subset.fraction == pytest.approx((pair / 0.004) ** 2)
    assert 0 < subset.fraction < 1
    kept = subset.windows["a"]
    assert len(kept) == math.ceil(subset.fraction * 200) and kept == sorted(set(kept))
    # at the choice the reported losses are the full-set ones (difference estimator offsets)
    full = summarize(current, ["a", "b"])
    chosen = summarize(current, ["a", "b"], subset, previous)
    for d in "ab":
        assert chosen["loss_by_domain"][d] == pytest.approx(full["loss_by_domain"][d])
        assert chosen["bpb_by_domain"][d] == pytest.approx(full["bpb_by_domain"][d])
    assert chosen["tokens_by_domain"]["a"] == 128 * len(kept)
    # the paired SE on the kept windows is about the target
    assert chosen["delta_se"] == pytest.approx(0.004, rel=0.3)
    # a noisier change needs every window
    previous, current = two_evaluations(noise=0.5)
    assert choose_subset(current, previous, ["a", "b"], target=0.004, step=16).fraction == 1.0


def test_later_evaluations_report_full_set_level_plus_the_subsets_change() -> None:
    previous, current = two_evaluations(noise=0.05)
    subset = choose_subset(current, previous, ["a"], target=0.004, step=16)
    later = {d: arr.copy() for d, arr in current.items()}
    later["a"][NATS] -= 0.02 * later["a"][TOKENS]  # every window 0.02 nats better
    out = summarize(later, ["a"], subset, current)
    base = summarize(current, ["a"])["loss_by_domain"]["a"]
    assert out["loss_by_domain"]["a"] == pytest.approx(base - 0.02)
    assert out["delta_se"] == pytest.approx(0.0, abs=1e-9)  # an exact shift: no spread in the change
