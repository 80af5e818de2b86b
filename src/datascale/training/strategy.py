"""Strategy leaves that need code: everything else in ``conf/strategy/`` targets a Lightning class directly.

A strategy leaf is instantiated by the worker only (it builds torch objects); the launcher reads the layout
(``trainer.devices`` x ``trainer.num_nodes``) to start ``torchrun`` with that many ranks, and Lightning
detects torchrun's environment instead of starting processes itself. Importing this module does not import
torch.
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
