"""How busy this machine is, torch-free: CPU seconds every process used (``/proc/stat``), and the cores other
processes kept busy while a block of code ran (a measurement taken beside them is not a peak)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager


def machine_busy_seconds() -> float | None:
    """CPU seconds every process of this machine has been busy since boot (``/proc/stat``); None elsewhere."""
    try:
        with open("/proc/stat") as fh:
            ticks = [int(v) for v in fh.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle + iowait
    return (sum(ticks[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def load_average() -> float | None:
    """The 1-minute load average (None where the OS has none)."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


@contextmanager
def others_load(
    out: dict[str, float | None], sample: Callable[[], float | None] = machine_busy_seconds
) -> Iterator[None]:
    """Measure the cores the rest of the machine kept busy during the block (its CPU seconds less this
    process's own, over the block's wall time) into ``out["others_cores"]``; None without ``/proc/stat``."""
    busy, wall, own = sample(), time.monotonic(), time.process_time()
    try:
        yield
    finally:
        after, elapsed = sample(), time.monotonic() - wall
        if busy is None or after is None or elapsed <= 0:
            out["others_cores"] = None
        else:
            others = (after - busy) - (time.process_time() - own)
            out["others_cores"] = max(0.0, others / elapsed)
