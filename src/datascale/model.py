"""A small GPT-style decoder in one readable file, plus named size presets and parameter counts.

Pre-LayerNorm blocks, causal ``scaled_dot_product_attention`` (bidirectional with ``causal=False``, for masked
LM objectives), learned position embeddings, a 4x GELU MLP and
an LM head tied to the token embedding (GPT-2 / nanoGPT layout). Initialisation follows GPT-2: N(0, 0.02) for
every weight, with the residual output projections scaled by 1/sqrt(2 * n_layer) so that the residual stream's
variance does not grow with depth.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

# The config lives in a torch-free module so the Hydra job can validate it without importing torch.
from datascale.model_config import GPTConfig, preset_names

__all__ = ["GPT", "GPTConfig", "count_parameters", "preset_names"]


class SelfAttention(nn.Module):
    def __init__(self, cfg: GPTConfig, causal: bool = True) -> None:
        super().__init__()
        self.causal = causal  # False: every position attends to every other (masked LM)
        self.n_head = cfg.n_head
        self.dropout = cfg.dropout
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model, bias=cfg.bias)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model, bias=cfg.bias)
        self.proj.residual_projection = True  # type: ignore[assignment]  # marks the scaled init
        self.resid_drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = self.qkv(x).split(c, dim=2)
        # (B, T, C) -> (B, heads, T, head_dim)
        q, k, v = (z.view(b, t, self.n_head, c // self.n_head).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(
            q, k, v, dropout_p=self.dropout if self.training else 0.0, is_causal=self.causal
        )
        y = y.transpose(1, 2).contiguous().view(b, t, c)
        return self.resid_drop(self.proj(y))


class MLP(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.fc = nn.Linear(cfg.d_model, 4 * cfg.d_model, bias=cfg.bias)
        self.proj = nn.Linear(4 * cfg.d_model, cfg.d_model, bias=cfg.bias)
        self.proj.residual_projection = True  # type: ignore[assignment]
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.proj(F.gelu(self.fc(x))))


class Block(nn.Module):
    """Pre-LN transformer block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, cfg: GPTConfig, causal: bool = True) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.d_model, bias=cfg.bias)
        self.attn = SelfAttention(cfg, causal)
        self.ln2 = nn.LayerNorm(cfg.d_model, bias=cfg.bias)
        self.mlp = MLP(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
    def __init__(self, cfg: GPTConfig, causal: bool = True) -> None:
        super().__init__()
        self.cfg = cfg
        self.causal = causal
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.pos_emb = nn.Embedding(cfg.seq_len, cfg.d_model)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg, causal) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.d_model, bias=cfg.bias)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        self.lm_head.weight = self.tok_emb.weight  # weight tying: one matrix, counted once
        self.apply(self._init_weights)

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            std = (
                0.02 / math.sqrt(2 * self.cfg.n_layer)
                if getattr(module, "residual_projection", False)
                else 0.02
            )
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def hidden(self, idx: torch.Tensor) -> torch.Tensor:
        """The final (LayerNormed) hidden states ``(B, T, d_model)``: what the LM head and task heads read."""
        _, t = idx.shape
        if t > self.cfg.seq_len:
            raise ValueError(f"sequence length {t} > model seq_len {self.cfg.seq_len}")
        pos = torch.arange(t, device=idx.device)
        x = self.drop(self.tok_emb(idx) + self.pos_emb(pos))
        for block in self.blocks:
            x = block(x)
        return self.ln_f(x)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
        """Logits ``(B, T, vocab)``; with ``targets`` the per-token losses ``(B, T)`` in nats instead.

        Per-token losses (not the mean) let evaluation sum nats and bytes exactly; targets equal to -100 are
        ignored and get loss 0.
        """
        logits = self.lm_head(self.hidden(idx))
        if targets is None:
            return logits
        losses = F.cross_entropy(
            logits.float().view(-1, logits.size(-1)), targets.reshape(-1), reduction="none", ignore_index=-100
        )
        return losses.view(targets.shape)


def count_parameters(model: nn.Module) -> dict[str, int]:
    """``total`` (tied weights once) and ``non_embedding`` (without token and position embeddings).

    ``non_embedding`` is the N of Kaplan-style scaling laws; the tied LM head is the token embedding, so it is
    excluded too.
    """
    seen: set[int] = set()
    total = 0
    for (
        p
    ) in model.parameters():  # parameters() already yields a shared tensor once; the set makes it explicit
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    embedding = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Embedding))
    return {"total": total, "non_embedding": total - embedding}
