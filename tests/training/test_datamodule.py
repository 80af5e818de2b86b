"""The training stream (determinism, exact coverage, world-size invariance) and the eval windows."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from datascale.config_errors import ConfigError
from datascale.training.datamodule import (
    IGNORE_INDEX,
    EvalWindows,
    TokenDataModule,
    TrainStream,
    epoch_window_starts,
)
from datascale.training.protocol import TrainingProtocol

L = 8  # seq_len


def positions(n: int) -> np.ndarray:
    """A token stream whose values are their own positions: a window's values say where it came from."""
    return np.arange(n, dtype=np.int64)


def take(stream: TrainStream, n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return list(itertools.islice(iter(stream), n))


def test_epoch_windows_tile_the_subset_from_a_seeded_offset() -> None:
    u = 203
    for epoch in range(5):
        starts = epoch_window_starts(u, L, seed=3, epoch=epoch)
        offset = int(starts.min())
        assert 0 <= offset < L and np.all((starts - offset) % L == 0)
        assert len(starts) == (u - offset - 1) // L and len(set(starts.tolist())) == len(starts)
        assert starts.max() + L + 1 <= u  # every window lies inside the subset
        np.testing.assert_array_equal(starts, epoch_window_starts(u, L, seed=3, epoch=epoch))  # pure function
    assert not np.array_equal(epoch_window_starts(u, L, 3, 0), epoch_window_starts(u, L, 4, 0))


def test_stream_is_deterministic_and_seed_dependent() -> None:
    tokens = positions(300)
    a = take(TrainStream(tokens, L, global_batch=4, seed=1), 20)
    b = take(TrainStream(tokens, L, global_batch=4, seed=1), 20)
    c = take(TrainStream(tokens, L, global_batch=4, seed=2), 20)
    assert all(torch.equal(x[0], y[0]) for x, y in zip(a, b, strict=True))
    assert not all(torch.equal(x[0], y[0]) for x, y in zip(a, c, strict=True))


def test_each_epoch_covers_its_windows_exactly_once_and_only_subset_tokens() -> None:
    u, batch = 203, 4
    tokens = positions(u)
    epochs = [epoch_window_starts(u, L, 0, e) for e in range(4)]
    n_windows = sum(len(e) for e in epochs[:3])
    n_batches = n_windows // batch
    rows = torch.cat([x for x, _ in take(TrainStream(tokens, L, batch, seed=0), n_batches)])
    targets = torch.cat([y for _, y in take(TrainStream(tokens, L, batch, seed=0), n_batches)])
    # inputs and targets are consecutive runs of the subset, targets shifted by one
    assert torch.equal(rows[:, 1:], targets[:, :-1]) and torch.all(targets[:, -1] == rows[:, -1] + 1)
    assert torch.all(rows.diff(dim=1) == 1) and rows.min() >= 0 and targets.max() < u
    # the stream is epoch 0's windows, then epoch 1's, ... in their permuted order (epochs run into each
    # other)
    expected = np.concatenate(epochs)[: n_batches * batch]
    np.testing.assert_array_equal(rows[:, 0].numpy(), expected)
    # within epoch 0 every target position from offset+1 to offset+n*L is predicted exactly once
    e0 = targets[: len(epochs[0])].flatten().numpy()
    offset = int(epochs[0].min())
    np.testing.assert_array_equal(np.sort(e0), np.arange(offset + 1, offset + 1 + len(epochs[0]) * L))


def test_rank_slicing_gives_the_same_global_order_for_world_sizes_1_and_2() -> None:
    tokens = positions(500)
    single = take(TrainStream(tokens, L, global_batch=6, seed=5), 30)
    r0 = take(TrainStream(tokens, L, global_batch=6, seed=5, rank=0, world_size=2), 30)
    r1 = take(TrainStream(tokens, L, global_batch=6, seed=5, rank=1, world_size=2), 30)
    for (x, y), (x0, y0), (x1, y1) in zip(single, r0, r1, strict=True):
        assert x0.shape == (3, L)
        merged = torch.empty_like(x)
        merged[0::2], merged[1::2] = x0, x1
        assert torch.equal(merged, x)
        assert torch.equal(torch.cat([y0, y1]).sort(dim=0).values, y.sort(dim=0).values)
    with pytest.raises(ConfigError, match="divisible by world size"):
        TrainStream(tokens, L, global_batch=6, seed=0, world_size=4)


def test_subset_smaller_than_one_batch_wraps_across_epochs() -> None:
    u = 2 * L + 3  # one or two windows per epoch, 16 per batch
    tokens = positions(u)
    x, y = take(TrainStream(tokens, L, global_batch=16, seed=0), 1)[0]
    assert x.shape == (16, L) and x.max() < u and y.max() < u
    per_epoch = [len(epoch_window_starts(u, L, 0, e)) for e in range(16)]
    expected = np.concatenate([epoch_window_starts(u, L, 0, e) for e in range(16)])[:16]
    np.testing.assert_array_equal(x[:, 0].numpy(), expected)
    assert sum(per_epoch[:8]) <= 16  # the first batch spans several epochs


def test_resume_start_step_continues_the_same_stream() -> None:
    tokens = positions(400)
    full = take(TrainStream(tokens, L, 4, seed=9), 12)
    resumed = take(TrainStream(tokens, L, 4, seed=9, start_step=7), 5)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(full[7:], resumed, strict=True))


def test_too_small_subset_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unique_tokens"):
        TrainStream(positions(L + 1), L, 4, seed=0)


def test_eval_windows_predict_every_token_once_with_its_bytes() -> None:
    n = 45
    tokens = positions(n)
    token_bytes = np.arange(100) % 4  # token id -> UTF-8 bytes (0 for "specials")
    ds = EvalWindows(tokens, token_bytes, L)
    assert len(ds) == 6  # ceil(44 / 8)
    targets = ds.targets[ds.targets != IGNORE_INDEX]
    np.testing.assert_array_equal(targets.numpy(), np.arange(1, n))
    assert int(ds.target_bytes.sum()) == int(token_bytes[1:n].sum())
    assert int(ds.target_bytes[ds.targets == IGNORE_INDEX].sum()) == 0
    # the cap keeps the first max_tokens targets; ranks split the windows without overlap
    capped = EvalWindows(tokens, token_bytes, L, max_tokens=20)
    assert (capped.targets != IGNORE_INDEX).sum() == 20
    parts = [EvalWindows(tokens, token_bytes, L, rank=r, world_size=2) for r in range(2)]
    both = torch.stack([part[i][1] for part in parts for i in range(len(part))])
    assert sorted(both[both != IGNORE_INDEX].tolist()) == list(range(1, n))
    assert sorted(part[i][3] for part in parts for i in range(len(part))) == list(range(6))


def test_eval_windows_subset_is_split_over_ranks_and_keeps_window_indices() -> None:
    """A chosen subset of windows (the precision target's) is what every rank evaluates, evenly shared."""
    tokens, token_bytes = positions(45), np.ones(100, dtype=np.int64)
    parts = [EvalWindows(tokens, token_bytes, L, rank=r, world_size=2) for r in range(2)]
    for part in parts:
        part.select(np.array([0, 2, 3, 5]))
    assert [[part[i][3] for i in range(len(part))] for part in parts] == [[0, 3], [2, 5]]
    window = parts[1][1]
    assert torch.equal(window[1], parts[1].targets[5])  # item = the window it names
    parts[0].select(None)
    assert len(parts[0]) == 3


def test_datamodule_loaders_and_vocab_check() -> None:
    rng = np.random.default_rng(0)
    evals = {d: {"val": rng.integers(0, 30, 100), "test": rng.integers(0, 30, 90)} for d in ("b", "a")}
    protocol = TrainingProtocol(batch_tokens=32, eval_tokens_per_domain=50, eval_batch_sequences=4)
    dm = TokenDataModule(rng.integers(0, 30, 200), evals, np.ones(30), L, protocol, seed=0, vocab_size=30)
    assert dm.domains == ["a", "b"]
    val = dm.val_dataloader()
    assert len(val) == 2 and sum(int((b[1] != IGNORE_INDEX).sum()) for b in val[0]) == 50
    x, _y = next(iter(dm.train_dataloader()))
    assert x.shape == (4, L) and x.dtype == torch.int64
    with pytest.raises(ConfigError, match=r"model\.vocab_size"):
        TokenDataModule(rng.integers(0, 30, 200), evals, np.ones(30), L, protocol, seed=0, vocab_size=20)


def test_accumulation_cuts_each_ranks_rows_in_order_into_equal_micro_batches() -> None:
    """1 rank x 1 micro-batch, 2 ranks x 1, 1 rank x 3 and 2 ranks x 3: one step sees the same samples."""
    tokens = positions(2000)
    whole = take(TrainStream(tokens, L, global_batch=12, seed=3), 4)
    one_rank = take(TrainStream(tokens, L, global_batch=12, seed=3, accumulation=3), 12)
    ranks = [
        take(TrainStream(tokens, L, 12, seed=3, rank=r, world_size=2, accumulation=3), 12) for r in (0, 1)
    ]
    for step, (x, _) in enumerate(whole):
        micro = one_rank[3 * step : 3 * step + 3]
        assert all(m[0].shape == (4, L) for m in micro)
        assert torch.equal(torch.cat([m[0] for m in micro]), x)
        for r in (0, 1):
            rows = torch.cat([m[0] for m in ranks[r][3 * step : 3 * step + 3]])
            assert rows.shape == (6, L) and torch.equal(rows, x[r::2])
    with pytest.raises(ConfigError, match="x gradient accumulation 5"):
        TrainStream(tokens, L, global_batch=12, seed=0, world_size=2, accumulation=5)


def test_evaluation_batches_are_cut_to_the_forward_memory_bound_with_the_same_scores() -> None:
    """``worker.max_micro_batch_tokens`` bounds evaluation forward passes too (4-sequence batches ran 1.3x
    faster than 32-sequence ones on this CPU: the logits fit its caches); each window is scored alone, so
    every window's summed loss is the same bit for bit whatever the batch."""
    from datascale.model import GPT, GPTConfig

    rng = np.random.default_rng(0)
    evals = {"a": {"val": rng.integers(0, 64, 400), "test": rng.integers(0, 64, 90)}}
    protocol = TrainingProtocol(batch_tokens=32, eval_batch_sequences=16)
    sizes = {}
    for bound in (None, 1000, 3 * L, 1):  # no bound; above the eval batch; 3 sequences; below one sequence
        dm = TokenDataModule(
            rng.integers(0, 64, 200), evals, np.ones(64), L, protocol, 0, max_forward_tokens=bound
        )
        sizes[bound] = dm.eval_batch_sequences
    assert sizes == {None: 16, 1000: 16, 3 * L: 3, 1: 1}
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=64, seq_len=L, n_layer=2, d_model=32, n_head=2)).eval()
    windows = EvalWindows(evals["a"]["val"], np.ones(64), L)
    scores = []
    for batch in (16, 3):
        loader = torch.utils.data.DataLoader(windows, batch_size=batch, shuffle=False)
        with torch.no_grad():
            scores.append(
                torch.cat([(model(x, y).double() * (y != IGNORE_INDEX)).sum(1) for x, y, _, _ in loader])
            )
    assert len(scores[0]) == len(windows) and torch.equal(scores[0], scores[1])
