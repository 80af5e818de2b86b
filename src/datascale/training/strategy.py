"""Strategy leaves that need code: ``conf/strategy/ddp.yaml`` targets Lightning's ``DDPStrategy`` directly.

A strategy leaf is instantiated by the worker only (it builds torch objects); the launcher reads the layout
(``trainer.devices`` x ``trainer.num_nodes``) to start that many ranks (``torchrun``, or one SLURM/submitit
task per rank), and Lightning finds the ranks in the environment instead of starting processes itself.
Importing this module does not import torch.
"""

from __future__ import annotations

import os
from typing import Any


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
