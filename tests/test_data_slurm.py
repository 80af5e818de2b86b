"""The data stage's pool tokenisation as a datatrove pipeline on a real single-node SLURM cluster
(``data_executor=slurm``): the same cache, byte for byte, as the local build."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
import slurm_cluster

from datascale.data import token_cache
from datascale.data.executor import SlurmExecutor
from datascale.data.prepare import prepare_data
from datascale.data.sources import LocalFiles
from datascale.data.splits import HeldoutSplit
from datascale.data.subsets import SizeSubset
from datascale.data.tokenizer import BPETokenizer


@pytest.fixture
def slurm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    cluster = slurm_cluster.start(tmp_path)
    if isinstance(cluster, str):
        pytest.skip(f"no single-node SLURM here: {cluster}")
    for key, value in cluster.env().items():
        monkeypatch.setenv(key, value)  # datatrove's sbatch and this process's polling see the cluster
    yield cluster
    _wait_for_empty_queue()  # the array tasks end after they mark completion; stopping first orphans them
    cluster.stop()


def _wait_for_empty_queue(timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        queue = subprocess.run(["squeue", "-h"], capture_output=True, text=True)
        if queue.returncode != 0 or not queue.stdout.strip():
            return
        time.sleep(1)


def _prepare(files: Path, cache: Path, executor: SlurmExecutor | None) -> object:
    return prepare_data(
        LocalFiles(paths=[str(files)]),
        HeldoutSplit(eval_bytes_per_domain=3000),
        BPETokenizer(vocab_size=300),
        SizeSubset(unique_tokens=5000),
        cache,
        progress=False,
        data_executor=executor,
    )


@pytest.mark.slow
def test_slurm_executor_tokenises_the_pool_as_a_job_array(slurm: object, tmp_path: Path) -> None:
    files = tmp_path / "c.jsonl"
    records = ({"text": f"record {i} " + "words and more words " * (i % 17 + 3)} for i in range(400))
    files.write_text("".join(json.dumps(r) + "\n" for r in records))
    local = _prepare(files, tmp_path / "local", None)
    executor = SlurmExecutor(tasks=2, partition="debug", time="00:10:00", mem_per_cpu_gb=1, timeout_min=5)
    on_slurm = _prepare(files, tmp_path / "slurm", executor)
    for name in token_cache.FILES:
        if name != "meta.json":
            a, b = (Path(x.train_cache) / name for x in (local, on_slurm))  # type: ignore[attr-defined]
            assert a.read_bytes() == b.read_bytes(), name
    assert json.loads((Path(on_slurm.train_cache) / "meta.json").read_text())["tasks"] == 2  # type: ignore[attr-defined]
    assert on_slurm.subset_hash == local.subset_hash  # type: ignore[attr-defined]
