"""``python -m datascale.orchestration.parent_guard <expected parent pid> <command...>``: exec ``command`` so
that it gets SIGTERM when its parent (the Hydra job supervising the run) dies.

The worker runs in its own session (``datascale.orchestration.supervise``), so a killed Hydra job would
otherwise leave torchrun and its ranks training a run nobody holds the lease of. Linux's ``PR_SET_PDEATHSIG``
survives ``execve``; torchrun turns the SIGTERM into a SIGTERM to each rank, which saves a resume checkpoint
and exits. Elsewhere (no ``prctl``) the command just runs.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys

PR_SET_PDEATHSIG = 1


def set_parent_death_signal(sig: int = signal.SIGTERM) -> bool:
    """Ask the kernel to send ``sig`` to this process when its parent dies; False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    return libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if len(args) < 2:
        raise SystemExit("usage: python -m datascale.orchestration.parent_guard <parent pid> <command...>")
    parent, command = int(args[0]), args[1:]
    set_parent_death_signal()
    if os.getppid() != parent:  # the parent died before the signal was armed
        raise SystemExit(f"parent {parent} is gone: not starting {command[0]}")
    os.execvp(command[0], command)


if __name__ == "__main__":
    main()
