"""Where the training pool is tokenised and the corpus's dedup digests computed (Hydra ``data_executor``
group): a datatrove pipeline, here or on SLURM.

The pool's documents are cut into ``tasks`` contiguous ranges; each task is one run of datatrove's pipeline
(:class:`TokeniseParts`, one step) that writes its range as one part of the token cache
(:func:`datascale.data.token_cache.write_part`, atomic). datatrove marks each finished task complete in
``<cache root>/.work-<key>-<tasks>/datatrove/completions/``, so a build that was killed starts again with the
tasks it had not finished; the parts are then merged, in order, into the one content-keyed cache directory
every later stage reads (the same files, the same ids, whatever the executor and the task count). The corpus
stage's exact dedup runs on the same executor (:class:`datascale.data.splits.DigestParts`: each task writes
its range's text digests as one ``.npy`` part).

* ``local`` (the default): datatrove's ``LocalPipelineExecutor``, one process per task, as many at a time as
  there are usable cores; a pool under ``min_task_bytes`` per core gets fewer tasks (one task runs in this
  process: no start-up cost for small pools).
* ``slurm``: datatrove's ``SlurmPipelineExecutor`` (an sbatch job array, one array task per task); this
  process waits for the completion markers, then merges. The job gets this interpreter's ``bin`` on its
  ``PATH`` and this environment (``--export=ALL``), so the cache directory must be on a file system the
  nodes share.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import datasets
import numpy as np
from datatrove.executor import LocalPipelineExecutor, SlurmPipelineExecutor
from datatrove.pipeline.base import PipelineStep

from datascale.config_errors import require, require_positive, require_positive_int
from datascale.data.documents import iter_batches
from datascale.data.token_cache import (
    TokenCache,
    cache_key,
    merge_parts,
    open_or_build,
    usable_cores,
    write_part,
)
from datascale.data.tokenizer import TrainedTokenizer, load_tokenizer

log = logging.getLogger("datascale.data")


class DebugLog(io.TextIOBase):
    """A stderr stand-in that hands datatrove's console lines (loguru) to this package's log at DEBUG: a
    data-stage call prints only its own lines; each task's full log stays in ``<work>/datatrove/logs``."""

    def write(self, text: str) -> int:
        for line in text.splitlines():
            if line.strip():
                log.debug("datatrove: %s", line)
        return len(text)


class TokeniseParts(PipelineStep):
    """The datatrove step: task ``rank`` of ``world_size`` tokenises its contiguous range of the documents
    (or of their rows ``indices``: an array, or a ``.npy`` file each task memory-maps, so that no task
    receives a copy) into ``<out>/<rank>`` (skipped when that part is complete)."""

    name = "tokenise"
    type = "datascale"

    def __init__(
        self,
        documents: str,
        indices: np.ndarray | str | None,
        tokenizer: str,
        eos_token: str,
        out: str,
        threads: int,
    ):
        super().__init__()
        self.documents, self.indices, self.tokenizer = documents, indices, tokenizer
        self.eos_token, self.out, self.threads = eos_token, out, threads

    def run(self, data: Any = None, rank: int = 0, world_size: int = 1) -> Iterator[Any]:
        docs = datasets.load_from_disk(self.documents)
        indices = np.load(self.indices, mmap_mode="r") if isinstance(self.indices, str) else self.indices
        n = len(indices) if indices is not None else len(docs)
        lo, hi = n * rank // world_size, n * (rank + 1) // world_size
        rows = indices[lo:hi] if indices is not None else np.arange(lo, hi)
        tok = load_tokenizer(Path(self.tokenizer), self.eos_token)
        eos_id = tok.token_to_id(self.eos_token)
        assert eos_id is not None  # load_tokenizer checked it
        batches = iter_batches(docs, ["doc_id", "domain", "text"], rows)
        write_part(Path(self.out) / f"{rank:05d}", batches, tok, eos_id, self.threads)
        self.stat_update("documents", value=hi - lo)
        yield from ()


class DataExecutor(Protocol):
    """What the data stage needs from a ``data_executor`` leaf."""

    def task_count(self, n_bytes: int) -> int:
        """How many tasks a pool of ``n_bytes`` of text is cut into."""
        ...

    def threads(self, tasks: int) -> int:
        """Tokenizer threads per task."""
        ...

    def run(self, step: PipelineStep, tasks: int, work: Path) -> None:
        """Run ``step`` as ``tasks`` tasks (datatrove logs and completion markers in ``work``); return when
        every task is complete."""
        ...


@dataclass
class LocalExecutor:
    """``data_executor=local``: datatrove's LocalPipelineExecutor on this machine."""

    tasks: int | None = None
    """Tasks the pool is cut into; None: one per usable core, fewer for a small pool (see min_task_bytes)."""
    min_task_bytes: int = 16_000_000
    """With ``tasks: null``, each task gets at least this many bytes of text (a 10 MB pool runs as one task
    in this process)."""

    def __post_init__(self) -> None:
        require(self.tasks is None or _positive_int(self.tasks), "tasks", self.tasks, "must be null or >= 1")
        require_positive_int("min_task_bytes", self.min_task_bytes)

    def task_count(self, n_bytes: int) -> int:
        if self.tasks is not None:
            return self.tasks
        return max(1, min(usable_cores(), math.ceil(n_bytes / self.min_task_bytes)))

    def threads(self, tasks: int) -> int:
        return max(1, usable_cores() // tasks)

    def run(self, step: PipelineStep, tasks: int, work: Path) -> None:
        workers = min(tasks, usable_cores())
        executor = LocalPipelineExecutor(
            pipeline=[step], tasks=tasks, workers=workers, logging_dir=str(work / "datatrove")
        )
        with contextlib.redirect_stderr(DebugLog()):  # datatrove logs each task to stderr (and to work/)
            executor.run()


@dataclass
class SlurmExecutor:
    """``data_executor=slurm``: datatrove's SlurmPipelineExecutor (an sbatch job array); waits for it."""

    tasks: int = 8
    """Tasks (SLURM array tasks) the pool is cut into."""
    partition: str = "debug"
    """SLURM partition the job array runs on."""
    time: str = "01:00:00"
    """SLURM time limit of each task."""
    cpus_per_task: int = 1
    """CPUs per task (a task tokenises on one thread)."""
    mem_per_cpu_gb: int = 2
    """Memory per CPU, GB."""
    timeout_min: float = 120.0
    """How long this process waits for every task to be marked complete before it gives up."""

    def __post_init__(self) -> None:
        require_positive_int("tasks", self.tasks)
        require(isinstance(self.partition, str) and bool(self.partition), "partition", self.partition,
                "must be a SLURM partition name")  # fmt: skip
        require_positive_int("cpus_per_task", self.cpus_per_task)
        require_positive_int("mem_per_cpu_gb", self.mem_per_cpu_gb)
        require_positive("timeout_min", self.timeout_min)

    def task_count(self, n_bytes: int) -> int:
        return self.tasks

    def threads(self, tasks: int) -> int:
        return self.cpus_per_task

    def run(self, step: PipelineStep, tasks: int, work: Path) -> None:
        executor = SlurmPipelineExecutor(
            pipeline=[step],
            tasks=tasks,
            time=self.time,
            partition=self.partition,
            cpus_per_task=self.cpus_per_task,
            mem_per_cpu_gb=self.mem_per_cpu_gb,
            job_name=f"datascale-{step.name}",
            logging_dir=str(work / "datatrove"),
            slurm_logs_folder=str(work / "slurm_logs"),
            env_command=f"export PATH={Path(sys.executable).parent}:$PATH",
            qos="",
            requeue=False,
        )
        with contextlib.redirect_stderr(DebugLog()):
            executor.run()
        deadline = time.monotonic() + 60 * self.timeout_min
        while executor.get_incomplete_ranks(skip_completed=True):
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"data_executor=slurm: tasks not complete after {self.timeout_min} min; logs in {work}"
                )
            time.sleep(1.0)


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def tokenise_pool(
    root: Path,
    documents: Path,
    indices: np.ndarray | str | None,
    content_hash: str,
    tok: TrainedTokenizer,
    executor: DataExecutor,
    n_bytes: int,
) -> TokenCache:
    """The pool's token cache (built by ``executor`` in parts, then merged, if it is not there yet); the pool
    is ``documents``' rows ``indices`` (an array or its ``.npy`` file), or all of them."""
    tasks = executor.task_count(n_bytes)
    work = Path(root) / f".work-{cache_key(content_hash, tok.hash)[:32]}-{tasks}"
    eos_token = str(tok.tokenizer.id_to_token(tok.eos_id))

    def fill(tmp: Path) -> dict[str, Any]:
        threads = executor.threads(tasks)
        step = TokeniseParts(str(documents), indices, str(tok.path), eos_token, str(work / "parts"), threads)
        started = time.perf_counter()
        executor.run(step, tasks, work)
        log.info("data_executor: %d tasks done in %.1f s; merging", tasks, time.perf_counter() - started)
        parts = merge_parts(tmp, [work / "parts" / f"{r:05d}" for r in range(tasks)])
        return parts | {"workers": min(tasks * threads, usable_cores()), "tasks": tasks}

    cache = open_or_build(
        root, content_hash, tok.hash, "pool", fill, eos_id=tok.eos_id, vocab_size=tok.vocab_size
    )
    shutil.rmtree(work, ignore_errors=True)  # the parts are in the cache now; nothing to resume
    return cache
