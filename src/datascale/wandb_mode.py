"""Which W&B mode a process uses (torch-free: the training tracker and the launcher's prediction share it)."""

from __future__ import annotations

import os
from collections.abc import Mapping

WANDB_MODES = ("online", "offline", "disabled")


def resolve_wandb_mode(configured: str = "auto", env: Mapping[str, str] | None = None) -> str:
    """``WANDB_MODE`` wins if set; then the config; ``auto`` means online with an API key, else offline.

    Offline without a key because ``wandb.init`` in online mode without one fails the whole run.
    """
    env = os.environ if env is None else env
    mode = env.get("WANDB_MODE") or configured
    mode = {"dryrun": "offline", "run": "online"}.get(mode, mode)
    if mode == "auto":
        mode = "online" if env.get("WANDB_API_KEY") else "offline"
    if mode not in WANDB_MODES:
        raise ValueError(f"W&B mode {mode!r}: must be auto or one of {list(WANDB_MODES)}")
    return mode
