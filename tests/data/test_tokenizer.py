from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from data_fixtures import Prepared

from datascale.config_errors import ConfigError
from datascale.data.prepare import prepare_data
from datascale.data.sources import LocalFiles
from datascale.data.splits import HeldoutSplit
from datascale.data.subsets import SizeSubset
from datascale.data.token_cache import TokenCache
from datascale.data.tokenizer import (
    EOS_TOKEN,
    BPETokenizer,
    TrainedTokenizer,
    load_tokenizer,
    token_byte_lengths,
)


def test_tokenizer_never_sees_heldout_text(tmp_path: Path) -> None:
    """Each document repeats its own made-up word: pool words become tokens, held-out words must not."""
    rng = np.random.default_rng(0)
    letters = np.array(list("bcdfghjklmnpqrstvwxz"))
    words = ["".join(rng.choice(letters, size=9)) for _ in range(60)]
    with open(tmp_path / "docs.jsonl", "w") as fh:
        for i, word in enumerate(words):
            fh.write(json.dumps({"text": " ".join([word] * 40), "key": word, "d": "ab"[i % 2]}) + "\n")
    art = prepare_data(
        LocalFiles(paths=[str(tmp_path / "docs.jsonl")], doc_id_field="key", domain_field="d"),
        HeldoutSplit(eval_bytes_per_domain=800),
        BPETokenizer(vocab_size=2000, min_frequency=2),
        SizeSubset(unique_tokens=100),
        tmp_path / "cache",
        progress=False,
    )
    vocab = load_tokenizer(Path(art.tokenizer_path)).get_vocab()
    pool_words = [d.split(":", 1)[1] for d in TokenCache.open(art.train_cache).doc_ids]
    held_words = [
        d.split(":", 1)[1]
        for sets in art.eval_caches.values()
        for p in sets.values()
        for d in TokenCache.open(p).doc_ids
    ]
    assert len(held_words) >= 4 and len(pool_words) >= 40
    assert all("Ġ" + w in vocab for w in pool_words)  # control: the test can fail
    assert not any("Ġ" + w in vocab or w in vocab for w in held_words)


def test_byte_lengths_give_exact_utf8_length(prepared: Prepared) -> None:
    art = prepared.artifacts
    tok = load_tokenizer(Path(art.tokenizer_path))
    lengths = np.load(art.token_bytes_path)
    assert lengths.dtype == np.int32 and len(lengths) == art.vocab_size == tok.get_vocab_size()
    assert lengths[art.eos_id] == 0 and tok.token_to_id(EOS_TOKEN) == art.eos_id
    text = "def f(x):\n\treturn x  # naïve — 東京 🤖 <|endoftext|>\r\n  Thou art"
    ids = tok.encode(text).ids
    assert art.eos_id not in ids  # literal special-token text in a document is ordinary text
    assert int(lengths[ids].sum()) == len(text.encode("utf-8"))
    assert tok.decode(ids) == text
    np.testing.assert_array_equal(token_byte_lengths(tok), lengths)


def test_training_is_deterministic_and_eos_survives_reload(tmp_path: Path) -> None:
    texts = [
        "the quick brown fox jumps over the lazy dog " * 20,
        "pack my box with five dozen liquor jugs " * 20,
    ]
    cfg = BPETokenizer(vocab_size=300)
    a = cfg.train(texts, tmp_path / "a" / "tokenizer.json")
    b = cfg.train(texts, tmp_path / "b" / "tokenizer.json")
    assert a.hash == b.hash and a.eos_id == 0
    again = TrainedTokenizer.load(tmp_path / "a" / "tokenizer.json")
    assert again.eos_id == a.eos_id and again.vocab_size == 300
    assert (
        "<|endoftext|>"
        in json.loads((tmp_path / "a" / "tokenizer.json").read_text())["added_tokens"][0]["content"]
    )


def test_tokenizer_config_errors() -> None:
    with pytest.raises(ConfigError, match=r"^vocab_size=100: must be an integer in \[257, "):
        BPETokenizer(vocab_size=100)
    with pytest.raises(ConfigError, match=r"^min_frequency=0: "):
        BPETokenizer(min_frequency=0)
