"""Byte-level BPE trained on training-pool documents only (Hydra ``tokenizer`` group), plus bytes per token.

Training on the pool only keeps held-out text out of the vocabulary. The full ``tokenizer.json`` is saved
(special tokens included: saving vocab/merges alone drops them) and its sha256 is the tokenizer's identity.
Byte lengths per token id turn a loss in nats per token into exact bits per byte, comparable across
tokenizers.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from datascale.config_errors import require, require_positive_int
from datascale.storage import file_sha256

log = logging.getLogger("datascale.data")

EOS_TOKEN = "<|endoftext|>"
MIN_VOCAB = 257  # 256 byte symbols + EOS
MAX_VOCAB = 1 << 20


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map used by the ByteLevel pre-tokenizer."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    chars, extra = list(printable), 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, chars), strict=True))


@dataclass
class BPETokenizer:
    """Byte-level BPE config: target vocabulary size (EOS included) and the minimum pair frequency to
    merge."""

    vocab_size: int = 4096
    min_frequency: int = 2
    eos_token: str = EOS_TOKEN
    mask_token: str | None = None
    """An extra special token for masked-LM objectives (None: today's tokenizer, bit for bit)."""
    train_sample_bytes: int = 100_000_000
    """A pool larger than this trains the tokenizer on a seeded sample of its documents of about this many
    UTF-8 bytes (BPE training memory grows with its input); a smaller pool trains on all of it."""
    sample_seed: int = 0
    """Seed of the document order the sample is a prefix of."""

    def __post_init__(self) -> None:
        require(
            isinstance(self.vocab_size, int)
            and not isinstance(self.vocab_size, bool)
            and MIN_VOCAB <= self.vocab_size <= MAX_VOCAB,
            "vocab_size",
            self.vocab_size,
            f"must be an integer in [{MIN_VOCAB}, {MAX_VOCAB}] (256 bytes + EOS at least)",
        )
        require(
            isinstance(self.min_frequency, int)
            and not isinstance(self.min_frequency, bool)
            and self.min_frequency >= 1,
            "min_frequency",
            self.min_frequency,
            "must be an integer >= 1",
        )
        require(
            isinstance(self.eos_token, str) and bool(self.eos_token),
            "eos_token",
            self.eos_token,
            "must be a non-empty string",
        )
        require(
            self.mask_token is None
            or (isinstance(self.mask_token, str) and self.mask_token not in ("", self.eos_token)),
            "mask_token",
            self.mask_token,
            "must be null or a non-empty string other than eos_token",
        )
        require_positive_int("train_sample_bytes", self.train_sample_bytes)
        require(
            isinstance(self.sample_seed, int)
            and not isinstance(self.sample_seed, bool)
            and self.sample_seed >= 0,
            "sample_seed",
            self.sample_seed,
            "must be a non-negative integer",
        )

    def to_dict(self) -> dict[str, Any]:
        """The config; ``mask_token`` only when set, so a CLM tokenizer's cache key is unchanged; the sample
        settings only count through the sample they draw (:meth:`sample`)."""
        out = asdict(self)
        if self.mask_token is None:
            del out["mask_token"]
        del out["train_sample_bytes"], out["sample_seed"]
        return out

    def sample(self, sizes: np.ndarray) -> TrainingSample | None:
        """The documents (positions in the pool) to train on, given each pool document's UTF-8 bytes: None
        (all of them) when the pool fits in ``train_sample_bytes``, else a seeded sample in pool order."""
        sizes = np.asarray(sizes, dtype=np.int64)
        total = int(sizes.sum())
        if total <= self.train_sample_bytes:
            return None
        order = np.random.default_rng([self.sample_seed, len(sizes)]).permutation(len(sizes))
        take = int(np.searchsorted(np.cumsum(sizes[order]), self.train_sample_bytes)) + 1
        positions = np.sort(order[:take])
        record = {
            "seed": self.sample_seed,
            "target_bytes": self.train_sample_bytes,
            "documents": int(take),
            "bytes": int(sizes[positions].sum()),
            "pool_documents": len(sizes),
            "pool_bytes": total,
            "positions_sha256": hashlib.sha256(positions.astype("<i8").tobytes()).hexdigest(),
        }
        return TrainingSample(positions, record)

    @property
    def special_tokens(self) -> list[str]:
        """EOS first (its id stays 0), then the mask token if any."""
        return [self.eos_token] + ([self.mask_token] if self.mask_token else [])

    def build(self) -> Tokenizer:
        """An untrained tokenizer with this config's pipeline."""
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        return tok

    def train(
        self, texts: Iterable[str], path: Path, length: int | None = None, progress: bool = False
    ) -> TrainedTokenizer:
        """Train on ``texts`` (training-pool documents only) and save the full tokenizer JSON to ``path``."""
        tok = self.build()
        trainer = trainers.BpeTrainer(
            vocab_size=self.vocab_size,
            min_frequency=self.min_frequency,
            special_tokens=self.special_tokens,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=progress,
        )
        start = time.perf_counter()
        tok.train_from_iterator(texts, trainer=trainer, length=length)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tok.save(str(path))
        trained = TrainedTokenizer.load(path, self.eos_token)
        log.info(
            "tokenizer: trained byte-level BPE, vocab %d (asked %d), in %.1f s",
            trained.vocab_size,
            self.vocab_size,
            time.perf_counter() - start,
        )
        return trained


@dataclass
class TrainingSample:
    """The pool documents a tokenizer trains on when the pool is larger than its sample size."""

    positions: np.ndarray
    """Sorted positions in the training pool."""
    record: dict[str, Any]
    """What the tokenizer's manifest (and cache key) records: seed, target and drawn bytes, documents, the
    pool's size and the sha256 of the positions."""


@dataclass
class TrainedTokenizer:
    """A saved tokenizer: the file, its hash, its real vocabulary size and EOS id."""

    path: Path
    hash: str
    vocab_size: int
    eos_id: int
    tokenizer: Tokenizer

    @classmethod
    def load(cls, path: Path, eos_token: str = EOS_TOKEN) -> TrainedTokenizer:
        """Reload and check that EOS survived the round trip (a save that drops specials shifts ids)."""
        path = Path(path)
        tok = load_tokenizer(path, eos_token)
        eos_id = tok.token_to_id(eos_token)
        assert eos_id is not None  # load_tokenizer checked it
        return cls(
            path=path,
            hash=file_sha256(path),
            vocab_size=tok.get_vocab_size(with_added_tokens=True),
            eos_id=eos_id,
            tokenizer=tok,
        )


def load_tokenizer(path: Path, eos_token: str = EOS_TOKEN) -> Tokenizer:
    """Load ``tokenizer.json`` ready to encode documents: EOS checked, special-token text inside documents
    encoded as ordinary text (so only the EOS we append is EOS, and its 0 bytes never eat real text)."""
    tok = Tokenizer.from_file(str(path))
    eos_id = tok.token_to_id(eos_token)
    if eos_id is None:
        raise ValueError(f"{path}: EOS token {eos_token!r} is missing after reload")
    specials = {i for i, t in tok.get_added_tokens_decoder().items() if t.special}
    if eos_id not in specials:
        raise ValueError(f"{path}: {eos_token!r} (id {eos_id}) is not a special token after reload")
    tok.encode_special_tokens = True
    return tok


def token_byte_lengths(tokenizer: Tokenizer) -> np.ndarray:
    """int32[vocab]: UTF-8 bytes each token id stands for (special tokens 0), by inverting the byte-level
    map."""
    byte_of = {c: b for b, c in bytes_to_unicode().items()}
    specials = {i for i, t in tokenizer.get_added_tokens_decoder().items() if t.special}
    vocab = tokenizer.get_vocab(with_added_tokens=True)
    lengths = np.zeros(tokenizer.get_vocab_size(with_added_tokens=True), dtype=np.int32)
    for token, idx in vocab.items():
        if idx in specials:
            continue
        missing = [c for c in token if c not in byte_of]
        if missing:
            raise ValueError(
                f"token {token!r} (id {idx}) is not byte-level: characters {missing} have no byte"
            )
        lengths[idx] = len(token)
    return lengths
