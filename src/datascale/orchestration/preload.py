"""One-process CPU runs forked from a parent that imported the worker once (Python's forkserver).

Every fresh worker interpreter spent about 4 s of CPU importing torch, Lightning and W&B before its first
step. Instead, each Hydra job process starts one ``multiprocessing`` forkserver that imports
``datascale.training.worker`` (and the launcher's entry module, which a forkserver child re-runs) once; each
run's worker is then a fork of it. The design rule holds: the Hydra job only writes ``resolved.yaml`` and
supervises, a separate process trains from that file, and this module imports no torch.

- **Fork safety**: the forkserver only imports; no torch intra-op thread pool exists before the fork (torch
  starts it at the first parallel op, in the child, with the child's ``torch.set_num_threads``). The native
  threads present after the imports are OpenBLAS's (numpy, scipy), which re-create themselves after a fork.
- **Like a subprocess**: the child takes the launcher's environment for this run, starts its own session (a
  terminal's Ctrl-C reaches the Hydra job only, which forwards it) and gets SIGTERM when its parent dies: its
  parent is the forkserver, which exits when the Hydra job is gone (the child closes its copy of the
  forkserver's liveness pipe, so only the Hydra job keeps the forkserver alive).
- **Exit**: the child ends with the worker's own ``exit_now`` (``os._exit``), so its exit status is the
  worker's (75: preempted) and no interpreter teardown runs.

torchrun (several ranks), one task per rank (SLURM) and GPU runs keep the fresh-interpreter path
(``worker.preload: false`` forces it everywhere).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.forkserver
import os
import signal
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from multiprocessing.process import BaseProcess

from datascale.orchestration.parent_guard import set_parent_death_signal
from datascale.training.clock import WORKER_START_ENV

#: What the forkserver imports before it forks anything: the worker, and the launcher whose entry shim
#: (``datascale.launch``, the ``datascale`` script) a forkserver child re-runs as its ``__main__``.
PRELOAD = ("datascale.training.worker", "datascale.orchestration.launch")
#: Exit status of a forked child whose Hydra job was gone before it could start.
EXIT_ORPHANED = 70


def context() -> multiprocessing.context.ForkServerContext:
    """The forkserver context, its preload list set (the server is started once per process)."""
    ctx = multiprocessing.get_context("forkserver")
    assert isinstance(ctx, multiprocessing.context.ForkServerContext)
    ctx.set_forkserver_preload(list(PRELOAD))
    return ctx


def warm() -> None:
    """Start this process's forkserver now, so it imports the worker while the job does other work."""
    context()
    multiprocessing.forkserver.ensure_running()


@dataclass
class ForkedWorker:
    """A forked worker seen like a ``subprocess.Popen``: ``poll``, ``send_signal``, ``wait``."""

    process: BaseProcess

    @property
    def pid(self) -> int | None:
        return self.process.pid

    def poll(self) -> int | None:
        return self.process.exitcode

    def send_signal(self, sig: int) -> None:
        if self.process.pid is not None and self.process.exitcode is None:
            with contextlib.suppress(ProcessLookupError):  # it ended meanwhile
                os.kill(self.process.pid, sig)

    def wait(self) -> int:
        self.process.join()
        assert self.process.exitcode is not None
        return self.process.exitcode


def start(entry: str, argv: Sequence[str], env: Mapping[str, str]) -> ForkedWorker:
    """Fork ``entry``'s ``main(argv)`` (a module name) from the preloaded forkserver, with ``env`` as its
    environment; its exit status is what ``main`` returns."""
    process = context().Process(
        target=run_forked, args=(entry, list(argv), dict(env), os.getpid()), name=f"{entry} (forked)"
    )
    with stdlib_start_method():
        process.start()
    return ForkedWorker(process)


@contextlib.contextmanager
def stdlib_start_method() -> Iterator[None]:
    """The child is told this process's default start method and sets it; a joblib (loky) worker's is
    ``loky``, which a forkserver child cannot set: while starting, a stdlib one stands in."""
    previous = multiprocessing.get_start_method(allow_none=True)
    if previous is None or previous in multiprocessing.get_all_start_methods():
        yield
        return
    multiprocessing.set_start_method("forkserver", force=True)
    try:
        yield
    finally:
        multiprocessing.set_start_method(previous, force=True)


def run_forked(entry: str, argv: list[str], env: dict[str, str], launcher: int) -> None:
    """The forked child: its own session, SIGTERM when the launcher is gone, this run's environment, then
    ``entry.main(argv)`` and ``os._exit`` with what it returned."""
    os.setsid()
    set_parent_death_signal(signal.SIGTERM)
    alive = getattr(multiprocessing.forkserver._forkserver, "_forkserver_alive_fd", None)
    if alive is not None:  # the forkserver exits (and this child gets SIGTERM) once the launcher is gone
        os.close(alive)
    if not _running(launcher):
        os._exit(EXIT_ORPHANED)
    os.environ.clear()
    os.environ.update(env)
    os.environ[WORKER_START_ENV] = "fork" if "torch" in sys.modules else "fork (not preloaded)"
    if "tqdm" in sys.modules:  # its default multiprocessing lock is a named semaphore registered with the
        import threading  #     forkserver's resource tracker: reported leaked at every os._exit

        from tqdm import tqdm

        tqdm.set_lock(threading.RLock())
    module = __import__(entry, fromlist=["main"])
    code = module.main(argv)
    exit_now = getattr(module, "exit_now", None)
    if exit_now is not None:
        exit_now(code)
    os._exit(code)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
