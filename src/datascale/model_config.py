"""Model shape config and named size presets (torch-free: the Hydra job validates it before launching).

``datascale.model`` re-exports both next to the GPT itself.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from datascale.config_errors import ConfigError, require, require_in_range, require_positive_int

#: Shapes of the named presets (conf/model/<name>.yaml mirrors each one). The names give the total parameter
#: count at vocab 4096 and seq_len 128 (tied embeddings counted once).
PRESETS: dict[str, dict[str, int]] = {
    "gpt_tiny": {"n_layer": 1, "n_head": 2, "d_model": 32},  # tests only: ~0.14M at vocab 4096
    "gpt_0p9m": {"n_layer": 2, "n_head": 4, "d_model": 128},  # 0.94M: the calibrated default
    "gpt_3m": {"n_layer": 5, "n_head": 6, "d_model": 192},  # 3.0M
    "gpt_10m": {"n_layer": 7, "n_head": 8, "d_model": 320},  # 9.95M
}


@dataclass
class GPTConfig:
    """Model shape. Hydra leaf ``_target_: datascale.model_config.GPTConfig``; invalid shapes raise ConfigError."""

    vocab_size: int
    seq_len: int = 128
    n_layer: int = 2
    n_head: int = 4
    d_model: int = 128
    dropout: float = 0.0
    bias: bool = False

    def __post_init__(self) -> None:
        for name in ("vocab_size", "seq_len", "n_layer", "n_head", "d_model"):
            require_positive_int(name, getattr(self, name))
        require(
            self.d_model % self.n_head == 0,
            "d_model",
            self.d_model,
            f"must be divisible by n_head={self.n_head}",
        )
        require_in_range("dropout", self.dropout, 0.0, 0.99)
        require(isinstance(self.bias, bool), "bias", self.bias, "must be true or false")

    @classmethod
    def from_preset(cls, name: str, vocab_size: int, seq_len: int = 128, **overrides: Any) -> GPTConfig:
        if name not in PRESETS:
            raise ConfigError("model", name, f"must be one of {sorted(PRESETS)}")
        return cls(vocab_size=vocab_size, seq_len=seq_len, **{**PRESETS[name], **overrides})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
