"""The Lightning module: next-token loss, exact per-domain nats and bits per byte, AdamW with warmup+cosine.

Evaluation sums nats, target tokens and target bytes per held-out window, reduces the sums over ranks, and
only then divides: ``loss = nats / tokens`` and ``bpb = nats / (bytes * ln 2)`` are exact, not means of batch
means, and the per-window sums give each loss its clustered standard error. ``val/loss`` is the macro mean
over domains (each domain counts the same); ``val/selection_loss``, the early-stopping and checkpoint monitor,
is the macro mean over the selection domains (``training.select_on``: all of them by default, or the run's
training domains). With ``training.eval_se_target`` the validations after the third score the windows that
precision needs (``datascale.training.precision``); the test set is always scored whole.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.trainer.states import TrainerFn

from datascale.model import GPT, GPTConfig
from datascale.training.datamodule import IGNORE_INDEX
from datascale.training.precision import (
    CHOICE_EVALUATION,
    WINDOW_ROWS,
    EvalSubset,
    choose_subset,
    summarize,
)
from datascale.training.schedule import Cooldown, WarmupCosine

#: Checkpoint key of this module's own resume state.
RESUME_KEY = "datascale"

OptimizerFactory = Callable[[Iterable[dict[str, Any]]], torch.optim.Optimizer]


def param_groups(model: torch.nn.Module) -> list[dict[str, Any]]:
    """Weight decay on matrices and embeddings (>= 2-D) only; never on LayerNorm weights or biases."""
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    return [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]


def rng_states() -> dict[str, Any]:
    """Python, NumPy and torch (CPU and CUDA) RNG states as tensors and ints (loadable with weights_only)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    states: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": [kind, torch.from_numpy(np.asarray(keys, dtype=np.int64)), pos, has_gauss, cached],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    random.setstate(states["python"])
    kind, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


#: What early stopping and the best checkpoint monitor: the macro-mean validation loss over the selection
#: domains (``training.select_on``); ``val/loss`` is always the macro mean over every held-out domain.
SELECTION_METRIC = "val/selection_loss"


class GPTLightningModule(pl.LightningModule):
    def __init__(
        self,
        model_cfg: GPTConfig,
        optimizer: OptimizerFactory,
        schedule: WarmupCosine,
        planned_steps: int,
        warmup_steps: int,
        batch_tokens: int,
        unique_tokens: int,
        domains: list[str],
        accumulation: int = 1,
        compile_blocks: bool = False,
        selection_domains: list[str] | None = None,
        shard_parameters: bool = False,
        eval_se_target: float | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(
            {
                "model": model_cfg.to_dict(),
                "planned_steps": planned_steps,
                "warmup_steps": warmup_steps,
                "batch_tokens": batch_tokens,
                "unique_tokens": unique_tokens,
                "domains": list(domains),
            },
            logger=False,
        )
        self.model = GPT(model_cfg)
        self.optimizer_factory = optimizer
        self.schedule = schedule
        self.planned_steps = planned_steps
        self.warmup_steps = warmup_steps
        self.batch_tokens = batch_tokens
        self.unique_tokens = unique_tokens
        self.domains = list(domains)
        self.selection_domains = list(selection_domains or domains)  # ``val/selection_loss`` averages them
        self.accumulation = accumulation  # micro-batches per optimizer step
        self.compile_blocks = compile_blocks
        self.shard_parameters = shard_parameters  # the strategy shards parameters (its StrategySpec says so)
        self._train_loss_sum: torch.Tensor | None = None
        self._configured = False  # configure_model ran (sharding and compiling happen once)
        self.eval_history: list[dict[str, Any]] = []  # one entry per validation (rank 0 and others alike)
        self.test_results: dict[str, Any] | None = None
        self.eval_se_target = eval_se_target  # None: every validation scores every window
        self.eval_subset: EvalSubset | None = None  # the validation windows chosen at the third evaluation
        self._sums: list[torch.Tensor] | None = None
        self._previous_val: dict[str, np.ndarray] | None = None  # the last validation's per-window sums
        self.resumed_tokens: int | None = None  # tokens_seen saved in the checkpoint this run resumed from
        self.resumed_at_steps: list[int] = []  # every step this run was resumed at, oldest first
        self.cooldown: Cooldown | None = None  # set before the cooldown fit (``schedule=wsd_cooldown``)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
        return self.model(idx, targets)

    # ---- training -----------------------------------------------------------------------------------------
    def tokens_seen(self, steps: int | None = None) -> int:
        return (self.global_step if steps is None else steps) * self.batch_tokens

    def configure_model(self) -> None:
        """With a strategy that shards parameters (FSDP: ``ModelParallelStrategy`` sets a device mesh): shard
        each block, then the root; compile blocks if asked. Lightning calls this before fit and again before
        test, so it runs once."""
        if self._configured:
            return
        self._configured = True
        if self.compile_blocks:
            for block in self.model.blocks:
                block.compile()  # in place: parameter names (and so checkpoints) are unchanged
        if not self.shard_parameters:
            return
        from torch.distributed.fsdp import fully_shard

        if self.device_mesh is None:
            raise RuntimeError("the strategy shards parameters but gave the module no device mesh")
        mesh = self.device_mesh["data_parallel"]
        for block in self.model.blocks:
            fully_shard(block, mesh=mesh)
        fully_shard(self.model, mesh=mesh)  # embeddings, tied LM head, final LayerNorm

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        inputs, targets = batch
        loss = self.train_loss(inputs, targets)
        if self.accumulation > 1:  # equal micro-batches: the step's loss is the mean of theirs
            micro = loss.detach() / self.accumulation
            self._train_loss_sum = micro if self._train_loss_sum is None else self._train_loss_sum + micro
            if (batch_idx + 1) % self.accumulation:
                return loss
            step_loss, self._train_loss_sum = self._train_loss_sum, None
        else:
            step_loss = loss
        self._log_train_step(step_loss)
        return loss

    def train_loss(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The micro-batch's training loss (the objective's hook: MLM overrides it)."""
        return self.model(inputs, targets).mean()

    def _log_train_step(self, loss: torch.Tensor) -> None:
        """Once per optimizer step: the global batch's loss (mean over ranks), LR, tokens and epochs."""
        tokens = self.tokens_seen(self.global_step + 1)  # after this update
        self.log("train/loss", loss, prog_bar=True, sync_dist=True)
        optimizer = self.optimizers()
        assert not isinstance(optimizer, list)
        self.log("train/lr", optimizer.param_groups[0]["lr"])
        self.log("tokens_seen", float(tokens))
        self.log("epochs", tokens / self.unique_tokens, prog_bar=True)

    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer_factory(param_groups(self.model))
        scheduler = self.schedule.build(optimizer, self.warmup_steps, self.planned_steps, self.cooldown)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # ---- resume --------------------------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """What Lightning does not save itself: the evaluation history, tokens seen and the RNG states."""
        previous = self._previous_val or {}
        checkpoint[RESUME_KEY] = {
            "eval_history": self.eval_history,
            "tokens_seen": self.tokens_seen(),
            "rng": rng_states(),
            "resumed_at_steps": self.resumed_at_steps,
            "eval_subset": None if self.eval_subset is None else self.eval_subset.to_dict(),
            "previous_val": {d: torch.from_numpy(a) for d, a in previous.items()},
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get(RESUME_KEY)
        if state is None or self.trainer.state.fn != TrainerFn.FITTING:  # testing a checkpoint: no resume
            return
        self.eval_history = list(state["eval_history"])
        self.resumed_tokens = int(state["tokens_seen"])
        self.resumed_at_steps = [*state["resumed_at_steps"], int(checkpoint["global_step"])]
        subset, previous = state.get("eval_subset"), state.get("previous_val") or {}
        self.eval_subset = None if subset is None else EvalSubset.from_dict(subset)
        self._previous_val = {d: t.numpy() for d, t in previous.items()} or None
        set_rng_states(state["rng"])

    def on_train_start(self) -> None:
        """After a resume, the restored step must give the saved tokens_seen (D is the measured variable)."""
        if self.resumed_tokens is not None and self.tokens_seen() != self.resumed_tokens:
            raise RuntimeError(
                f"resumed at step {self.global_step} = {self.tokens_seen()} tokens, but the checkpoint saw"
                f" {self.resumed_tokens}"
            )

    # ---- evaluation ---------------------------------------------------------------------------------------
    def _eval_datasets(self, stage: str) -> list[Any]:
        loaders = self.trainer.val_dataloaders if stage == "val" else self.trainer.test_dataloaders
        if loaders is None:
            return []
        return [loader.dataset for loader in (loaders if isinstance(loaders, list) else [loaders])]

    def _start_eval(self, stage: str) -> None:
        """Per domain, one column per held-out window: rows nats, scored tokens, bytes, evaluated
        (``datascale.training.precision``); ranks fill their windows and sum the arrays."""
        sizes = [ds.n_windows for ds in self._eval_datasets(stage)]
        self._sums = [torch.zeros(WINDOW_ROWS, n, dtype=torch.float64, device=self.device) for n in sizes]

    def _eval_step(self, batch: tuple[torch.Tensor, ...], dataloader_idx: int) -> None:
        inputs, targets, target_bytes, windows = batch
        losses = self.model(inputs, targets)
        self._add_windows(dataloader_idx, windows, losses, targets != IGNORE_INDEX, target_bytes)

    def _add_windows(
        self,
        dataloader_idx: int,
        windows: torch.Tensor,
        losses: torch.Tensor,
        scored: torch.Tensor,
        target_bytes: torch.Tensor,
    ) -> None:
        """Add a batch's per-window nats, scored tokens and their bytes (the objective's hook: MLM scores
        the masked tokens only)."""
        assert self._sums is not None
        rows = torch.stack(
            [
                (losses.double() * scored).sum(1),
                scored.sum(1).double(),
                (target_bytes * scored).sum(1).double(),
                torch.ones(len(windows), dtype=torch.float64, device=losses.device),
            ]
        )
        self._sums[dataloader_idx].index_add_(1, windows.to(losses.device), rows)

    def _reduced_sums(self) -> dict[str, np.ndarray]:
        assert self._sums is not None
        sizes = [t.shape[1] for t in self._sums]
        summed = self.trainer.strategy.reduce(torch.cat(self._sums, dim=1), reduce_op="sum")
        parts = torch.split(summed.cpu(), sizes, dim=1)
        return {d: part.numpy() for d, part in zip(self.domains, parts, strict=True)}

    def _finish_eval(self, stage: str) -> dict[str, Any]:
        sums, self._sums = self._reduced_sums(), None
        previous = self._previous_val if stage == "val" else None
        choosing = len(self.eval_history) + 1 >= CHOICE_EVALUATION and previous is not None
        if stage == "val" and self.eval_se_target and self.eval_subset is None and choosing and previous:
            self._choose_subset(sums, previous)
        subset = self.eval_subset if stage == "val" else None
        result = summarize(sums, self.selection_domains, subset, previous)
        by_domain, bpb = result["loss_by_domain"], result["bpb_by_domain"]
        macro = sum(by_domain.values()) / len(by_domain)
        metrics = {}
        for d in self.domains:
            metrics[f"{stage}/{d}/loss"] = by_domain[d]
            metrics[f"{stage}/{d}/bpb"] = bpb[d]
        self.log_dict(metrics, prog_bar=False)
        self.log(f"{stage}/loss", macro, prog_bar=True)
        self.log(f"{stage}/loss_se", result["loss_se"])
        selection = sum(by_domain[d] for d in self.selection_domains) / len(self.selection_domains)
        if stage == "val":
            self.log(SELECTION_METRIC, selection)
            self._previous_val = sums
        optimizers = self.trainer.optimizers if self._trainer is not None else []
        return result | {
            "step": self.global_step,
            "tokens_seen": self.tokens_seen(),
            "lr": float(optimizers[0].param_groups[0]["lr"]) if optimizers else None,
            "loss": macro,
            "selection_loss": selection,
            "positions": result["windows"] * self.model.cfg.seq_len,
        }

    def _choose_subset(self, sums: dict[str, np.ndarray], previous: dict[str, np.ndarray]) -> None:
        """At the third evaluation: the validation windows ``training.eval_se_target`` needs, used from the
        next evaluation on (``datascale.training.precision``)."""
        assert self.eval_se_target is not None
        self.eval_subset = choose_subset(
            sums, previous, self.selection_domains, self.eval_se_target, self.global_step
        )
        for domain, dataset in zip(self.domains, self._eval_datasets("val"), strict=True):
            dataset.select(np.asarray(self.eval_subset.windows[domain]))

    def on_validation_epoch_start(self) -> None:
        self._start_eval("val")

    def validation_step(
        self, batch: tuple[torch.Tensor, ...], batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        self._eval_step(batch, dataloader_idx)

    def on_validation_epoch_end(self) -> None:
        result = self._finish_eval("val")
        if not self.trainer.sanity_checking:
            self.log("tokens_seen", float(self.tokens_seen()))
            self.log("epochs", self.tokens_seen() / self.unique_tokens)
            self.eval_history.append(result)

    def on_test_epoch_start(self) -> None:
        self._start_eval("test")

    def test_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_step(batch, dataloader_idx)

    def on_test_epoch_end(self) -> None:
        self.test_results = self._finish_eval("test")
