"""The objectives: MLM masking rates and the 80/10/10 split, causal vs bidirectional attention, the config."""

from __future__ import annotations

import pytest
import torch

from datascale.config_errors import ConfigError
from datascale.data.tokenizer import BPETokenizer
from datascale.model import GPT, GPTConfig
from datascale.training.datamodule import IGNORE_INDEX
from datascale.training.mlm import eval_generator, mask_tokens
from datascale.training.objective import Objective

MASK_ID, VOCAB = 1, 512


def _tokens(n_rows: int = 200, length: int = 500) -> torch.Tensor:
    """Tokens that are never the mask id, so a mask-id input can only come from masking."""
    return torch.randint(2, VOCAB, (n_rows, length), generator=torch.Generator().manual_seed(0))


def test_mlm_masking_rates_and_80_10_10_split_on_a_fixed_seed() -> None:
    tokens = _tokens()
    valid = torch.ones_like(tokens, dtype=torch.bool)
    inputs, labels = mask_tokens(
        tokens, valid, Objective(name="mlm"), MASK_ID, VOCAB, eval_generator(Objective(), 0, 0)
    )
    selected = labels != IGNORE_INDEX
    n = selected.sum().item()
    assert selected.float().mean().item() == pytest.approx(0.15, abs=0.005)  # 100k tokens: sd 0.0011
    assert torch.equal(labels[selected], tokens[selected])  # the loss targets are the original tokens
    assert torch.equal(inputs[~selected], tokens[~selected])  # unselected tokens are untouched
    as_mask = (inputs[selected] == MASK_ID).sum().item() / n
    changed = ((inputs[selected] != MASK_ID) & (inputs[selected] != tokens[selected])).sum().item() / n
    kept = (inputs[selected] == tokens[selected]).sum().item() / n
    assert as_mask == pytest.approx(0.8, abs=0.01)
    assert changed == pytest.approx(0.1 * (1 - 1 / VOCAB), abs=0.01)  # a random token may equal the original
    assert kept == pytest.approx(0.1 + 0.1 / VOCAB, abs=0.01)
    assert (inputs == MASK_ID).sum().item() == round(as_mask * n)  # the mask id appears only where masked


def test_eval_masking_is_fixed_and_respects_padding() -> None:
    tokens = _tokens(4, 64)
    valid = torch.ones_like(tokens, dtype=torch.bool)
    valid[:, 40:] = False  # padding
    first = mask_tokens(
        tokens, valid, Objective(name="mlm"), MASK_ID, VOCAB, eval_generator(Objective(), 2, 3)
    )
    again = mask_tokens(
        tokens, valid, Objective(name="mlm"), MASK_ID, VOCAB, eval_generator(Objective(), 2, 3)
    )
    other = mask_tokens(
        tokens, valid, Objective(name="mlm"), MASK_ID, VOCAB, eval_generator(Objective(), 2, 4)
    )
    assert torch.equal(first[1], again[1]) and torch.equal(first[0], again[0])
    assert not torch.equal(first[1], other[1])
    assert (first[1][:, 40:] == IGNORE_INDEX).all()


@pytest.mark.parametrize("causal", [True, False])
def test_attention_is_causal_for_clm_and_bidirectional_for_mlm(causal: bool) -> None:
    """Changing the last token must leave earlier outputs unchanged under causal attention only."""
    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=64, seq_len=16, n_layer=2, n_head=2, d_model=32, dropout=0.0, bias=False)
    model = GPT(cfg, causal=causal).eval()
    idx = torch.randint(0, 64, (1, 16))
    edited = idx.clone()
    edited[0, -1] = (idx[0, -1] + 1) % 64
    with torch.no_grad():
        before, after = model(idx), model(edited)
    earlier_changed = not torch.allclose(before[0, :-1], after[0, :-1], atol=1e-6)
    assert earlier_changed is not causal


def test_objective_config_is_validated() -> None:
    assert Objective().causal and not Objective(name="mlm").causal
    assert "masked token" in Objective(name="mlm").loss_unit
    with pytest.raises(ConfigError, match="name"):
        Objective(name="prefix")
    with pytest.raises(ConfigError, match="replace_random"):
        Objective(replace_mask=0.9, replace_random=0.2)


def test_mask_token_is_optional_and_leaves_the_clm_tokenizer_key_alone() -> None:
    assert "mask_token" not in BPETokenizer().to_dict()  # the CLM tokenizer's cache key is as before
    with_mask = BPETokenizer(mask_token="<|mask|>")
    assert with_mask.special_tokens == ["<|endoftext|>", "<|mask|>"]
    with pytest.raises(ConfigError, match="mask_token"):
        BPETokenizer(mask_token="<|endoftext|>")


def test_mlm_without_a_mask_token_is_refused_before_any_compute() -> None:
    from datascale.training.objective import check_objective

    check_objective(Objective(), BPETokenizer())  # clm needs none
    check_objective(Objective(name="mlm"), BPETokenizer(mask_token="<|mask|>"))
    with pytest.raises(ConfigError, match=r"tokenizer\.mask_token"):
        check_objective(Objective(name="mlm"), BPETokenizer())
