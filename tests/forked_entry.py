"""A torch-free entry point for the tests of ``datascale.orchestration.preload``: ``main([out, mode])`` writes
how it was started to ``out`` and returns 7 (mode ``exit``), or waits for a signal (mode ``wait``): SIGTERM
writes ``<out>.stopped`` and exits 75, as a preempted worker does."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path
from types import FrameType


def main(argv: list[str]) -> int:
    out, mode = Path(argv[0]), argv[1]

    def stop(signum: int, frame: FrameType | None) -> None:
        out.with_suffix(".stopped").write_text(str(signum))
        os._exit(75)

    signal.signal(signal.SIGTERM, stop)
    seen = {
        "pid": os.getpid(),
        "sid": os.getsid(0),
        "value": os.environ.get("FORKED_ENTRY_VALUE"),
        "start": os.environ.get("DATASCALE_WORKER_START"),
        "torch_preloaded": "torch" in sys.modules,
    }
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(seen))
    tmp.replace(out)
    if mode == "wait":
        time.sleep(120)
        return 1
    return 7


def fork_from_here(out: str) -> tuple[str | None, int]:
    """In a joblib (loky) worker, as the parallel launcher's jobs run: (its start method, the forked exit)."""
    import multiprocessing

    from datascale.orchestration.supervise import run_preloaded

    method = multiprocessing.get_start_method(allow_none=True)
    returncode, _ = run_preloaded("forked_entry", [out, "exit"], dict(os.environ))
    return method, returncode
