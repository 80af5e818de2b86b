"""Supervising one run from its Hydra job: the run's lease, its attempts, and signals passed to its worker.

- **Lease** (``<run_dir>/.lease``, filelock's ``SoftFileLease``): held while a process trains the run and
  renewed by a heartbeat thread, so two study invocations (or two hosts sharing the results directory)
  never train one run twice. A holder that died on this host is noticed at once; one on another host that
  stopped renewing is taken over after ``study.lock_lease_s`` seconds.
- **Attempts** (``<run_dir>/status.json``): every attempt's outcome, exit code and reason, kept. A crashed
  worker is started again (resuming from its latest complete checkpoint) until ``study.max_attempts``
  attempts have failed; a config error or a diverged run is not retried (the same config fails the same way).
- **Signals**: the worker runs in its own session, so a terminal's Ctrl-C or a scheduler's signal reaches this
  process only. SIGINT, SIGTERM, SIGUSR1 and SIGUSR2 are passed to the worker as SIGTERM (it saves at the next
  step and exits 75); then the signal goes to whoever handled it before us: submitit's handler requeues a
  SLURM job (submitit is the one component that requeues), the default one ends this process.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, Protocol

from filelock import SoftFileLease, Timeout

from datascale.records import RECORD_FILENAME, read_record
from datascale.storage import atomic_write_json
from datascale.training.checkpoint_files import (
    EXIT_PREEMPTED,
    PREEMPTED_FILENAME,
    RESUME_DIR,
    latest_complete,
)

log = logging.getLogger("datascale.launch")

STATUS_FILENAME = "status.json"
LEASE_FILENAME = ".lease"
FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)


# ---- the lease ---------------------------------------------------------------------------------------------
def acquire_lease(run_dir: Path, lease_s: float) -> SoftFileLease | None:
    """The run's lease, or None if a live process holds it (a stale one is taken over)."""
    lease = SoftFileLease(str(Path(run_dir) / LEASE_FILENAME), lease_duration=float(lease_s))
    try:
        lease.acquire(timeout=0)  # free, or held by a process of this host that died: taken at once
        return lease
    except Timeout:
        pass
    if not lease_is_stale(run_dir, lease_s):
        return None
    try:  # held by a host that stopped renewing it: filelock takes it once it has seen no renewal
        lease.acquire(timeout=float(lease_s) + 5)
        return lease
    except Timeout:
        return None


def lease_is_stale(run_dir: Path, lease_s: float) -> bool:
    """True if the lease file was not renewed (heartbeats touch it) for longer than the lease."""
    try:
        return time.time() - (Path(run_dir) / LEASE_FILENAME).stat().st_mtime > lease_s
    except FileNotFoundError:
        return True


def lease_holder(run_dir: Path) -> str:
    """``host pid`` from the lease file, for the study summary."""
    try:
        lines = (Path(run_dir) / LEASE_FILENAME).read_text().splitlines()
    except OSError:
        return "unknown"
    fields = dict(line.split("=", 1) for line in lines if "=" in line)
    return f"{fields.get('host', '?')} pid {fields.get('pid', '?')}"


# ---- attempts ---------------------------------------------------------------------------------------------
def read_attempts(run_dir: Path) -> list[dict[str, Any]]:
    """Every earlier attempt of a run (``status.json``), oldest first; [] for a new run."""
    path = Path(run_dir) / STATUS_FILENAME
    try:
        return list(json.loads(path.read_text()).get("attempts", []))
    except (OSError, ValueError, AttributeError):
        return []


def record_attempt(run_dir: Path, attempts: list[dict[str, Any]], attempt: dict[str, Any]) -> None:
    attempts.append(attempt | {"at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    status = {"status": attempt["outcome"], "reason": attempt.get("reason", ""), "attempts": attempts}
    atomic_write_json(Path(run_dir) / STATUS_FILENAME, status)


def failures(attempts: list[dict[str, Any]]) -> int:
    """Attempts that count against ``study.max_attempts`` (a preempted one does not)."""
    return sum(a["outcome"] == "failed" for a in attempts)


def outcome_of(run_dir: Path, returncode: int, signalled: int | None, started: float) -> dict[str, Any]:
    """What one worker attempt came to: done, preempted, or failed (retryable or not) with a reason.

    Read from the run directory, not from the exit status alone (torchrun reports every failing rank as 1):
    the worker's preemption marker, and the record this attempt wrote (its ``stop_reason`` and ``error``).
    """
    path = Path(run_dir) / RECORD_FILENAME
    record = read_record(path) if path.exists() and path.stat().st_mtime >= started - 1 else None
    if returncode == 0 and record is not None and record.status == "done":
        return {"outcome": "done", "exit_code": 0}
    marker = Path(run_dir) / PREEMPTED_FILENAME
    if returncode == EXIT_PREEMPTED or signalled is not None or marker.exists():
        marker.unlink(missing_ok=True)
        return {"outcome": "preempted", "exit_code": returncode, "reason": "stopped by a signal; resumes"}
    error = record.error if record is not None else None
    if record is not None and record.stop_reason == "non_finite_loss":
        kind: str | None = "diverged"
    elif (error or "").startswith("ConfigError") or returncode == 2:
        kind = "config error"
    else:
        kind = None
    reason = f"{kind or f'worker exited with code {returncode}'}: {error or 'no record written'}"
    return {"outcome": "failed", "exit_code": returncode, "retry": kind is None, "reason": reason}


# ---- signals ----------------------------------------------------------------------------------------------
class WorkerProcess(Protocol):
    """A running worker: a ``subprocess.Popen``, or a forked one (``preload.ForkedWorker``)."""

    def poll(self) -> int | None: ...

    def send_signal(self, sig: int) -> None: ...

    def wait(self) -> int: ...


@dataclass
class ForwardedSignals:
    """While the worker runs: our signals are passed on to it as SIGTERM; :meth:`hand_on` gives the first
    one to the handler that had it before (after the worker saved and exited)."""

    proc: WorkerProcess
    received: int | None = None
    previous: dict[int, Any] = field(default_factory=dict)

    def __enter__(self) -> ForwardedSignals:
        for sig in FORWARDED_SIGNALS:
            try:
                self.previous[sig] = signal.signal(sig, self._forward)
            except ValueError:  # not the main thread (a launcher's worker thread): nothing to forward
                break
        return self

    def _forward(self, signum: int, frame: FrameType | None) -> None:
        log.warning("received %s: asking the worker to save and stop", signal.Signals(signum).name)
        self.received = self.received or signum
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)

    def hand_on(self) -> None:
        """Give the received signal to its previous handler (submitit: requeue), or end as it would."""
        if self.received is None:
            return
        handler = self.previous.get(self.received, signal.SIG_DFL)
        if callable(handler):
            handler(self.received, None)
        elif handler == signal.SIG_DFL:
            signal.signal(self.received, signal.SIG_DFL)
            os.kill(os.getpid(), self.received)


def run_worker(cmd: list[str], env: dict[str, str]) -> tuple[int, ForwardedSignals]:
    """Run the worker command to its end, passing our signals to it; (exit status, the signals). It runs in
    its own session and gets SIGTERM if this process dies (``datascale.orchestration.parent_guard``)."""
    guarded = [sys.executable, "-m", "datascale.orchestration.parent_guard", str(os.getpid()), *cmd]
    return supervised(subprocess.Popen(guarded, env=env, start_new_session=True))


def run_preloaded(entry: str, argv: list[str], env: dict[str, str]) -> tuple[int, ForwardedSignals]:
    """Like :func:`run_worker` for a one-process CPU run: ``entry.main(argv)`` forked from this process's
    preloaded forkserver (``datascale.orchestration.preload``: own session, SIGTERM when we die)."""
    from datascale.orchestration.preload import start

    return supervised(start(entry, argv, env))


def supervised(proc: WorkerProcess) -> tuple[int, ForwardedSignals]:
    """Wait for a started worker, passing our signals to it; (exit status, the signals)."""
    with ForwardedSignals(proc) as signals:
        returncode = proc.wait()
    return returncode, signals


def resume_point(run_dir: Path, rank: int) -> str | None:
    """The latest complete resume checkpoint (rank 0 also renames damaged newer ones out of the way)."""
    latest = latest_complete(Path(run_dir) / RESUME_DIR, quarantine=rank == 0)
    return None if latest is None else str(latest)
