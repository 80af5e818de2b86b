from __future__ import annotations

import errno
import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from data_fixtures import SMALL_CAP, SMALL_DOC, Prepared
from hydra import compose, initialize_config_dir

import datascale
from datascale.artifacts import DataArtifacts
from datascale.config_errors import ConfigError
from datascale.data import token_cache
from datascale.data.prepare import main, prepare_data, prepare_from_config
from datascale.data.subsets import SizeSubset, SubsetManifest, load_subset_tokens
from datascale.data.token_cache import TokenCache

SMALL_OVERRIDES = [
    f"source.max_bytes_per_domain={SMALL_CAP}",
    f"source.max_doc_bytes={SMALL_DOC}",
    "split.eval_bytes_per_domain=6000",
    "tokenizer.vocab_size=600",
]


@pytest.fixture(scope="module")
def conf_dir(tmp_path_factory: pytest.TempPathFactory, prepared: Prepared) -> Path:
    """The project's data config groups plus a minimal root config whose cache is the session cache."""
    root = tmp_path_factory.mktemp("conf")
    for group in ("source", "split", "tokenizer", "subset"):
        shutil.copytree(datascale.CONF_DIR / group, root / group)
    (root / "paths").mkdir()
    (root / "paths" / "default.yaml").write_text(f"cache_dir: {prepared.cache_dir}\n")
    (root / "config.yaml").write_text(
        textwrap.dedent("""\
        defaults:
          - paths: default
          - source: builtin
          - split: heldout
          - tokenizer: bpe
          - subset: size
          - _self_
        """)
    )
    return root


def test_artifacts_point_at_consistent_files(prepared: Prepared, tmp_path: Path) -> None:
    art = prepared.artifacts
    assert DataArtifacts.load(art.save(tmp_path / "data_artifacts.json")) == art
    assert json.loads(Path(art.corpus_manifest).read_text())["corpus_hash"] == art.corpus_hash
    assert len(np.load(art.token_bytes_path)) == art.vocab_size == 600
    pool = TokenCache.open(art.train_cache)
    assert pool.tokenizer_hash == art.tokenizer_hash and pool.meta["eos_id"] == art.eos_id
    assert {d: sorted(s) for d, s in art.eval_caches.items()} == {
        d: ["test", "val"] for d in ("code", "literature", "science")
    }
    manifest = SubsetManifest.load(Path(art.subset_manifest))
    assert manifest.manifest_hash == art.subset_hash and manifest.pool_hash == pool.content_hash
    assert len(load_subset_tokens(pool, manifest)) == art.unique_tokens == 20_000


def test_cached_rerun_tokenises_nothing(prepared: Prepared) -> None:
    before = dict(token_cache.STATS)
    again = prepare_data(
        prepared.source,
        prepared.split,
        prepared.tokenizer,
        prepared.subset,
        prepared.cache_dir,
        progress=False,
    )
    assert again == prepared.artifacts and before == token_cache.STATS
    bigger = prepare_data(
        prepared.source,
        prepared.split,
        prepared.tokenizer,
        SizeSubset(unique_tokens=30_000),
        prepared.cache_dir,
        progress=False,
    )
    assert before == token_cache.STATS  # a new budget is only a new manifest
    assert (
        bigger.train_cache == prepared.artifacts.train_cache
        and bigger.subset_hash != prepared.artifacts.subset_hash
    )
    assert len(list((prepared.cache_dir / "tokenizers").glob("*/tokenizer.json"))) == 1
    reordered = prepare_data(
        prepared.source,
        prepared.split,
        prepared.tokenizer,
        SizeSubset(unique_tokens=20_000, order_seed=1),
        prepared.cache_dir,
        progress=False,
    )
    assert (
        reordered.eval_caches == prepared.artifacts.eval_caches
    )  # held-out sets never depend on the run's seeds
    assert reordered.subset_hash != prepared.artifacts.subset_hash


def test_prepare_from_yaml_configs_matches_python_configs(conf_dir: Path, prepared: Prepared) -> None:
    with initialize_config_dir(version_base="1.3", config_dir=str(conf_dir)):
        cfg = compose("config", overrides=[*SMALL_OVERRIDES, "subset.unique_tokens=20000"])
    assert cfg.subset.order_seed == 0 and cfg.split.seed == 1234
    assert prepare_from_config(cfg, progress=False) == prepared.artifacts


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("subset.unique_tokens=-1", "subset.unique_tokens=-1: must be a positive integer"),
        ("tokenizer.vocab_size=10", "tokenizer.vocab_size=10: must be an integer in [257, 1048576]"),
        (
            "split.train_domains=[poetry]",
            "split.train_domains=['poetry']: must be a subset of the corpus domains",
        ),
        ("subset.unique_tokens=1000000000", "subset.unique_tokens=1000000000: must be <= "),
        (
            "source.domains=[poetry]",
            "source.domains='poetry': must be one of ['literature', 'code', 'science', 'web']",
        ),
    ],
)
def test_config_errors_name_group_field_and_value(conf_dir: Path, override: str, message: str) -> None:
    with initialize_config_dir(version_base="1.3", config_dir=str(conf_dir)):
        cfg = compose("config", overrides=[*SMALL_OVERRIDES, override])
    with pytest.raises(ConfigError) as err:
        prepare_from_config(cfg, progress=False)
    assert str(err.value).startswith(message)
    assert "\n" not in str(err.value)


def test_local_files_glob_errors_are_prefixed(conf_dir: Path, tmp_path: Path) -> None:
    with initialize_config_dir(version_base="1.3", config_dir=str(conf_dir)):
        cfg = compose("config", overrides=["source=local_files", f"source.paths=[{tmp_path}/none/*.txt]"])
        unset = compose("config", overrides=["source=local_files"])
    with pytest.raises(ConfigError, match=r"^source\.paths=\['.*/none/\*\.txt'\]: globs match no files$"):
        prepare_from_config(cfg, progress=False)
    with pytest.raises(ConfigError, match=r"^source\.paths='\?\?\?': is required"):
        prepare_from_config(unset, progress=False)


def test_cli_prepares_budgets_and_prints_tables(conf_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(["--unique-tokens", "20000", "5000", "--no-progress", *SMALL_OVERRIDES], conf_dir=conf_dir) == 0
    )
    out = capsys.readouterr().out
    assert "nested, verified" in out and "literature" in out and "20,000" in out and "5,000" in out
    assert main(["--unique-tokens", "0", *SMALL_OVERRIDES], conf_dir=conf_dir) == 2
    assert "subset.unique_tokens=0: must be a positive integer" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"], conf_dir=conf_dir)
    assert exit_info.value.code == 0 and "--unique-tokens" in capsys.readouterr().out


def test_cli_a_full_disk_is_one_line_and_leaves_no_artifact(
    conf_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    real_save = np.save

    def full(path: object, *args: object, **kwargs: object) -> None:
        if str(path).endswith("offsets.npy"):  # the first token cache being written
            raise OSError(errno.ENOSPC, "No space left on device")
        real_save(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(token_cache.np, "save", full)
    argv = ["--no-progress", *SMALL_OVERRIDES, f"paths.cache_dir={tmp_path}"]
    assert main(argv, conf_dir=conf_dir) == 1
    out = capsys.readouterr().out
    assert out.startswith("disk full: no space left under paths.cache_dir=") and out.count("\n") == 1
    assert not list((tmp_path / "tokens").glob("*/meta.json"))  # no token cache, not half of one
    assert not list(tmp_path.rglob(".tmp-*"))
    monkeypatch.setattr(token_cache.np, "save", real_save)
    assert main(argv, conf_dir=conf_dir) == 0  # the next run builds it whole


WORKER = """
import json, sys
from datascale.data.prepare import prepare_data
from datascale.data.sources import LocalFiles
from datascale.data.splits import HeldoutSplit
from datascale.data.subsets import SizeSubset
from datascale.data.tokenizer import BPETokenizer
art = prepare_data(LocalFiles(paths=[sys.argv[1]], domain_field="d"),
                   HeldoutSplit(eval_bytes_per_domain=2000), BPETokenizer(vocab_size=400),
                   SizeSubset(unique_tokens=3000), sys.argv[2], progress=False)
print(json.dumps({"artifacts": art.to_dict(), "torch": "torch" in sys.modules}))
"""


def test_parallel_processes_share_one_build_and_never_import_torch(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    with open(tmp_path / "docs.jsonl", "w") as fh:
        for i in range(80):
            words = " ".join(rng.choice(["alpha", "beta", "gamma", "delta", "sigma", "omega"], size=60))
            fh.write(json.dumps({"text": f"doc {i} {words}", "d": "xy"[i % 2]}) + "\n")
    cmd = [sys.executable, "-c", WORKER, str(tmp_path / "docs.jsonl"), str(tmp_path / "cache")]
    procs = [
        subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err[-2000:] for _, err in outs]
    results = [json.loads(out.strip().splitlines()[-1]) for out, _ in outs]
    assert results[0]["artifacts"] == results[1]["artifacts"]
    assert not any(r["torch"] for r in results)
    cache = tmp_path / "cache"
    assert len(list((cache / "tokenizers").glob("*/tokenizer.json"))) == 1
    assert len(list((cache / "tokens").glob("*/meta.json"))) == 5  # pool + 2 domains x (val, test)
    assert not list(cache.rglob(".tmp-*"))
