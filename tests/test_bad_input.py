"""Bad input, table-driven: each case fails before any training with one line naming field, value and rule."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from datascale import CONF_DIR
from datascale.config_errors import ConfigError
from datascale.orchestration.launch import validate_and_prepare, validate_config
from datascale.orchestration.overrides import check_overrides

#: Small data stage for the cases that need one (built-in corpus, tiny caps).
SMALL = [
    "source.max_bytes_per_domain=30000",
    "source.max_doc_bytes=3000",
    "split.eval_bytes_per_domain=3000",
    "tokenizer.vocab_size=300",
    "subset.unique_tokens=2000",
]

#: (overrides, expected message start). Checked by composing, validating and preparing, as the launcher does.
CONFIG_CASES = [
    (["subset.unique_tokens=abc"], "subset.unique_tokens='abc': Value 'abc' of type 'str' could not be"),
    (["subset.unique_tokens=0"], "subset.unique_tokens=0: must be a positive integer"),
    (["subset.unique_tokens=-5"], "subset.unique_tokens=-5: must be a positive integer"),
    (["training.batch_tokens=1000"], "training.batch_tokens=1000: must be a multiple of model.seq_len=128"),
    (["model.n_head=3"], "model.d_model=128: must be divisible by n_head=3"),
    (
        ["+subset.weights={code:0.5,science:0.4}"],
        "subset.weights={'code': 0.5, 'science': 0.4}: must sum to 1",
    ),
    (["source.domains=[poetry]"], "source.domains='poetry': must be one of ['literature', 'code', 'science'"),
    (["study.name=../escape"], "study.name='../escape': must be letters, digits"),
    (["optim.lr=-1"], "optim.lr=-1: must be a positive number"),
    (["trainer.devices=2"], "trainer.devices=2: strategy=single runs one process"),
]
DATA_CASES = [
    ([*SMALL, "subset.unique_tokens=99999999"], "subset.unique_tokens=99999999: must be <= "),
    ([*SMALL, "subset.weights={poetry:0.5,code:0.5}"], "subset.weights=['poetry']: unknown domain"),
    (
        [*SMALL, "subset.unique_tokens=40000", "subset.weights={code:1.0}"],
        "subset.unique_tokens=40000: domain",
    ),
    (
        [*SMALL, "split.train_domains=[poetry]"],
        "split.train_domains=['poetry']: must be a subset of the corpus",
    ),
]


def _compose(overrides: list[str], tmp: Path):
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=[*overrides, f"paths.cache_dir={tmp}", f"paths.results_dir={tmp}"])


def _error(overrides: list[str], tmp: Path, prepare: bool) -> str:
    with pytest.raises(ConfigError) as err:
        cfg = _compose(overrides, tmp)
        if prepare:
            validate_and_prepare(cfg, progress=False)
        else:
            validate_config(cfg)
    message = str(err.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize(("overrides", "message"), CONFIG_CASES)
def test_config_errors(overrides: list[str], message: str, tmp_path: Path) -> None:
    assert _error(overrides, tmp_path, prepare=False).startswith(message)


@pytest.mark.parametrize(("overrides", "message"), DATA_CASES)
def test_data_budget_errors(
    overrides: list[str], message: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    cache = tmp_path_factory.getbasetemp() / "bad-input-cache"  # one small corpus for every case
    assert _error(overrides, cache, prepare=True).startswith(message)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["subset.unique_tokenz=5"],
            "subset.unique_tokenz='5': unknown key; did you mean subset.unique_tokens?",
        ),
        (["modle=gpt_3m"], "modle='gpt_3m': unknown key; did you mean model?"),
        (
            ["model=gpt_3n"],
            "model='gpt_3n': must be one of ['depth', 'gpt_0p9m', 'gpt_10m', 'gpt_3m', 'gpt_tiny']",
        ),
        (["--config-dir", "sweeps", "--config-name", "noise", "filter=c5"], "filter='c5': must be one of"),
    ],
)
def test_unknown_keys_and_options_suggest_the_closest(argv: list[str], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        check_overrides(argv)
    assert str(err.value).startswith(message)


def test_a_required_key_of_a_chosen_group_is_known() -> None:
    """``source.paths`` is ``???`` in local_files.yaml: setting it is what the leaf asks for, not a typo."""
    check_overrides(["source=local_files", "source.paths=[data/*.jsonl]", "source.domain_field=domain"])
    with pytest.raises(ConfigError, match=r"^source\.pathz="):
        check_overrides(["source=local_files", "source.pathz=[data/*.jsonl]"])


def _files(tmp: Path) -> dict[str, Path]:
    tmp.mkdir(parents=True)
    (tmp / "empty.txt").write_bytes(b"")
    (tmp / "binary.txt").write_bytes(b"\x00\x01\x02\xff" * 10)
    (tmp / "latin1.txt").write_bytes("café, naïve".encode("latin-1") * 20)
    (tmp / "missing.jsonl").write_text('{"text": "one record"}\n{"body": "another without text"}\n')
    good = "".join(f'{{"text": "record {i}"}}\n' for i in range(5000))
    (tmp / "badjson.jsonl").write_text(good + '{"text": "cut off\n' + good)
    (tmp / "number.jsonl").write_text(good + '\n{"text": 42}\n')
    return {p.stem: p for p in tmp.iterdir()}


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("empty", "source.paths='{path}': file is empty"),
        ("binary", "source.paths='{path}': file is binary (NUL bytes), not text"),
        ("latin1", "source.paths='{path}': file is not UTF-8 (byte 0xe9 at offset 3)"),
        (
            "missing",
            "source.text_field='text': must be set in every record; record missing.jsonl#1 (line 2) has none",
        ),
        # deep inside a large file: file and line, one line, no traceback; how to skip such records
        ("badjson", "source.paths='badjson.jsonl': line 5001 is not valid JSON (Invalid control character"),
        (
            "number",
            "source.text_field='text': must name a string field; record number.jsonl#5000 (line 5002) has",
        ),
        ("nothing", "source.paths=['{path}*']: globs match no files"),
    ],
)
def test_data_file_errors(name: str, message: str, tmp_path: Path) -> None:
    files = _files(tmp_path / "data")
    path = files.get(name, tmp_path / "data" / name)
    glob = f"{path}*" if name == "nothing" else str(path)
    got = _error(["source=local_files", f"source.paths=[{glob}]"], tmp_path / "cache", prepare=True)
    assert got.startswith(message.format(path=path)), got
