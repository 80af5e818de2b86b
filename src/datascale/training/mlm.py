"""BERT-style masked-LM training on the same GPT blocks, with bidirectional attention.

Selection and replacement follow BERT: each real token is selected with probability ``mask_rate``; a selected
token becomes the mask token with probability ``replace_mask``, a uniformly random token with probability
``replace_random``, and stays itself otherwise; only selected tokens carry a loss. Training draws a fresh
masking every step; evaluation draws its masking from ``Objective.eval_seed`` and the batch's position (on the
CPU, so it does not depend on the device), so every run is scored on the same masked positions. Per-domain
sums are over masked tokens: ``loss`` is nats per masked token, ``bpb`` nats over the masked tokens' bytes.
"""

from __future__ import annotations

from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from tokenizers import Tokenizer

from datascale.config_errors import ConfigError
from datascale.configs import instantiate_group
from datascale.model import GPT
from datascale.training.datamodule import IGNORE_INDEX
from datascale.training.module import RESUME_KEY, GPTLightningModule
from datascale.training.objective import Objective


def mask_tokens(
    tokens: torch.Tensor,
    valid: torch.Tensor,
    objective: Objective,
    mask_id: int,
    vocab_size: int,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(model inputs, labels): labels are the original tokens at selected positions and -100 elsewhere."""
    device = generator.device
    select_u = torch.rand(tokens.shape, generator=generator, device=device)
    replace_u = torch.rand(tokens.shape, generator=generator, device=device)
    random_tokens = torch.randint(0, vocab_size, tokens.shape, generator=generator, device=device)
    select_u, replace_u, random_tokens = (z.to(tokens.device) for z in (select_u, replace_u, random_tokens))
    selected = (select_u < objective.mask_rate) & valid
    to_mask = selected & (replace_u < objective.replace_mask)
    to_random = selected & ~to_mask & (replace_u < objective.replace_mask + objective.replace_random)
    inputs = torch.where(to_mask, torch.full_like(tokens, mask_id), tokens)
    inputs = torch.where(to_random, random_tokens, inputs)
    labels = torch.where(selected, tokens, torch.full_like(tokens, IGNORE_INDEX))
    return inputs, labels


def eval_generator(objective: Objective, dataloader_idx: int, batch_idx: int) -> torch.Generator:
    """The fixed held-out masking of one eval batch: a function of the eval seed and the batch's place."""
    seed = objective.eval_seed * 1_000_003 + dataloader_idx * 10_007 + batch_idx
    return torch.Generator().manual_seed(seed)


class MLMLightningModule(GPTLightningModule):
    """GPTLightningModule with the masked-LM objective: same model file, data, evaluation sums and records."""

    def __init__(
        self,
        *args: Any,
        objective: Objective,
        mask_id: int,
        mask_vocab: int,
        train_seed: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.model = GPT(self.model.cfg, causal=False)
        self.objective = objective
        self.mask_id = mask_id
        self.mask_vocab = mask_vocab  # random replacements come from the tokenizer's real vocabulary
        self.train_seed = train_seed
        self._train_generator: torch.Generator | None = None
        self._eval_batch_idx = 0

    def _masked(
        self, tokens: torch.Tensor, valid: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        inputs, labels = mask_tokens(tokens, valid, self.objective, self.mask_id, self.mask_vocab, generator)
        return inputs.masked_fill(~valid, 0), labels

    def train_loss(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean loss over the selected tokens of the window (``targets``: the window's real tokens)."""
        if self._train_generator is None:
            seed = self.train_seed * 7919 + self.global_rank  # ranks draw different maskings
            self._train_generator = torch.Generator().manual_seed(seed)
        every_token = torch.ones_like(targets, dtype=torch.bool)
        masked, labels = self._masked(targets, every_token, self._train_generator)
        losses = self.model(masked, labels)
        return losses.sum() / (labels != IGNORE_INDEX).sum().clamp(min=1)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)  # the training masks continue where they stopped on resume
        generator = self._train_generator
        checkpoint[RESUME_KEY]["mlm_generator"] = None if generator is None else generator.get_state()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        state = checkpoint.get(RESUME_KEY, {}).get("mlm_generator")
        if state is not None and self.resumed_tokens is not None:  # resuming training, not testing
            self._train_generator = torch.Generator()
            self._train_generator.set_state(state)

    def _eval_step(self, batch: tuple[torch.Tensor, ...], dataloader_idx: int) -> None:
        _, targets, target_bytes, windows = batch
        valid = targets != IGNORE_INDEX
        generator = eval_generator(self.objective, dataloader_idx, self._eval_batch_idx)
        masked, labels = self._masked(targets.masked_fill(~valid, 0), valid, generator)
        losses = self.model(masked, labels)
        self._add_windows(dataloader_idx, windows, losses, labels != IGNORE_INDEX, target_bytes)

    def validation_step(
        self, batch: tuple[torch.Tensor, ...], batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        self._eval_batch_idx = batch_idx  # the batch's place in its domain's loader seeds its masking
        super().validation_step(batch, batch_idx, dataloader_idx)

    def test_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_batch_idx = batch_idx
        super().test_step(batch, batch_idx, dataloader_idx)


def objective_of(cfg: DictConfig) -> Objective:
    """The run's ``objective`` leaf; ``clm`` for configs from before the group existed."""
    return instantiate_group(cfg, "objective", Objective) if "objective" in cfg else Objective()


def objective_module(
    cfg: DictConfig, tokenizer_path: str, vocab_size: int
) -> tuple[type[GPTLightningModule], dict[str, Any]]:
    """The Lightning module class of the run's objective and its extra keyword arguments."""
    objective = objective_of(cfg)
    if objective.causal:
        return GPTLightningModule, {}
    mask_token = OmegaConf.select(cfg, "tokenizer.mask_token", default=None)
    mask_id = Tokenizer.from_file(tokenizer_path).token_to_id(mask_token) if mask_token else None
    if mask_id is None:
        raise ConfigError(
            "tokenizer.mask_token", mask_token, 'objective=mlm needs a mask token, e.g. "<|mask|>"'
        )
    extra = {"objective": objective, "mask_id": int(mask_id), "mask_vocab": vocab_size}
    return MLMLightningModule, extra | {"train_seed": int(cfg.seed)}
