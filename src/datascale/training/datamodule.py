"""Data for one run: the seeded, world-size-invariant epoch stream over the subset and fixed eval windows.

Training stream (docs/design.md): epoch ``e`` draws ``rng = default_rng([seed, e])``, a random offset in ``[0,
seq_len)``, and visits the non-overlapping ``seq_len + 1``-token windows (stride ``seq_len``) from that offset
in an ``rng`` permutation. Epochs follow each other without a break, and *global* batches are cut from that
infinite sequence of windows, so a batch may hold the end of one epoch and the start of the next (subsets
smaller than one batch work). Rank ``r`` of ``w`` takes rows ``r::w`` of each global batch, so the samples and
their order do not depend on the world size; with gradient accumulation a rank's rows are cut, in order, into
equal micro-batches. Nothing here is random except through ``rng``: the stream is a
pure function of ``(tokens, seq_len, seed)``.

Evaluation: each domain's val/test token stream (val capped, test whole) is cut into consecutive windows;
every token after the first is a target exactly once (the last window is padded and the padding masked with
-100), paired with its UTF-8 byte length so bits per byte are exact.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset

from datascale.config_errors import ConfigError
from datascale.training.protocol import TrainingProtocol

IGNORE_INDEX = -100


def epoch_window_starts(n_tokens: int, seq_len: int, seed: int, epoch: int) -> np.ndarray:
    """Start positions of epoch ``epoch``'s windows, in visiting order."""
    rng = np.random.default_rng([seed, epoch])
    offset = int(rng.integers(0, seq_len))
    n_windows = (n_tokens - offset - 1) // seq_len
    if n_windows < 1:
        raise ConfigError(
            "subset.unique_tokens",
            n_tokens,
            f"must be >= 2 * seq_len = {2 * seq_len} (one training window per epoch)",
        )
    starts = offset + seq_len * np.arange(n_windows, dtype=np.int64)
    return starts[rng.permutation(n_windows)]


class TrainStream(IterableDataset):
    """Infinite stream of this rank's rows of each global batch: ``(inputs, targets)`` int64 ``(B/w,
    seq_len)``."""

    def __init__(
        self,
        tokens: np.ndarray,
        seq_len: int,
        global_batch: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        start_step: int = 0,
        accumulation: int = 1,
    ) -> None:
        super().__init__()
        if global_batch % (world_size * accumulation):
            raise ConfigError(
                "training.batch_tokens",
                global_batch * seq_len,
                f"sequences per batch ({global_batch}) must be divisible by world size {world_size}"
                f" x gradient accumulation {accumulation}",
            )
        self.tokens = tokens
        self.seq_len = seq_len
        self.global_batch = global_batch
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.start_step = start_step  # global batches to skip: resuming at a step gives the same data
        self.accumulation = accumulation  # micro-batches per step: this rank's rows, cut in order
        epoch_window_starts(len(tokens), seq_len, seed, 0)  # fail now, not in the first training step

    def global_batches(self) -> Iterator[np.ndarray]:
        """Window starts of each global batch, from step 0 on; epochs run into each other."""
        epoch, pending = 0, np.empty(0, dtype=np.int64)
        while True:
            while len(pending) < self.global_batch:
                pending = np.concatenate(
                    [pending, epoch_window_starts(len(self.tokens), self.seq_len, self.seed, epoch)]
                )
                epoch += 1
            yield pending[: self.global_batch]
            pending = pending[self.global_batch :]

    def windows(self, starts: np.ndarray) -> np.ndarray:
        return np.asarray(self.tokens[starts[:, None] + np.arange(self.seq_len + 1)], dtype=np.int64)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for step, starts in enumerate(self.global_batches()):
            if step < self.start_step:
                continue
            rows = torch.from_numpy(self.windows(starts[self.rank :: self.world_size]))
            for micro in rows.chunk(self.accumulation):
                yield micro[:, :-1], micro[:, 1:]


class EvalWindows(Dataset):
    """Consecutive windows over one eval token stream: ``(inputs, targets, target_bytes, window)`` per item.

    Targets are tokens ``1 .. n-1`` of the (capped) stream, each exactly once; padding targets are -100 with 0
    bytes. ``window`` is the item's index among all windows of the stream (per-window sums give clustered
    standard errors, ``datascale.training.precision``). The evaluated windows are all of them, or the subset
    given to :meth:`select`; ``rank``/``world_size`` keep every ``w``-th of those from the ``r``-th, so ranks
    split the set (or subset) evenly without padding duplicates.
    """

    def __init__(
        self,
        tokens: np.ndarray,
        token_bytes: np.ndarray,
        seq_len: int,
        max_tokens: int | None = None,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        n = len(tokens) if max_tokens is None else min(len(tokens), max_tokens + 1)
        if n < 2:
            raise ConfigError("eval set", n, "needs at least 2 tokens")
        stream = np.asarray(tokens[:n], dtype=np.int64)
        n_windows = -(-(n - 1) // seq_len)
        padded = np.full(n_windows * seq_len + 1, IGNORE_INDEX, dtype=np.int64)
        padded[:n] = stream
        idx = np.arange(n_windows)[:, None] * seq_len + np.arange(seq_len + 1)
        windows = padded[idx]
        inputs = windows[:, :-1].copy()
        inputs[inputs == IGNORE_INDEX] = 0  # padded inputs only feed masked targets (causal attention)
        targets = windows[:, 1:].copy()
        nbytes = np.where(targets == IGNORE_INDEX, 0, np.asarray(token_bytes)[np.maximum(targets, 0)])
        self.inputs = torch.from_numpy(inputs)
        self.targets = torch.from_numpy(targets)
        self.target_bytes = torch.from_numpy(nbytes.astype(np.int64))
        self.n_targets = n - 1  # over all ranks and windows
        self.n_windows = n_windows
        self.rank, self.world_size = rank, world_size
        self.order = np.arange(n_windows)[rank::world_size]  # the windows this rank evaluates

    def select(self, windows: np.ndarray | None) -> None:
        """Evaluate only these windows (indices into all windows; None: all of them), split over ranks."""
        chosen = np.arange(self.n_windows) if windows is None else np.asarray(windows, dtype=np.int64)
        self.order = chosen[self.rank :: self.world_size]

    def __len__(self) -> int:
        return len(self.order)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
        w = int(self.order[i])
        return self.inputs[w], self.targets[w], self.target_bytes[w], w


class TokenDataModule(pl.LightningDataModule):
    """Training stream and per-domain val/test loaders (one loader per domain, in ``domains`` order)."""

    def __init__(
        self,
        train_tokens: np.ndarray,
        eval_sets: dict[str, dict[str, np.ndarray]],
        token_bytes: np.ndarray,
        seq_len: int,
        protocol: TrainingProtocol,
        seed: int,
        vocab_size: int | None = None,
        accumulation: int = 1,
        max_forward_tokens: int | None = None,
    ) -> None:
        super().__init__()
        protocol.validate(seq_len, unique_tokens=len(train_tokens))
        self.accumulation = accumulation  # micro-batches per optimizer step (each rank)
        # evaluation batches are cut to the memory bound of a forward pass (worker.max_micro_batch_tokens):
        # each window is scored alone, so the batch size changes no result (tests/training/test_datamodule.py)
        cap = protocol.eval_batch_sequences if max_forward_tokens is None else max_forward_tokens // seq_len
        self.eval_batch_sequences = max(1, min(protocol.eval_batch_sequences, cap))
        self.train_tokens = train_tokens
        self.eval_sets = eval_sets
        self.domains = sorted(eval_sets)
        self.token_bytes = np.asarray(token_bytes)
        self.seq_len = seq_len
        self.protocol = protocol
        self.seed = seed
        self.stream_start_step = 0  # the step the training stream started at (a resumed run: its step)
        if not self.domains:
            raise ConfigError("data.eval_caches", {}, "need at least one domain with val/test sets")
        if vocab_size is not None:
            top = max(int(np.max(train_tokens)), *(int(np.max(s[k])) for s in eval_sets.values() for k in s))
            if top >= vocab_size:
                raise ConfigError("model.vocab_size", vocab_size, f"must exceed the largest token id {top}")

    @classmethod
    def from_artifacts(
        cls,
        artifacts: Any,
        seq_len: int,
        protocol: TrainingProtocol,
        seed: int,
        vocab_size: int | None = None,
        accumulation: int = 1,
        max_forward_tokens: int | None = None,
    ) -> TokenDataModule:
        """Load the subset stream and the eval caches named by a ``DataArtifacts`` (no tokenisation)."""
        from datascale.data.subsets import SubsetManifest, load_subset_tokens
        from datascale.data.token_cache import TokenCache

        train_cache = TokenCache.open(Path(artifacts.train_cache))
        manifest = SubsetManifest.load(Path(artifacts.subset_manifest))
        train = load_subset_tokens(train_cache, manifest)
        if len(train) != artifacts.unique_tokens:
            raise RuntimeError(
                f"subset stream has {len(train)} tokens, manifest says {artifacts.unique_tokens}"
            )
        eval_sets = {
            domain: {split: TokenCache.open(Path(path)).tokens for split, path in splits.items()}
            for domain, splits in artifacts.eval_caches.items()
        }
        token_bytes = np.load(artifacts.token_bytes_path)
        return cls(
            train,
            eval_sets,
            token_bytes,
            seq_len,
            protocol,
            seed,
            vocab_size=vocab_size,
            accumulation=accumulation,
            max_forward_tokens=max_forward_tokens,
        )

    # ---- world --------------------------------------------------------------------------------------------
    def _rank_world(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    @property
    def unique_tokens(self) -> int:
        return len(self.train_tokens)

    # ---- loaders ------------------------------------------------------------------------------------------
    def train_stream(self, start_step: int = 0) -> TrainStream:
        rank, world = self._rank_world()
        return TrainStream(
            self.train_tokens,
            self.seq_len,
            self.protocol.global_batch_sequences(self.seq_len),
            self.seed,
            rank,
            world,
            start_step,
            self.accumulation,
        )

    def train_dataloader(self) -> DataLoader:
        """The stream from the trainer's step: 0, or the restored step of a resumed run (same data order)."""
        start = self.trainer.global_step if self.trainer is not None else 0
        self.stream_start_step = start
        return DataLoader(self.train_stream(start), batch_size=None, num_workers=0)

    def eval_dataset(self, domain: str, split: str) -> EvalWindows:
        """Validation sets are capped (they run many times) and, once the module chose the windows its
        precision target needs (a resumed run: before its first validation), restricted to them; a test set
        is evaluated whole, once."""
        rank, world = self._rank_world()
        cap = self.protocol.eval_tokens_per_domain if split == "val" else None
        dataset = EvalWindows(self.eval_sets[domain][split], self.token_bytes, self.seq_len, cap, rank, world)
        module = self.trainer.lightning_module if self.trainer is not None else None
        subset = getattr(module, "eval_subset", None) if split == "val" else None
        if subset is not None:
            dataset.select(np.asarray(subset.windows[domain]))
        return dataset

    def _eval_loaders(self, split: str) -> list[DataLoader]:
        return [
            DataLoader(
                self.eval_dataset(d, split),
                batch_size=self.eval_batch_sequences,
                shuffle=False,
                num_workers=0,
            )
            for d in self.domains
        ]

    def val_dataloader(self) -> list[DataLoader]:
        return self._eval_loaders("val")

    def test_dataloader(self) -> list[DataLoader]:
        return self._eval_loaders("test")
