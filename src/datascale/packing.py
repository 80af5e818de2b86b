"""How many runs share this machine at a time and how many threads each gets (torch-free).

The rule, for CPU runs packed by ``hydra/launcher=parallel`` (hydra-joblib-launcher, the default studies):

* **threads per rank = 1** (:data:`PACKED_THREADS`), whatever the run's size. A multi-threaded run needs all
  its threads scheduled for every matmul, so it stalls whenever anything else wants a core: on the project's
  shared 2-core machine a 2-thread run of the default model trained at a fifth of a 1-thread run's speed, and
  packed 1-thread runs gave 4.4x the tokens/s of one 2-thread run (``make bench``, bench_pack (f), (g)). A
  1-thread run beside a CPU-bound process keeps half its speed: its fair share.
* **jobs = usable cores // (ranks per run x threads per rank)**: every core trains (one job per core for
  one-process runs; a 2-rank DDP study runs one job per 2 cores). Usable cores are this process's affinity
  mask (a container's or scheduler's share), not the host's count.

Jobs start in the sweep's order (joblib dispatches in order), so a size sweep keeps its smallest sizes first
and its largest last. The resolvers make a study follow the machine it runs on: ``${datascale.cores:}``,
``${datascale.threads:}`` and ``${datascale.jobs:<ranks per run>}`` (registered by :func:`register`, which the
launcher imports; ``conf/hydra/launcher/parallel.yaml`` and ``sweeps/data_size.yaml`` use them).
"""

from __future__ import annotations

import os

from omegaconf import OmegaConf

#: torch threads per rank of a packed CPU run (see the module doc for the measurement behind it).
PACKED_THREADS = 1


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask: a container's or a scheduler's share)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def packed_threads() -> int:
    """torch threads per rank when runs are packed (:data:`PACKED_THREADS`, at most the usable cores)."""
    return max(1, min(PACKED_THREADS, usable_cores()))


def packed_jobs(ranks_per_run: int | str = 1) -> int:
    """Runs at a time: every usable core busy with one rank's threads, at least one run."""
    return max(1, usable_cores() // (max(1, int(ranks_per_run)) * packed_threads()))


def register() -> None:
    """Register the ``datascale.*`` resolvers (idempotent)."""
    for name, resolver in (
        ("datascale.cores", usable_cores),
        ("datascale.threads", packed_threads),
        ("datascale.jobs", packed_jobs),
    ):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, resolver)


register()
