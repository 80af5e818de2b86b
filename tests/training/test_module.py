"""GPTLightningModule: weight-decay groups and the optimizer/scheduler it configures."""

from __future__ import annotations

import functools

import pytest
import torch

from datascale.model import GPTConfig
from datascale.training.module import GPTLightningModule, param_groups
from datascale.training.schedule import WarmupCosine


def make_module(bias: bool = False) -> GPTLightningModule:
    cfg = GPTConfig(vocab_size=50, seq_len=16, n_layer=2, n_head=2, d_model=8, bias=bias)
    optimizer = functools.partial(torch.optim.AdamW, lr=1e-2, betas=(0.9, 0.95), weight_decay=0.1)
    return GPTLightningModule(
        cfg,
        optimizer,
        WarmupCosine(0.1),
        planned_steps=100,
        warmup_steps=10,
        batch_tokens=64,
        unique_tokens=1000,
        domains=["a", "b"],
    )


@pytest.mark.parametrize("bias", [False, True])
def test_weight_decay_only_on_matrices_and_embeddings(bias: bool) -> None:
    module = make_module(bias)
    decay, no_decay = param_groups(module.model)
    names = {id(p): n for n, p in module.model.named_parameters()}
    decay_names = sorted(names[id(p)] for p in decay["params"])
    no_decay_names = sorted(names[id(p)] for p in no_decay["params"])
    assert all(p.dim() >= 2 for p in decay["params"]) and all(p.dim() == 1 for p in no_decay["params"])
    assert "tok_emb.weight" in decay_names and "pos_emb.weight" in decay_names  # tied head: once, via tok_emb
    assert "blocks.0.ln1.weight" in no_decay_names and "ln_f.weight" in no_decay_names
    assert ("blocks.0.attn.qkv.bias" in no_decay_names) == bias
    assert len(decay_names) + len(no_decay_names) == len(names)  # every parameter exactly once
    assert no_decay["weight_decay"] == 0.0


def test_configured_optimizer_and_schedule() -> None:
    module = make_module()
    conf = module.configure_optimizers()
    optimizer, scheduler = conf["optimizer"], conf["lr_scheduler"]["scheduler"]
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.1, 0.0]
    assert optimizer.param_groups[0]["betas"] == (0.9, 0.95)
    assert conf["lr_scheduler"]["interval"] == "step"
    assert optimizer.param_groups[0]["lr"] == pytest.approx(1e-3)  # first update: peak / warmup
    for _ in range(9):
        optimizer.step()
        scheduler.step()
    assert optimizer.param_groups[1]["lr"] == pytest.approx(1e-2)  # both groups follow the schedule
    assert module.tokens_seen(5) == 320
