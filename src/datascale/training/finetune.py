"""Fine-tuning a pretrained GPT on a downstream classification task: a LightningModule with a task head.

The Transformer's final hidden states are mean-pooled over the real tokens of a passage and fed to a linear
head. ``probe`` freezes the Transformer (a linear probe of what pretraining learnt); ``finetune`` trains
everything. Training has a fixed small budget (``FinetuneBudget.max_steps``) and early-stops on the task's
validation loss; the test split is scored once with the best-validation weights.
"""

from __future__ import annotations

import copy
import math
import shutil
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint
from pytorch_lightning.strategies import SingleDeviceStrategy
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from datascale.model import GPT
from datascale.training.objective import FinetuneBudget


@dataclass
class TaskResult:
    """One downstream evaluation: a task scored in one mode (record field ``downstream``)."""

    task: str
    mode: str
    """``probe`` | ``finetune`` (trained head) | ``zeroshot`` (CLM likelihood) | ``pseudo`` (MLM)."""
    accuracy: float
    macro_f1: float
    loss: float
    """Test cross-entropy of the task (nats per example)."""
    chance: float
    majority: float
    n_test: int
    steps: int
    """Optimizer steps of the head (0 without training)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def macro_f1(predicted: Sequence[int], gold: Sequence[int], n_classes: int) -> float:
    """Mean F1 over the classes that occur in ``gold`` or ``predicted`` (others are not counted)."""
    pred, true = np.asarray(predicted), np.asarray(gold)
    scores = []
    for c in range(n_classes):
        tp = int(np.sum((pred == c) & (true == c)))
        fp, fn = int(np.sum((pred == c) & (true != c))), int(np.sum((pred != c) & (true == c)))
        if tp + fp + fn:
            scores.append(2 * tp / (2 * tp + fp + fn))
    return float(np.mean(scores)) if scores else math.nan


def subsample(items: Sequence[dict], n: int, seed: int) -> list[dict]:
    """At most ``n`` items, a seeded random choice: a split is ordered by document, so its first items would
    cover only some labels."""
    if len(items) <= n:
        return list(items)
    return [items[i] for i in sorted(np.random.default_rng(seed).permutation(len(items))[:n])]


def pad_batch(sequences: Sequence[Sequence[int]], length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, valid) int64/bool ``(N, length)``: each sequence cut to ``length`` and right-padded with 0."""
    ids = torch.zeros(len(sequences), length, dtype=torch.int64)
    valid = torch.zeros(len(sequences), length, dtype=torch.bool)
    for i, seq in enumerate(sequences):
        seq = list(seq)[:length]
        ids[i, : len(seq)] = torch.tensor(seq, dtype=torch.int64)
        valid[i, : len(seq)] = True
    return ids, valid


class TaskClassifier(pl.LightningModule):
    """A copy of the pretrained GPT plus a linear head over mean-pooled final hidden states."""

    def __init__(self, backbone: GPT, n_labels: int, mode: str, lr: float) -> None:
        super().__init__()
        self.backbone = copy.deepcopy(backbone)
        self.head = nn.Linear(backbone.cfg.d_model, n_labels)
        self.mode, self.lr = mode, lr
        if mode == "probe":
            self.backbone.requires_grad_(False)
        self._eval_sums = torch.zeros(2, dtype=torch.float64)
        self.test_outputs: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def forward(self, ids: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        hidden = self.backbone.hidden(ids)
        weights = valid.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1)
        return self.head(pooled)

    def training_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> torch.Tensor:
        if self.mode == "probe":
            self.backbone.eval()  # a probe reads a fixed Transformer (no dropout)
        ids, valid, labels = batch
        return F.cross_entropy(self(ids, valid), labels)

    def on_validation_epoch_start(self) -> None:
        self._eval_sums = torch.zeros(2, dtype=torch.float64)

    def validation_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> None:
        ids, valid, labels = batch
        self._eval_sums += torch.tensor(
            [F.cross_entropy(self(ids, valid), labels, reduction="sum").item(), len(labels)]
        )

    def on_validation_epoch_end(self) -> None:
        self.log("val/loss", float(self._eval_sums[0] / self._eval_sums[1]))

    def test_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> None:
        ids, valid, labels = batch
        logits = self(ids, valid)
        losses = F.cross_entropy(logits, labels, reduction="none")
        self.test_outputs.append((logits.argmax(-1).cpu(), labels.cpu(), losses.cpu()))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        params = [p for p in self.parameters() if p.requires_grad]
        return torch.optim.AdamW(params, lr=self.lr, weight_decay=0.0)


def _loader(
    examples: Sequence[dict], labels: Sequence[str], encode: Any, seq_len: int, batch: int, shuffle: bool
) -> DataLoader:
    ids, valid = pad_batch([encode(e["text"]) for e in examples], seq_len)
    y = torch.tensor([labels.index(e["label"]) for e in examples], dtype=torch.int64)
    generator = torch.Generator().manual_seed(0)
    return DataLoader(TensorDataset(ids, valid, y), batch_size=batch, shuffle=shuffle, generator=generator)


def finetune_classifier(
    backbone: GPT,
    task: str,
    splits: dict[str, list[dict]],
    labels: Sequence[str],
    mode: str,
    budget: FinetuneBudget,
    encode: Any,
    device: torch.device,
    workdir: Path,
) -> TaskResult:
    """Train the head (``probe``) or everything (``finetune``) on ``train``, early-stop on ``val``, score
    ``test`` with the best weights."""
    pl.seed_everything(budget.seed, verbose=False)
    seq_len = backbone.cfg.seq_len
    data = {s: subsample(splits[s], budget.max_items, budget.seed) for s in ("train", "val", "test")}
    loaders = {
        s: _loader(data[s], labels, encode, seq_len, budget.batch_size, shuffle=s == "train") for s in data
    }
    lr = budget.lr_probe if mode == "probe" else budget.lr_finetune
    module = TaskClassifier(backbone, len(labels), mode, lr)
    checkpoint = ModelCheckpoint(dirpath=workdir, monitor="val/loss", mode="min", save_top_k=1)
    trainer = pl.Trainer(
        strategy=SingleDeviceStrategy(device=device),
        max_steps=budget.max_steps,
        max_epochs=-1,
        val_check_interval=budget.eval_every,
        check_val_every_n_epoch=None,
        num_sanity_val_steps=0,
        callbacks=[EarlyStopping(monitor="val/loss", mode="min", patience=budget.patience), checkpoint],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(workdir),
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*does not have many workers.*")
        trainer.fit(module, loaders["train"], loaders["val"])
        trainer.test(module, loaders["test"], ckpt_path="best", verbose=False)
    shutil.rmtree(workdir, ignore_errors=True)  # checkpoints of a head are not kept
    pred, gold, losses = (torch.cat(z).tolist() for z in zip(*module.test_outputs, strict=True))
    counts = np.bincount(gold, minlength=len(labels))
    return TaskResult(
        task=task,
        mode=mode,
        accuracy=float(np.mean(np.asarray(pred) == np.asarray(gold))),
        macro_f1=macro_f1(pred, gold, len(labels)),
        loss=float(np.mean(losses)),
        chance=1 / len(labels),
        majority=float(counts.max() / counts.sum()),
        n_test=len(gold),
        steps=int(trainer.global_step),
    )
