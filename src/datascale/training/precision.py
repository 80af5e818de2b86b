"""How precise an evaluation is, and which held-out windows a precision target needs (torch-free).

Evaluation scores consecutive ``seq_len``-token windows of each domain's held-out stream and keeps, per
window, its summed nats ``s_i``, scored tokens ``m_i`` and their bytes (ranks sum these arrays). Tokens of one
window are correlated (one passage), so a domain's standard error is the clustered (ratio-estimator) one over
windows, not the per-token ``sd / sqrt(n)``: with ``L = sum(s) / sum(m)`` over ``k`` windows,

    SE^2 = k / (k - 1) * sum_i (s_i - L m_i)^2 / (sum m)^2.

Domains are independent: the macro mean over ``K`` domains has ``SE = sqrt(sum_d SE_d^2) / K``.

What early stopping and the best checkpoint decide on is the *change* of the selection loss between
evaluations of the same windows; its SE is the same formula on the per-window differences ``s_i - s'_i``
(paired), and stays at a few thousandths of a nat while the level's SE grows tenfold along a run (the
per-token spread widens as the model learns). So the evaluated windows follow from a target for the paired SE
(``training.eval_se_target``), derived once: the first :data:`CHOICE_EVALUATION` evaluations score every
window, the paired SE of the change between the last two of them sets the fraction
``f = min(1, (SE_pair / target)^2)`` of each domain's windows, taken evenly spaced (:func:`choose_subset`).
Later evaluations score those windows only and report the difference estimator
``L_full(choice) + (L_subset(t) - L_subset(choice))``, so values stay comparable with the full-set ones before
the choice, and changes between them are exactly the subset's changes.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

#: The evaluation at which the windows are chosen, from its change since the one before. Not the second: the
#: first evaluation of a small subset falls in the LR warmup and that of a large one after a whole epoch of
#: fast learning, so their first change is atypical (measured on the default study: 0.3x to 1.8x the run's
#: median paired SE, against 1.0x to 2.6x for the change from the second to the third).
CHOICE_EVALUATION = 3
#: Rows of a domain's per-window array: summed nats, scored tokens, their UTF-8 bytes, evaluated (0/1).
NATS, TOKENS, BYTES, SEEN = range(4)
WINDOW_ROWS = 4


def clustered_se(nats: np.ndarray, tokens: np.ndarray) -> float:
    """Standard error of ``sum(nats) / sum(tokens)`` with windows as clusters; nan below 2 windows."""
    k, total = len(nats), float(np.sum(tokens))
    if k < 2 or total <= 0:
        return math.nan
    mean = float(np.sum(nats)) / total
    return math.sqrt(k / (k - 1) * float(np.sum((nats - mean * tokens) ** 2))) / total


def macro_se(se_by_domain: Mapping[str, float], domains: Iterable[str] | None = None) -> float:
    """SE of the macro mean over ``domains`` (default: all) of independent per-domain means."""
    names = list(se_by_domain if domains is None else domains)
    if not names:
        return math.nan
    return math.sqrt(sum(se_by_domain[d] ** 2 for d in names)) / len(names)


def evenly_spaced(n_windows: int, k: int) -> np.ndarray:
    """``k`` distinct window indices spread evenly over ``n_windows`` (a systematic sample from 0)."""
    k = max(1, min(n_windows, k))
    return np.unique(np.arange(k) * n_windows // k)


def _mean(arr: np.ndarray, w: np.ndarray, row: int) -> float:
    denom = float(arr[TOKENS, w].sum()) if row == NATS else float(arr[BYTES, w].sum()) * math.log(2)
    return float(arr[NATS, w].sum()) / denom if denom else math.nan


@dataclass
class EvalSubset:
    """The validation windows scored after the choice, why, and the difference estimator's offsets."""

    target: float
    """``training.eval_se_target``: the paired SE (nats) asked of a change of the selection loss."""
    chosen_at_step: int
    """The step of the evaluation where the choice was made (the last one to score every window)."""
    pair_se: float
    """Paired SE of the selection loss's change into that evaluation from the one before, on every window."""
    fraction: float
    """Share of each domain's windows kept: ``min(1, (pair_se / target)^2)``."""
    windows: dict[str, list[int]]
    """The kept windows per domain (evenly spaced indices)."""
    loss_offset: dict[str, float]
    """Per domain: full-set loss minus subset loss at the choice (added to every later subset loss)."""
    bpb_offset: dict[str, float]
    """The same for bits per byte."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EvalSubset:
        return cls(**dict(data))


def choose_subset(
    current: Mapping[str, np.ndarray],
    previous: Mapping[str, np.ndarray],
    selection_domains: list[str],
    target: float,
    step: int,
) -> EvalSubset:
    """The windows a paired SE of ``target`` needs, from two evaluations of every window (see module doc)."""
    pair = {}
    for d in selection_domains:
        both = np.flatnonzero((current[d][SEEN] > 0) & (previous[d][SEEN] > 0))
        pair[d] = clustered_se(current[d][NATS, both] - previous[d][NATS, both], current[d][TOKENS, both])
    pair_se = macro_se(pair, selection_domains)
    fraction = min(1.0, (pair_se / target) ** 2) if math.isfinite(pair_se) else 1.0
    windows, loss_offset, bpb_offset = {}, {}, {}
    for d, arr in current.items():
        seen = np.flatnonzero(arr[SEEN] > 0)
        kept = seen[evenly_spaced(len(seen), max(2, math.ceil(fraction * len(seen))))]
        windows[d] = [int(w) for w in kept]
        loss_offset[d] = _mean(arr, seen, NATS) - _mean(arr, kept, NATS)
        bpb_offset[d] = _mean(arr, seen, BYTES) - _mean(arr, kept, BYTES)
    return EvalSubset(target, step, pair_se, fraction, windows, loss_offset, bpb_offset)


def summarize(
    sums: Mapping[str, np.ndarray],
    selection_domains: list[str],
    subset: EvalSubset | None = None,
    previous: Mapping[str, np.ndarray] | None = None,
) -> dict[str, Any]:
    """Losses, bits per byte and their precision from one evaluation's per-window sums.

    With a ``subset``, each domain's values are the difference estimator over its kept windows; with the
    ``previous`` evaluation's sums, ``delta_se`` is the paired SE of the selection loss's change since then.
    """
    loss, bpb, se, delta, tokens, nbytes, windows = {}, {}, {}, {}, {}, {}, 0
    for d, arr in sums.items():
        w = np.flatnonzero(arr[SEEN] > 0)
        if subset is not None and d in subset.windows:
            w = np.intersect1d(w, np.asarray(subset.windows[d], dtype=np.int64))
        loss[d] = _mean(arr, w, NATS) + (subset.loss_offset.get(d, 0.0) if subset else 0.0)
        bpb[d] = _mean(arr, w, BYTES) + (subset.bpb_offset.get(d, 0.0) if subset else 0.0)
        se[d] = clustered_se(arr[NATS, w], arr[TOKENS, w])
        tokens[d], nbytes[d], windows = int(arr[TOKENS, w].sum()), int(arr[BYTES, w].sum()), windows + len(w)
        if previous is not None and d in previous:
            both = np.intersect1d(w, np.flatnonzero(previous[d][SEEN] > 0))
            delta[d] = clustered_se(arr[NATS, both] - previous[d][NATS, both], arr[TOKENS, both])
    return {
        "loss_by_domain": loss,
        "bpb_by_domain": bpb,
        "se_by_domain": se,
        "loss_se": macro_se(se),
        "selection_se": macro_se(se, selection_domains),
        "delta_se": macro_se(delta, selection_domains) if delta else None,
        "tokens_by_domain": tokens,
        "bytes_by_domain": nbytes,
        "windows": windows,
    }
