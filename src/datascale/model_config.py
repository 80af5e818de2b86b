"""Model shape config (torch-free: the Hydra job validates it before launching); ``datascale.model``
re-exports it.

Named sizes are the leaves of ``conf/model/`` and nowhere else; :meth:`GPTConfig.from_preset` reads them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from omegaconf import OmegaConf

from datascale import CONF_DIR
from datascale.config_errors import ConfigError, require, require_in_range, require_positive_int


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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def preset_names() -> list[str]:
    """The named model sizes: one YAML leaf each in ``conf/model/``."""
    return sorted(p.stem for p in (CONF_DIR / "model").glob("*.yaml"))
