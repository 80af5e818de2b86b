"""Resume checkpoints on disk (torch-free, so the launcher can choose one): names, checksums, the latest
complete one.

``<run_dir>/resume/step=<s>.ckpt`` is a file (or FSDP's sharded directory) written by Lightning;
``step=<s>.ckpt.sha256.json`` (the sha256 of every file of it) is written after it, atomically. Only a
checkpoint whose checksums match is *complete*: a killed write, a truncated file or a flipped byte is skipped
with a warning naming it, never loaded.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import time
from pathlib import Path

from datascale.storage import atomic_write_json, file_sha256

log = logging.getLogger("datascale.training")

RESUME_DIR = "resume"
#: Exit status of a preempted worker (EX_TEMPFAIL: "try again later"); the launcher records it as preempted.
EXIT_PREEMPTED = 75
#: A preempted worker's marker in the run directory (the launcher consumes it).
PREEMPTED_FILENAME = "preempted.json"
CHECKPOINT_NAME = re.compile(r"step=(\d+)\.ckpt")


# ---- finding a checkpoint to resume from -------------------------------------------------------------------
def checksum_path(checkpoint: Path) -> Path:
    return checkpoint.with_name(checkpoint.name + ".sha256.json")


def checkpoint_files(checkpoint: Path) -> dict[str, str]:
    """sha256 of each file of a checkpoint (one file, or every file of a sharded directory), by name."""
    if checkpoint.is_dir():
        files = sorted(p for p in checkpoint.rglob("*") if p.is_file())
        return {str(p.relative_to(checkpoint)): file_sha256(p) for p in files}
    return {checkpoint.name: file_sha256(checkpoint)}


def write_checksums(checkpoint: Path, step: int, tokens_seen: int) -> None:
    atomic_write_json(
        checksum_path(checkpoint),
        {"step": step, "tokens_seen": tokens_seen, "sha256": checkpoint_files(checkpoint)},
    )


def why_incomplete(checkpoint: Path) -> str | None:
    """None for a complete checkpoint; otherwise what is wrong with it (one line)."""
    sums = checksum_path(checkpoint)
    if not sums.is_file():
        return "no checksum file (the write did not finish)"
    try:
        expected = json.loads(sums.read_text())["sha256"]
        actual = checkpoint_files(checkpoint) if checkpoint.exists() else {}
    except (OSError, ValueError, KeyError, TypeError) as err:
        return f"unreadable checksum file ({type(err).__name__}: {err})"
    if actual != expected:
        bad = sorted(k for k in set(expected) | set(actual) if expected.get(k) != actual.get(k))
        return f"checksum mismatch in {bad}"
    return None


def checkpoint_step(path: Path) -> int:
    """The optimizer step in a resume checkpoint's name (``step=00000040.ckpt`` -> 40)."""
    match = CHECKPOINT_NAME.fullmatch(Path(path).name)
    if match is None:
        raise ValueError(f"{path}: not a resume checkpoint name (step=<s>.ckpt)")
    return int(match.group(1))


def resume_checkpoints(folder: Path) -> list[tuple[int, Path]]:
    """Every resume checkpoint in ``folder`` (complete or not), newest step first."""
    found = []
    for path in Path(folder).glob("step=*.ckpt"):
        match = CHECKPOINT_NAME.fullmatch(path.name)
        if match is not None:
            found.append((int(match.group(1)), path))
    return sorted(found, reverse=True)


def latest_complete(folder: Path, quarantine: bool = True) -> Path | None:
    """The newest complete resume checkpoint. Every newer damaged one is named in a warning, never loaded,
    and (``quarantine``) renamed ``<name>.damaged-<ns>``: kept for inspection, out of the way of later saves
    and pruning. Only one process of a run may quarantine (rank 0); the others find the same checkpoint."""
    for _, path in resume_checkpoints(folder):
        problem = why_incomplete(path)
        if problem is None:
            return path
        log.warning("skipping damaged resume checkpoint %s: %s", path, problem)
        if quarantine:
            checksum_path(path).unlink(missing_ok=True)
            path.rename(path.with_name(f"{path.name}.damaged-{time.time_ns()}"))
    return None


def remove_checkpoint(path: Path) -> None:
    """Checksum first: a prune killed halfway leaves an unverified checkpoint, never a verified torso."""
    checksum_path(path).unlink(missing_ok=True)
    shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
