"""The Lightning module: next-token loss, exact per-domain nats and bits per byte, AdamW with warmup+cosine.

Evaluation sums nats, target tokens and target bytes per domain over the whole (capped) eval set, reduces the
sums over ranks, and only then divides: ``loss = nats / tokens`` and ``bpb = nats / (bytes * ln 2)`` are
exact, not means of batch means. ``val/loss`` is the macro mean over domains (each domain counts the same);
``val/selection_loss``, the early-stopping and checkpoint monitor, is the macro mean over the selection
domains (``training.select_on``: all of them by default, or the run's training domains).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.trainer.states import TrainerFn

from datascale.model import GPT, GPTConfig
from datascale.training.datamodule import IGNORE_INDEX
from datascale.training.schedule import WarmupCosine

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
        self._sums: torch.Tensor | None = None
        self.resumed_tokens: int | None = None  # tokens_seen saved in the checkpoint this run resumed from
        self.resumed_at_steps: list[int] = []  # every step this run was resumed at, oldest first

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
        scheduler = self.schedule.build(optimizer, self.warmup_steps, self.planned_steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # ---- resume --------------------------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """What Lightning does not save itself: the evaluation history, tokens seen and the RNG states."""
        checkpoint[RESUME_KEY] = {
            "eval_history": self.eval_history,
            "tokens_seen": self.tokens_seen(),
            "rng": rng_states(),
            "resumed_at_steps": self.resumed_at_steps,
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get(RESUME_KEY)
        if state is None or self.trainer.state.fn != TrainerFn.FITTING:  # testing a checkpoint: no resume
            return
        self.eval_history = list(state["eval_history"])
        self.resumed_tokens = int(state["tokens_seen"])
        self.resumed_at_steps = [*state["resumed_at_steps"], int(checkpoint["global_step"])]
        set_rng_states(state["rng"])

    def on_train_start(self) -> None:
        """After a resume, the restored step must give the saved tokens_seen (D is the measured variable)."""
        if self.resumed_tokens is not None and self.tokens_seen() != self.resumed_tokens:
            raise RuntimeError(
                f"resumed at step {self.global_step} = {self.tokens_seen()} tokens, but the checkpoint saw"
                f" {self.resumed_tokens}"
            )

    # ---- evaluation ---------------------------------------------------------------------------------------
    def _start_eval(self) -> None:
        # rows: summed nats, target tokens, target bytes; one column per domain
        self._sums = torch.zeros(3, len(self.domains), dtype=torch.float64, device=self.device)

    def _eval_step(self, batch: tuple[torch.Tensor, ...], dataloader_idx: int) -> None:
        inputs, targets, target_bytes = batch
        losses = self.model(inputs, targets)
        assert self._sums is not None
        self._sums[0, dataloader_idx] += losses.double().sum()
        self._sums[1, dataloader_idx] += (targets != IGNORE_INDEX).sum()
        self._sums[2, dataloader_idx] += target_bytes.sum()

    def _finish_eval(self, stage: str) -> dict[str, Any]:
        assert self._sums is not None
        sums = self.trainer.strategy.reduce(self._sums, reduce_op="sum")
        nats, tokens, nbytes = (sums[i].tolist() for i in range(3))
        by_domain = {d: nats[i] / tokens[i] if tokens[i] else math.nan for i, d in enumerate(self.domains)}
        bpb = {
            d: nats[i] / (nbytes[i] * math.log(2)) if nbytes[i] else math.nan
            for i, d in enumerate(self.domains)
        }
        macro = sum(by_domain.values()) / len(by_domain)
        metrics = {}
        for d in self.domains:
            metrics[f"{stage}/{d}/loss"] = by_domain[d]
            metrics[f"{stage}/{d}/bpb"] = bpb[d]
        self.log_dict(metrics, prog_bar=False)
        self.log(f"{stage}/loss", macro, prog_bar=True)
        selection = sum(by_domain[d] for d in self.selection_domains) / len(self.selection_domains)
        if stage == "val":
            self.log(SELECTION_METRIC, selection)
        optimizers = self.trainer.optimizers if self._trainer is not None else []
        result = {
            "step": self.global_step,
            "tokens_seen": self.tokens_seen(),
            "lr": float(optimizers[0].param_groups[0]["lr"]) if optimizers else None,
            "loss": macro,
            "selection_loss": selection,
            "loss_by_domain": by_domain,
            "bpb_by_domain": bpb,
            "tokens_by_domain": dict(zip(self.domains, map(int, tokens), strict=True)),
            "bytes_by_domain": dict(zip(self.domains, map(int, nbytes), strict=True)),
        }
        self._sums = None
        return result

    def on_validation_epoch_start(self) -> None:
        self._start_eval()

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
        self._start_eval()

    def test_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_step(batch, dataloader_idx)

    def on_test_epoch_end(self) -> None:
        self.test_results = self._finish_eval("test")
