"""Strategies: what the launcher and the worker need to know of each one (:class:`StrategySpec`), and the
leaves that need code (``single_device``, ``fsdp``; ``conf/strategy/ddp.yaml`` targets Lightning's
``DDPStrategy`` directly).

A strategy leaf is instantiated by the worker only (it builds torch objects); everyone else asks
:func:`strategy_spec` about its ``_target_`` instead of testing class names: how many ranks it runs, whether
it shards the parameters, whether its checkpoints are sharded directories, which precisions it supports. The
launcher reads the layout (``trainer.devices`` x ``trainer.num_nodes``) and starts that many ranks
(``torchrun``, or one SLURM/submitit task per rank); Lightning finds the ranks in the environment instead of
starting processes itself. A new strategy is its ``conf/strategy/<name>.yaml`` plus one :data:`STRATEGIES`
entry (and a factory here if it needs code). Importing this module does not import torch.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class StrategySpec:
    """What a strategy means for the rest of the code, known from its config without building it."""

    name: str | None
    """The record's ``strategy`` field; None: Lightning's name of the built strategy (a class not listed)."""
    option: str | None = None
    """The ``conf/strategy`` leaf that selects it (``strategy=<option>``), for messages."""
    single_process: bool = False
    """Runs exactly one rank (``trainer.devices = trainer.num_nodes = 1``); otherwise the launcher starts
    ``trainer.devices`` ranks per node (torchrun, or one task per rank)."""
    shards_parameters: bool = False
    """Each rank holds a shard of the parameters (FSDP): the module shards itself in ``configure_model``, and
    rank 0's model is not the whole model, so the downstream suite (which needs it whole) is skipped."""
    sharded_checkpoints: bool = False
    """Checkpoints are directories of per-rank shards (consolidated into one file for analysis)."""
    sharded_checkpoints_key: str | None = None
    """The leaf's boolean argument that switches sharded checkpoints off (one gathered file instead)."""
    precisions: tuple[str, ...] | None = None
    """The ``trainer.precision`` values it supports; None: any."""

    def for_leaf(self, leaf: Mapping[str, Any]) -> StrategySpec:
        """This spec with the leaf's own choices applied (sharded checkpoints switched off by its key)."""
        key = self.sharded_checkpoints_key
        if not self.sharded_checkpoints or key is None:
            return self
        return dataclasses.replace(self, sharded_checkpoints=bool(leaf.get(key, True)))


#: The precisions Lightning's ModelParallelStrategy (FSDP2) accepts.
FSDP_PRECISIONS = ("32-true", "bf16-mixed", "bf16-true", "16-true")
_DDP = StrategySpec("ddp", "ddp")
#: Every strategy the project knows, by the ``_target_`` of its leaf.
STRATEGIES: dict[str, StrategySpec] = {
    "datascale.training.strategy.single_device": StrategySpec("single_device", "single", single_process=True),
    "pytorch_lightning.strategies.DDPStrategy": _DDP,
    "pytorch_lightning.strategies.ddp.DDPStrategy": _DDP,
    "datascale.training.strategy.fsdp": StrategySpec(
        "fsdp",
        "fsdp",
        shards_parameters=True,
        sharded_checkpoints=True,
        sharded_checkpoints_key="save_distributed_checkpoint",
        precisions=FSDP_PRECISIONS,
    ),
}
#: A Lightning strategy not listed above: many ranks allowed, whole parameters, one-file checkpoints.
OTHER_STRATEGY = StrategySpec(None)


def strategy_spec(leaf: Mapping[str, Any] | None) -> StrategySpec:
    """The spec of a strategy leaf (the ``strategy`` node of a config, or None for a config without one: one
    process, as ``strategy=single``)."""
    if leaf is None:
        return STRATEGIES["datascale.training.strategy.single_device"]
    spec = STRATEGIES.get(str(leaf.get("_target_", "")), OTHER_STRATEGY)
    return spec.for_leaf(leaf)


def single_device(accelerator: str = "auto") -> Any:
    """One process on this rank's device: ``cuda:<LOCAL_RANK>`` when CUDA is used, else the CPU."""
    import torch
    from pytorch_lightning.strategies import SingleDeviceStrategy

    use_cuda = accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) if use_cuda else torch.device("cpu")
    return SingleDeviceStrategy(device=device)


def fsdp(save_distributed_checkpoint: bool = True, process_group_backend: str | None = None) -> Any:
    """FSDP2 (``fully_shard``) through Lightning's ``ModelParallelStrategy``, on CPU (gloo) and CUDA (nccl).

    Every rank is one data-parallel shard (no tensor parallelism), so the data-parallel size is the world
    size the launcher started; ``GPTLightningModule.configure_model`` shards each block, then the root.
    Lightning's ``FSDPStrategy`` (FSDP1) is not used: it refuses CPU accelerators.
    """
    from pytorch_lightning.strategies import ModelParallelStrategy

    return ModelParallelStrategy(
        data_parallel_size=int(os.environ.get("WORLD_SIZE", 1)),
        tensor_parallel_size=1,
        save_distributed_checkpoint=save_distributed_checkpoint,
        process_group_backend=process_group_backend,
    )
