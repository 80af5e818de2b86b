"""Model shape config (torch-free: the Hydra job validates it before launching); ``datascale.model``
re-exports it.

Named sizes are the leaves of ``conf/model/`` and nowhere else; :meth:`GPTConfig.from_preset` reads them. The
size ladder names a size by one number, its depth (as nanochat does): ``n_layer = depth``, ``d_model =
WIDTH_PER_LAYER x depth``, heads of ``HEAD_DIM``, so non-embedding parameters grow as ``12 x 64^2 x depth^3``
(depth 1 -> 50k, 2 -> 0.39M, 3 -> 1.3M, 4 -> 3.1M, 6 -> 10.6M: 1.5 orders of magnitude from depth 1 to 4).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from omegaconf import OmegaConf

from datascale import CONF_DIR
from datascale.config_errors import ConfigError, require, require_in_range, require_positive_int

#: The size ladder: width per layer of depth, and the attention head size.
WIDTH_PER_LAYER = 64
HEAD_DIM = 32


@dataclass
class GPTConfig:
    """Model shape. Hydra leaf ``_target_: datascale.model_config.GPTConfig``; invalid shapes raise
    ConfigError."""

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
        """The shape of ``conf/model/<name>.yaml`` (the one place presets are written) at this vocabulary."""
        if name not in preset_names():
            raise ConfigError("model", name, f"must be one of {preset_names()}")
        node = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "model" / f"{name}.yaml"), resolve=False)
        assert isinstance(node, dict)
        fields = {str(k): v for k, v in node.items() if not str(k).startswith("_") and k != "vocab_size"}
        return cls(**{**fields, "vocab_size": vocab_size, "seq_len": seq_len, **overrides})

    @classmethod
    def from_depth(
        cls, depth: int, vocab_size: int, seq_len: int = 128, dropout: float = 0.0, bias: bool = False
    ) -> GPTConfig:
        """The ladder size ``depth`` (Hydra leaf ``conf/model/depth.yaml``: ``model=depth model.depth=3``)."""
        require_positive_int("depth", depth)
        d_model = WIDTH_PER_LAYER * depth
        return cls(vocab_size, seq_len, depth, max(1, d_model // HEAD_DIM), d_model, dropout, bias)

    def parameter_counts(self) -> dict[str, int]:
        """``total`` (tied embedding once) and ``non_embedding`` parameters, without building the model.

        Per block: QKV, output, MLP matrices (12 d^2), two LayerNorms (d, +d with bias), linear biases (9d);
        plus the final LayerNorm; embeddings are the token (tied with the LM head) and position tables.
        """
        d = self.d_model
        norm = 2 * d if self.bias else d
        block = 12 * d * d + 2 * norm + (9 * d if self.bias else 0)
        non_embedding = self.n_layer * block + norm
        return {"total": non_embedding + (self.vocab_size + self.seq_len) * d, "non_embedding": non_embedding}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def preset_names() -> list[str]:
    """The named sizes: the leaves of ``conf/model/`` that build a GPTConfig (``depth`` is the ladder)."""
    target = f"{GPTConfig.__module__}.{GPTConfig.__qualname__}"
    leaves = sorted((CONF_DIR / "model").glob("*.yaml"))
    return [p.stem for p in leaves if OmegaConf.select(OmegaConf.load(p), "_target_") == target]
