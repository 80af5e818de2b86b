"""Downstream evaluation of a pretrained run on the offline suite (``downstream=suite``), on rank 0.

Classification tasks are fine-tuned in each of ``finetune.modes`` (:mod:`datascale.training.finetune`).
Multiple-choice continuation tasks are scored without training: a CLM by the summed log-likelihood of each
option's tokens given the context, an MLM by the option's pseudo-log-likelihood (each option token masked in
turn, its log-probability summed). The option scores' softmax gives the task loss. Results go into the
record's ``downstream`` field and to W&B as ``downstream/<task>/<mode>/<metric>``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf

from datascale.artifacts import DataArtifacts
from datascale.configs import instantiate_group
from datascale.data.downstream import DownstreamSuite
from datascale.data.tokenizer import load_tokenizer
from datascale.model import GPT
from datascale.training.datamodule import IGNORE_INDEX
from datascale.training.finetune import TaskResult, finetune_classifier, macro_f1, pad_batch, subsample
from datascale.training.objective import FinetuneBudget
from datascale.training.strategy import strategy_spec

log = logging.getLogger("datascale.training")
Encode = Callable[[str], list[int]]


def option_scores_clm(model: GPT, context: list[int], options: Sequence[list[int]]) -> torch.Tensor:
    """Summed log-likelihood of each option's tokens given the context (context cut from the left to fit)."""
    seq_len = model.cfg.seq_len
    rows, targets = [], []
    for option in options:
        option = option[: seq_len // 2]
        ids = (context[-(seq_len + 1 - len(option)) :] + option)[-(seq_len + 1) :]
        rows.append(ids[:-1])
        targets.append([IGNORE_INDEX] * (len(ids) - 1 - len(option)) + option)
    inputs, _ = pad_batch(rows, seq_len)
    target_ids = torch.full((len(options), seq_len), IGNORE_INDEX, dtype=torch.int64)
    for i, t in enumerate(targets):
        target_ids[i, : len(t)] = torch.tensor(t)
    device = next(model.parameters()).device
    losses = model(inputs.to(device), target_ids.to(device))
    return -losses.sum(dim=1).cpu()


def option_scores_pseudo(
    model: GPT, context: list[int], options: Sequence[list[int]], mask_id: int
) -> torch.Tensor:
    """Pseudo-log-likelihood of each option (bidirectional model): one copy per option token, that token
    masked, the log-probabilities of the true tokens summed."""
    seq_len, device = model.cfg.seq_len, next(model.parameters()).device
    scores = []
    for option in options:
        option = option[: seq_len // 2]
        ids = (context[-(seq_len - len(option)) :] + option)[-seq_len:]
        start = len(ids) - len(option)
        base = torch.tensor(ids, dtype=torch.int64)
        copies = base.repeat(len(option), 1)
        positions = torch.arange(start, len(ids))
        copies[torch.arange(len(option)), positions] = mask_id
        labels = torch.full_like(copies, IGNORE_INDEX)
        labels[torch.arange(len(option)), positions] = base[positions]
        losses = model(copies.to(device), labels.to(device))
        scores.append(-losses.sum().cpu())
    return torch.stack(scores)


def score_multiple_choice(
    model: GPT, task: str, items: Sequence[dict], encode: Encode, mask_id: int | None
) -> TaskResult:
    """Zero-shot scoring of continuation items: CLM likelihood, or MLM pseudo-likelihood with ``mask_id``."""
    predicted, losses = [], []
    gold = [int(item["answer"]) for item in items]
    with torch.no_grad():
        for item, answer in zip(items, gold, strict=True):
            context, options = encode(item["context"]), [encode(o) for o in item["options"]]
            if mask_id is None:
                scores = option_scores_clm(model, context, options)
            else:
                scores = option_scores_pseudo(model, context, options, mask_id)
            predicted.append(int(scores.argmax()))
            losses.append(float(F.cross_entropy(scores.unsqueeze(0), torch.tensor([answer]))))
    n_options = len(items[0]["options"])
    counts = np.bincount(gold, minlength=n_options)
    return TaskResult(
        task=task,
        mode="zeroshot" if mask_id is None else "pseudo",
        accuracy=float(np.mean(np.asarray(predicted) == np.asarray(gold))),
        macro_f1=macro_f1(predicted, gold, n_options),
        loss=float(np.mean(losses)),
        chance=1 / n_options,
        majority=float(counts.max() / counts.sum()),
        n_test=len(items),
        steps=0,
    )


def evaluate_suite(
    model: GPT,
    manifest_path: Path,
    tokenizer_path: str,
    budget: FinetuneBudget,
    workdir: Path,
    mask_id: int | None = None,
) -> dict[str, dict[str, Any]]:
    """Every task of the suite: ``{"<task>@<mode>": TaskResult as a dict}``."""
    manifest = json.loads(Path(manifest_path).read_text())
    tasks = json.loads((Path(manifest_path).parent / "tasks.json").read_text())
    tokenizer = load_tokenizer(Path(tokenizer_path))

    def encode(text: str) -> list[int]:
        return list(tokenizer.encode(text).ids)

    model = model.eval()
    device = next(model.parameters()).device
    results: dict[str, dict[str, Any]] = {}
    for name in sorted(tasks):
        started, info = time.time(), manifest["tasks"][name]
        if info["kind"] == "classify":
            scored = [
                finetune_classifier(
                    model, name, tasks[name], info["labels"], mode, budget, encode, device, workdir / mode
                )
                for mode in budget.modes
            ]
        else:
            items = subsample(tasks[name]["test"], budget.max_items, budget.seed)
            scored = [score_multiple_choice(model, name, items, encode, mask_id)]
        for result in scored:
            results[f"{name}@{result.mode}"] = result.to_dict()
            log.info(
                "downstream %s [%s]: accuracy %.3f (chance %.3f), macro-F1 %.3f, loss %.3f, %d steps, %.0f s",
                name, result.mode, result.accuracy, result.chance, result.macro_f1, result.loss,
                result.steps, time.time() - started,
            )  # fmt: skip
    return results


def downstream_metrics(results: dict[str, dict[str, Any]]) -> dict[str, float]:
    """W&B metric names: ``downstream/<task>/<mode>/{accuracy,macro_f1,loss}``."""
    return {
        f"downstream/{r['task']}/{r['mode']}/{metric}": float(r[metric])
        for r in results.values()
        for metric in ("accuracy", "macro_f1", "loss")
    }


def run_downstream(
    cfg: DictConfig, model: GPT, artifacts: DataArtifacts, run_dir: Path, trainer: pl.Trainer
) -> dict[str, dict[str, Any]]:
    """The worker's step after testing: the suite on the best checkpoint's weights, on global rank 0 ({}
    when disabled, and under a strategy that shards parameters (FSDP), whose rank-0 model is not whole)."""
    manifest_path, tokenizer_path = artifacts.downstream_manifest, artifacts.tokenizer_path
    suite = instantiate_group(cfg, "downstream", DownstreamSuite) if "downstream" in cfg else None
    enabled = suite is not None and suite.enabled and bool(manifest_path)
    sharded = strategy_spec(cfg.get("strategy")).shards_parameters
    if not enabled or not trainer.is_global_zero or sharded:
        return {}
    budget = instantiate_group(cfg, "finetune", FinetuneBudget) if "finetune" in cfg else FinetuneBudget()
    mask_id = None
    if not model.causal:
        mask_token = OmegaConf.select(cfg, "tokenizer.mask_token")
        mask_id = load_tokenizer(Path(tokenizer_path)).token_to_id(mask_token)
    results = evaluate_suite(
        model, Path(manifest_path), tokenizer_path, budget, run_dir / "downstream", mask_id
    )
    for logger in trainer.loggers:
        logger.log_metrics(downstream_metrics(results))
        logger.save()
    return results
