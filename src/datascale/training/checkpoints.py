"""Checkpoints in every strategy: one file, or a sharded directory, both loadable here.

A strategy whose :class:`~datascale.training.strategy.StrategySpec` has ``sharded_checkpoints`` (FSDP through
``ModelParallelStrategy`` with ``save_distributed_checkpoint``) writes a directory per checkpoint: one
``__<rank>_0.distcp`` shard per rank, ``.metadata`` and Lightning's ``meta.pt`` (hyper-parameters, loops,
callbacks). :func:`consolidate` gathers it, in one process and without a process group, into the single-file
layout the other strategies write, so :func:`load_gpt` gives the plain :class:`~datascale.model.GPT` for
analysis whatever strategy trained it. Loading looks at the path itself (:func:`is_sharded`), not at a
config: a checkpoint is read without knowing which run wrote it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import torch

from datascale.model import GPT, GPTConfig

MODEL_PREFIX = "model."  # GPTLightningModule holds the GPT as ``self.model``


def is_sharded(path: Path) -> bool:
    return Path(path).is_dir() and (Path(path) / ".metadata").is_file()


def load_sharded(folder: Path) -> dict[str, Any]:
    """A sharded checkpoint directory as a full, single-file-style checkpoint dict (on the CPU)."""
    from lightning_fabric.utilities.load import _load_distributed_checkpoint

    checkpoint = _load_distributed_checkpoint(Path(folder))
    optimizer_keys = sorted(
        (k for k in checkpoint if re.fullmatch(r"optimizer_\d+", k)), key=lambda k: int(k.split("_")[1])
    )
    if optimizer_keys:
        checkpoint["optimizer_states"] = [checkpoint.pop(k) for k in optimizer_keys]
    return checkpoint


def consolidate(folder: Path, out: Path | None = None) -> Path:
    """Write the sharded checkpoint ``folder`` as one file (default ``<folder>.consolidated.ckpt``)."""
    folder = Path(folder)
    out = Path(out) if out is not None else folder.with_name(folder.stem + ".consolidated.ckpt")
    tmp = out.with_name(out.name + ".tmp")
    torch.save(load_sharded(folder), tmp)
    os.replace(tmp, out)  # atomic: a reader never sees half a file
    return out


def load_checkpoint(path: Path) -> dict[str, Any]:
    """A Lightning checkpoint from a file or a sharded directory."""
    path = Path(path)
    if is_sharded(path):
        return load_sharded(path)
    return torch.load(path, map_location="cpu", weights_only=True)  # plain tensors and containers only


def model_state(checkpoint: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The GPT's own state dict out of a Lightning module checkpoint (``model.`` prefix removed)."""
    return {
        k[len(MODEL_PREFIX) :]: v for k, v in checkpoint["state_dict"].items() if k.startswith(MODEL_PREFIX)
    }


def load_gpt(path: Path) -> GPT:
    """The plain GPT of a run's checkpoint (file or sharded directory), in eval mode, all keys checked."""
    checkpoint = load_checkpoint(path)
    model = GPT(GPTConfig(**checkpoint["hyper_parameters"]["model"]))
    model.load_state_dict(model_state(checkpoint), strict=True)
    return model.eval()
