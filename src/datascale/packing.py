"""How many runs share this machine at a time and how many threads each gets (torch-free).

Registered as OmegaConf resolvers (``${datascale.cores:}``, ``${datascale.jobs:}``, ``${datascale.threads:}``)
so a study's launcher and its worker settings follow the machine it runs on, not numbers in a file.
"""

from __future__ import annotations

import os


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask: a container's or a scheduler's share)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1
