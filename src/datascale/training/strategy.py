"""Execution layout of one run: how many processes and which Lightning strategy (torch-free Hydra leaf).

The launcher starts ``torchrun --nproc_per_node=<devices> --nnodes=<num_nodes>``; the worker passes ``name`` to the
Trainer, which detects the torchrun environment and does not start processes itself. ``auto`` is the single-process
strategy for one device and DDP for several; explicit ``ddp`` / FSDP2 configs plug in here later.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from datascale.config_errors import require, require_positive_int

#: Strategy names the worker knows how to build.
KNOWN_STRATEGIES = ("auto", "single_device", "ddp")


@dataclass
class StrategyConfig:
    """Hydra leaf ``conf/strategy/*.yaml``."""

    name: str = "auto"
    devices: int = 1  # processes per node (= torchrun --nproc_per_node)
    num_nodes: int = 1

    def __post_init__(self) -> None:
        require(self.name in KNOWN_STRATEGIES, "name", self.name, f"must be one of {list(KNOWN_STRATEGIES)}")
        require_positive_int("devices", self.devices)
        require_positive_int("num_nodes", self.num_nodes)
        require(
            not (self.name == "single_device" and self.devices * self.num_nodes > 1),
            "name",
            self.name,
            "single_device needs devices=1 and num_nodes=1",
        )

    @property
    def world_size(self) -> int:
        return self.devices * self.num_nodes

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
