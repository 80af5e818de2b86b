"""GPT: shapes, causality, weight tying, parameter counts, init, presets."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import OmegaConf

from datascale import CONF_DIR
from datascale.config_errors import ConfigError
from datascale.model import GPT, GPTConfig, count_parameters, preset_names


def tiny(**kw: object) -> GPT:
    torch.manual_seed(0)
    cfg = {"vocab_size": 50, "seq_len": 16, "n_layer": 1, "n_head": 2, "d_model": 8, **kw}
    return GPT(GPTConfig(**cfg))  # type: ignore[arg-type]


def test_shapes_and_per_token_loss() -> None:
    model = tiny()
    idx = torch.randint(0, 50, (3, 10))
    targets = torch.randint(0, 50, (3, 10))
    logits = model(idx)
    assert logits.shape == (3, 10, 50)
    losses = model(idx, targets)
    assert losses.shape == (3, 10)
    # per-token nats are exactly what cross-entropy averages
    torch.testing.assert_close(losses.mean(), F.cross_entropy(logits.view(-1, 50), targets.view(-1)))


def test_ignored_targets_have_zero_loss() -> None:
    model = tiny()
    idx = torch.randint(0, 50, (1, 6))
    targets = torch.tensor([[1, 2, -100, 3, -100, 4]])
    losses = model(idx, targets)
    assert losses[0, 2] == 0 and losses[0, 4] == 0
    assert (losses[0, [0, 1, 3, 5]] > 0).all()


def test_causal_future_tokens_do_not_change_earlier_logits() -> None:
    model = tiny(n_layer=2).eval()
    idx = torch.randint(0, 50, (1, 12))
    changed = idx.clone()
    changed[0, 7] = (idx[0, 7] + 1) % 50
    a, b = model(idx), model(changed)
    torch.testing.assert_close(a[:, :7], b[:, :7], rtol=0, atol=1e-6)
    assert (a[:, 7:] - b[:, 7:]).abs().amax(dim=-1).min() > 1e-6  # position 7 and later do see it


def test_weight_tying_is_one_tensor() -> None:
    model = tiny()
    assert model.lm_head.weight is model.tok_emb.weight
    model(torch.randint(0, 50, (2, 5)), torch.randint(0, 50, (2, 5))).mean().backward()
    assert model.tok_emb.weight.grad is not None  # gets gradient from both the embedding and the head
    names = [n for n, _ in model.named_parameters()]
    assert "lm_head.weight" not in names and "tok_emb.weight" in names


def test_parameter_counts_by_hand() -> None:
    # V=50, T=16, d=8, 1 layer, no bias:
    # tok 50*8=400, pos 16*8=128; block: ln1 8 + qkv 8*24=192 + proj 64 + ln2 8 + fc 8*32=256 + proj 32*8=256
    # = 784 final ln 8; lm_head tied (0)
    assert count_parameters(tiny()) == {"total": 400 + 128 + 784 + 8, "non_embedding": 784 + 8}
    # biases add: 3 LN x 8 + qkv 24 + attn proj 8 + fc 32 + mlp proj 8 = 96
    assert count_parameters(tiny(bias=True)) == {"total": 1320 + 96, "non_embedding": 792 + 96}


def test_default_preset_is_the_calibrated_0p9m_model() -> None:
    model = GPT(GPTConfig.from_preset("gpt_0p9m", vocab_size=4096, seq_len=128))
    # 4096*128 + 128*128 embeddings; per block 12*128^2 + 2*128 (LN); final LN 128
    assert count_parameters(model) == {"total": 934_528, "non_embedding": 2 * (12 * 128**2 + 256) + 128}


def test_residual_projections_get_scaled_init() -> None:
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=64, seq_len=8, n_layer=4, n_head=4, d_model=256))
    expected = 0.02 / math.sqrt(2 * 4)
    assert model.blocks[0].attn.proj.weight.std().item() == pytest.approx(expected, rel=0.05)
    assert model.blocks[3].mlp.proj.weight.std().item() == pytest.approx(expected, rel=0.05)
    assert model.blocks[0].mlp.fc.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert model.tok_emb.weight.std().item() == pytest.approx(0.02, rel=0.05)


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"d_model": 10, "n_head": 4}, "d_model"),
        ({"n_layer": 0}, "n_layer"),
        ({"vocab_size": -1}, "vocab_size"),
        ({"dropout": 1.5}, "dropout"),
    ],
)
def test_invalid_shapes_raise_config_error(kw: dict, field: str) -> None:
    base = {"vocab_size": 50, "seq_len": 16, "n_layer": 1, "n_head": 2, "d_model": 8}
    with pytest.raises(ConfigError) as err:
        GPTConfig(**{**base, **kw})
    assert err.value.field == field


def test_sequence_longer_than_context_is_rejected() -> None:
    with pytest.raises(ValueError, match="seq_len"):
        tiny()(torch.zeros(1, 17, dtype=torch.long))


@pytest.mark.parametrize("name", preset_names())
def test_preset_yaml_is_what_from_preset_builds(name: str) -> None:
    node = OmegaConf.load(CONF_DIR / "model" / f"{name}.yaml")
    node.vocab_size = 4096  # normally ${tokenizer.vocab_size}
    cfg = instantiate(node)
    assert isinstance(cfg, GPTConfig)
    assert cfg == GPTConfig.from_preset(name, vocab_size=4096)
    assert cfg.seq_len == 128


#: Total parameters each preset's name claims (at vocab 4096, seq_len 128; tied embeddings counted once).
CLAIMED_PARAMS = {"gpt_0p9m": 0.94e6, "gpt_3m": 3.0e6, "gpt_10m": 9.95e6}


@pytest.mark.parametrize("name", sorted(CLAIMED_PARAMS))
def test_presets_have_the_parameter_counts_their_names_claim(name: str) -> None:
    model = GPT(GPTConfig.from_preset(name, vocab_size=4096))
    assert count_parameters(model)["total"] == pytest.approx(CLAIMED_PARAMS[name], rel=0.02)


def test_unknown_preset_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="gpt_huge"):
        GPTConfig.from_preset("gpt_huge", vocab_size=4096)


@pytest.mark.parametrize(
    "cfg",
    [GPTConfig.from_preset(n, vocab_size=4096) for n in ("gpt_tiny", "gpt_0p9m", "gpt_3m")]
    + [GPTConfig.from_depth(d, vocab_size=1000, seq_len=64) for d in (1, 3)]
    + [GPTConfig(vocab_size=500, seq_len=32, n_layer=2, n_head=2, d_model=16, bias=True)],
)
def test_parameter_counts_without_torch_match_the_model(cfg: GPTConfig) -> None:
    assert cfg.parameter_counts() == count_parameters(GPT(cfg))


def test_depth_ladder_spans_one_and_a_half_decades_of_non_embedding_parameters() -> None:
    counts = [
        GPTConfig.from_depth(d, vocab_size=4096).parameter_counts()["non_embedding"] for d in (1, 2, 3, 4)
    ]
    assert counts == sorted(counts) and counts[-1] / counts[0] >= 10**1.5
    leaf = OmegaConf.load(CONF_DIR / "model" / "depth.yaml")
    leaf.vocab_size, leaf.depth = 4096, 3
    assert instantiate(leaf) == GPTConfig.from_depth(3, vocab_size=4096)
