from __future__ import annotations

import json
from pathlib import Path

import datasets
import pytest

from datascale.config_errors import ConfigError
from datascale.data.documents import DOCUMENT_FEATURES
from datascale.data.sources import HubDataset, LocalFiles


def _write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


@pytest.fixture
def files(tmp_path: Path) -> Path:
    (tmp_path / "txt" / "sub").mkdir(parents=True)
    (tmp_path / "txt" / "a.txt").write_text("First paragraph.\n\nSecond paragraph.\n")
    (tmp_path / "txt" / "sub" / "b.txt").write_text("Another file.\n")
    (tmp_path / "json").mkdir()
    _write_jsonl(
        tmp_path / "json" / "x.jsonl",
        [
            {"body": "alpha text", "topic": "math", "key": "k1", "score": 3},
            {"body": "beta text", "topic": "poetry", "key": "k2", "score": 4},
        ],
    )
    (tmp_path / "pq").mkdir()
    datasets.Dataset.from_dict({"content": ["one", "two", "three"]}).to_parquet(
        str(tmp_path / "pq" / "p.parquet")
    )
    return tmp_path


def test_text_files_by_glob_one_document_per_file(files: Path) -> None:
    ds = LocalFiles(paths=[str(files / "txt" / "**" / "*.txt")]).load()
    assert ds.features == DOCUMENT_FEATURES
    assert ds["doc_id"] == ["local:a.txt", "local:sub/b.txt"]
    assert ds["text"] == ["First paragraph.\n\nSecond paragraph.\n", "Another file.\n"]
    assert set(ds["domain"]) == {"local"} and set(ds["source"]) == {"local"}
    assert json.loads(ds[1]["meta"])["file"] == "sub/b.txt"


def test_paragraph_sampling_splits_at_blank_lines(files: Path) -> None:
    ds = LocalFiles(paths=[str(files / "txt" / "a.txt")], sample_by="paragraph", domain="notes").load()
    assert ds["text"] == ["First paragraph.", "Second paragraph."]
    assert ds["doc_id"] == ["local:a.txt#p0", "local:a.txt#p1"]
    assert set(ds["domain"]) == {"notes"}


def test_jsonl_field_mapping(files: Path) -> None:
    ds = LocalFiles(
        paths=[str(files / "json" / "*.jsonl")], text_field="body", domain_field="topic", doc_id_field="key"
    ).load()
    assert ds["doc_id"] == ["local:k1", "local:k2"]
    assert ds["text"] == ["alpha text", "beta text"]
    assert ds["domain"] == ["math", "poetry"]
    assert json.loads(ds[0]["meta"]) == {"file": "x.jsonl", "score": 3}


def test_domains_keep_only_the_named_domains(files: Path) -> None:
    spec = {"paths": [str(files / "json" / "*.jsonl")], "text_field": "body", "domain_field": "topic"}
    assert LocalFiles(**spec, domains=["poetry"]).load()["text"] == ["beta text"]
    with pytest.raises(ConfigError, match=r"^domains='web': must be one of \['math', 'poetry'\]$"):
        LocalFiles(**spec, domains=["poetry", "web"]).load()


def test_parquet_rows_get_file_row_ids(files: Path) -> None:
    ds = LocalFiles(paths=[str(files / "pq" / "p.parquet")], format="parquet", text_field="content").load()
    assert ds["doc_id"] == ["local:p.parquet#0", "local:p.parquet#1", "local:p.parquet#2"]
    assert ds["text"] == ["one", "two", "three"]


def test_local_errors_name_field_and_value(files: Path) -> None:
    missing = str(files / "nothing" / "*.txt")
    with pytest.raises(ConfigError) as err:
        LocalFiles(paths=[missing])
    assert str(err.value) == f"paths={[missing]!r}: globs match no files"
    with pytest.raises(
        ConfigError, match=r"^text_field='text': must be set in every record; record x.jsonl#0 "
    ):
        LocalFiles(paths=[str(files / "json" / "x.jsonl")]).load()
    with pytest.raises(
        ConfigError, match=r"^text_field='text': must be a column of p.parquet; its columns are"
    ):
        LocalFiles(paths=[str(files / "pq" / "p.parquet")], format="parquet").load()
    with pytest.raises(ConfigError, match=r"^format='csv': must be one of"):
        LocalFiles(paths=[str(files / "json" / "x.jsonl")], format="csv")
    with pytest.raises(ConfigError, match=r"^sample_by='line'"):
        LocalFiles(paths=[str(files / "json" / "x.jsonl")], sample_by="line")
    with pytest.raises(ConfigError, match=r"^format='auto': 'auto' needs one known file type"):
        LocalFiles(paths=[str(files / "json" / "x.jsonl"), str(files / "txt" / "a.txt")])
    _write_jsonl(files / "json" / "dup.jsonl", [{"text": "a", "topic": "t"}, {"text": "b", "topic": "t"}])
    with pytest.raises(
        ConfigError, match=r"^doc_id_field='topic': must give unique document ids; 'local:t' repeats"
    ):
        LocalFiles(paths=[str(files / "json" / "dup.jsonl")], doc_id_field="topic").load()


def test_fingerprint_tracks_file_content_not_glob_order(files: Path) -> None:
    a, b = str(files / "txt" / "a.txt"), str(files / "txt" / "sub" / "b.txt")
    fp = LocalFiles(paths=[a, b]).fingerprint()
    assert LocalFiles(paths=[b, a]).fingerprint() == fp
    assert LocalFiles(paths=[a, b], domain="other").fingerprint() != fp
    (files / "txt" / "a.txt").write_text("changed\n")
    assert LocalFiles(paths=[a, b]).fingerprint() != fp


def test_hub_dataset_streams_a_local_dataset_dir_through_the_shared_path(files: Path) -> None:
    """No hub here: a local dataset directory exercises the real load_dataset(streaming=True) code path."""
    repo = files / "my_corpus"
    repo.mkdir()
    _write_jsonl(repo / "train.jsonl", [{"text": f"record number {i}", "lang": "en"} for i in range(10)])
    source = HubDataset(name=str(repo), max_documents=4, domain="web")
    ds = source.load()
    assert ds.features == DOCUMENT_FEATURES
    assert ds["text"] == [f"record number {i}" for i in range(4)]
    assert ds["doc_id"][0] == f"hf:{repo}:train#0"
    assert set(ds["source"]) == {f"hf:{repo}"} and set(ds["domain"]) == {"web"}
    assert json.loads(ds[0]["meta"]) == {"lang": "en"}
    assert source.fingerprint() != HubDataset(name=str(repo), max_documents=5).fingerprint()


def test_hub_config_errors() -> None:
    with pytest.raises(ConfigError, match=r"^max_documents=0: must be a positive integer"):
        HubDataset(name="wikitext", max_documents=0)
    with pytest.raises(ConfigError, match=r"^name='': "):
        HubDataset(name="")
