"""Document sources (Hydra ``source`` group): each turns some text collection into a DOCUMENT_FEATURES
Dataset.

Every source has ``load() -> datasets.Dataset`` and a cheap ``fingerprint() -> str``: the identity of what
``load()`` would return, so that the prepared corpus can be cached without loading anything. Local files and
Hub datasets share one conversion path (:func:`_to_documents`), so the Hub code is tested through local files.
"""

from __future__ import annotations

import codecs
import glob
import json
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import datasets
import pyarrow.parquet as pq

from datascale.config_errors import ConfigError, require, require_choice, require_positive_int
from datascale.data import builtin_corpus
from datascale.data.documents import (
    Row,
    documents_from_rows,
    first_repeat,
    iter_batches,
    make_document,
    validate_documents,
)
from datascale.storage import canonical_json_hash, file_sha256

log = logging.getLogger("datascale.data")

FORMATS = ("auto", "text", "json", "parquet")
SAMPLE_BY = ("document", "paragraph")
ON_BAD_RECORD = ("error", "skip")
_EXTENSIONS = {
    ".txt": "text",
    ".text": "text",
    ".md": "text",
    ".json": "json",
    ".jsonl": "json",
    ".ndjson": "json",
    ".parquet": "parquet",
    ".pq": "parquet",
}
#: Bump when the conversion rules change: it is part of every source fingerprint.
CONVERSION_VERSION = 2  # 2: a record without its text field is an error, not skipped


class DocumentSource(Protocol):
    """What ``prepare_data`` needs from a source."""

    def load(self, workdir: Path | None = None) -> datasets.Dataset:
        """The documents; with ``workdir``, written there as Arrow and memory-mapped (bounded memory)."""
        ...

    def fingerprint(self) -> str: ...

    def provenance(self) -> dict[str, Any]: ...


def _as_list(value: Any) -> list[Any]:
    """Hydra hands lists over as ListConfig; a lone string means one item."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return list(value)


# ----------------------------------------------------------------------------------- shared conversion


def _paragraphs(text: str) -> list[str]:
    return [p.strip("\n") for p in text.split("\n\n") if p.strip()]


def _to_documents(
    rows: Iterable[Mapping[str, Any]],
    *,
    source: str,
    key: Callable[[int, Mapping[str, Any]], str],
    max_documents: int | None = None,
    **options: Any,
) -> list[dict[str, Any]]:
    """Map raw records (a Dataset, an IterableDataset or any iterable of dicts) to document rows with
    :func:`_row_documents`, up to ``max_documents``."""
    out: list[dict[str, Any]] = []
    for i, row in enumerate(rows):
        if max_documents is not None and len(out) >= max_documents:
            break
        out.extend(_row_documents(i, row, source=source, name=key(i, row), **options))
    return out[:max_documents] if max_documents is not None else out


def _field_error(row: Mapping[str, Any], name: str, text_field: str, domain_field: str | None,
                 doc_id_field: str | None) -> ConfigError | None:  # fmt: skip
    """Why record ``name`` (e.g. ``x.jsonl#3 (line 4)``) cannot become a document, or None."""
    text = row.get(text_field)
    if text_field not in row or text is None:  # a JSON record without the field: datasets filled in None
        return ConfigError(
            "text_field",
            text_field,
            f"must be set in every record; record {name} has none (fields {sorted(row)})",
        )
    if not isinstance(text, str):
        return ConfigError(
            "text_field", text_field, f"must name a string field; record {name} has {type(text).__name__}"
        )
    if domain_field is not None:
        value = row.get(domain_field)
        if not isinstance(value, str) or not value:
            return ConfigError(
                "domain_field",
                domain_field,
                f"must name a non-empty string field; record {name} has {value!r}",
            )
    if doc_id_field is not None and row.get(doc_id_field) in (None, ""):
        return ConfigError(
            "doc_id_field", doc_id_field, f"must be set in every record; record {name} has none"
        )
    return None


def _row_documents(
    i: int,
    row: Mapping[str, Any],
    *,
    source: str,
    name: str,
    text_field: str = "text",
    domain_field: str | None = None,
    domain: str | None = None,
    doc_id_field: str | None = None,
    sample_by: str = "document",
    extra_meta: Mapping[str, Any] | None = None,
    where: str = "",
) -> list[dict[str, Any]]:
    """The documents of record ``i`` (one, or one per paragraph with ``sample_by="paragraph"``; none for an
    empty text). Doc ids are ``<source>:<name>`` unless ``doc_id_field`` names one; the other columns go
    into ``meta``. Raises ConfigError naming the field (and the record, ``where`` it is) when a record
    lacks the text/domain/id field."""
    error = _field_error(row, f"{name}{where}", text_field, domain_field, doc_id_field)
    if error is not None:
        raise error
    base = f"{source}:{row[doc_id_field]}" if doc_id_field is not None else f"{source}:{name}"
    row_domain = row[domain_field] if domain_field is not None else domain
    used = {text_field, domain_field, doc_id_field}
    meta = {**(extra_meta or {}), **{k: v for k, v in row.items() if k not in used}}
    pieces = [row[text_field]] if sample_by == "document" else _paragraphs(row[text_field])
    return [
        make_document(
            base if sample_by == "document" else f"{base}#p{k}", piece, str(row_domain), source, meta=meta
        )
        for k, piece in enumerate(pieces)
        if piece.strip()
    ]


def check_readable_text(path: Path, binary_ok: bool = False, utf8: bool = True) -> None:
    """A one-line ConfigError for a file that cannot be a corpus: empty, unreadable, binary or (``utf8``)
    not UTF-8. Read in 1 MiB blocks (a large file is never held in memory)."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(65536)
            if not size:
                raise ConfigError("paths", str(path), "file is empty")
            if binary_ok:
                return
            if b"\x00" in head:
                raise ConfigError(
                    "paths", str(path), "file is binary (NUL bytes), not text: set format or drop it"
                )
            if utf8:
                fh.seek(0)
                _check_utf8(fh, path)
    except OSError as err:
        raise ConfigError("paths", str(path), f"file cannot be read: {err.strerror}") from None


def _check_utf8(fh: Any, path: Path) -> None:
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = 0
    for block in iter(lambda: fh.read(1 << 20), b""):
        try:
            decoder.decode(block)
        except UnicodeDecodeError as err:
            at = offset + err.start
            raise ConfigError(
                "paths",
                str(path),
                f"file is not UTF-8 (byte 0x{block[err.start]:02x} at offset {at}): convert it, "
                "e.g. `iconv -f latin1 -t utf-8`",
            ) from None
        offset += len(block)
    try:
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        raise ConfigError("paths", str(path), "file is not UTF-8 (it ends inside a character)") from None


def _file_row_key(relpath: str, one_per_file: bool) -> Callable[[int, Mapping[str, Any]], str]:
    """Doc-id key of row ``i`` of a local file: the file itself, or ``<file>#<i>``."""

    def key(i: int, row: Mapping[str, Any]) -> str:
        return relpath if one_per_file else f"{relpath}#{i}"

    return key


def _check_unique_ids(ds: datasets.Dataset, doc_id_field: str | None) -> None:
    """Generated ids are unique by construction; ids taken from a column must be checked."""
    if doc_id_field is None:
        return
    repeat = first_repeat(lambda: (b["doc_id"] for b in iter_batches(ds, ["doc_id"])))
    if repeat is not None:
        raise ConfigError("doc_id_field", doc_id_field, f"must give unique document ids; {repeat!r} repeats")


# ------------------------------------------------------------------------------------- local records

#: (record index, line or row number from 1, the record or why it is not one) of a local file.
Record = tuple[int, int, "Mapping[str, Any] | ConfigError"]


def read_records(path: Path, fmt: str, relpath: str, fields: Sequence[str | None]) -> Iterator[Record]:
    """The records of one local file, streamed: a JSON-lines file line by line (blank lines skipped; a line
    that is not a JSON object comes as a ConfigError naming file and line), a JSON array file whole, a
    Parquet file in row batches (``fields`` must be columns of it), a text file as one record."""
    if fmt == "text":
        yield 0, 1, {"text": path.read_text(encoding="utf-8")}
    elif fmt == "parquet":
        yield from _parquet_records(path, relpath, fields)
    else:
        yield from _json_records(path, relpath)


def _parquet_records(path: Path, relpath: str, fields: Sequence[str | None]) -> Iterator[Record]:
    parquet = pq.ParquetFile(path)
    columns = parquet.schema_arrow.names
    for col, what in zip(fields, ("text_field", "domain_field", "doc_id_field"), strict=True):
        if col is not None and parquet.metadata.num_rows and col not in columns:
            raise ConfigError(what, col, f"must be a column of {relpath}; its columns are {columns}")
    i = 0
    for batch in parquet.iter_batches(batch_size=1000):
        for row in batch.to_pylist():
            yield i, i + 1, row
            i += 1


def _json_records(path: Path, relpath: str) -> Iterator[Record]:
    with open(path, "rb") as fh:
        if fh.read(4096).lstrip()[:1] == b"[":  # one JSON array (not JSON lines): read whole
            fh.seek(0)
            yield from _json_array(fh.read(), relpath)
            return
        fh.seek(0)
        i = 0
        for line, raw in enumerate(fh, 1):
            if raw.strip():
                yield i, line, _parse_line(raw, relpath, line)
                i += 1


def _parse_line(raw: bytes, relpath: str, line: int) -> Mapping[str, Any] | ConfigError:
    try:
        record = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as err:
        byte, column = raw[err.start], err.start + 1
        return ConfigError(
            "paths",
            relpath,
            f"line {line} is not UTF-8 (byte 0x{byte:02x} at column {column}): convert the file, "
            "e.g. `iconv -f latin1 -t utf-8`",
        )
    except json.JSONDecodeError as err:
        return ConfigError(
            "paths", relpath, f"line {line} is not valid JSON ({err.msg} at column {err.colno})"
        )
    if not isinstance(record, dict):
        return ConfigError("paths", relpath, f"line {line} is a JSON {type(record).__name__}, not an object")
    return record


def _json_array(data: bytes, relpath: str) -> Iterator[Record]:
    try:
        records = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ConfigError("paths", relpath, f"is not a JSON array of records: {err}") from None
    for i, record in enumerate(records):
        yield (
            i,
            i + 1,
            record
            if isinstance(record, dict)
            else ConfigError("paths", relpath, f"item {i} is a JSON {type(record).__name__}, not an object"),
        )


@dataclass
class BadRecords:
    """The records a load skipped (``on_bad_record=skip``): how many, per field, and the first few."""

    count: int = 0
    """Records skipped."""
    by_field: dict[str, int] = field(default_factory=dict)
    """Skipped records per field at fault (``paths`` for a line that is no JSON object)."""
    examples: list[str] = field(default_factory=list)
    """The first :data:`MAX_EXAMPLES` skipped records: where (file and line) and why."""

    def add(self, err: ConfigError, where: str) -> None:
        self.count += 1
        self.by_field[err.field] = self.by_field.get(err.field, 0) + 1
        if len(self.examples) < MAX_EXAMPLES:
            self.examples.append(f"{where}: {err}")
        if self.count <= MAX_EXAMPLES:
            log.warning("skipped bad record %s: %s", where, err)

    def summary(self) -> str:
        return f" ({self.count} bad records skipped: {self.by_field})" if self.count else ""

    def __bool__(self) -> bool:
        return self.count > 0


MAX_EXAMPLES = 20


# ------------------------------------------------------------------------------------------ sources


@dataclass
class BuiltinCorpus:
    """The offline 3-domain corpus (see :mod:`datascale.data.builtin_corpus`)."""

    domains: list[str] = field(default_factory=lambda: list(builtin_corpus.DOMAINS))
    max_bytes_per_domain: int = 1_500_000
    max_doc_bytes: int = 8192

    def __post_init__(self) -> None:
        self.domains = [str(d) for d in _as_list(self.domains)]
        require(
            len(self.domains) > 0,
            "domains",
            self.domains,
            f"must list one or more of {list(builtin_corpus.AVAILABLE_DOMAINS)}",
        )
        for d in self.domains:
            require_choice("domains", d, builtin_corpus.AVAILABLE_DOMAINS)
        require(
            len(set(self.domains)) == len(self.domains), "domains", self.domains, "must not repeat a domain"
        )
        require_positive_int("max_bytes_per_domain", self.max_bytes_per_domain)
        require(
            isinstance(self.max_doc_bytes, int)
            and not isinstance(self.max_doc_bytes, bool)
            and self.max_doc_bytes >= 256,
            "max_doc_bytes",
            self.max_doc_bytes,
            "must be an integer >= 256",
        )
        require(
            self.max_bytes_per_domain >= self.max_doc_bytes,
            "max_bytes_per_domain",
            self.max_bytes_per_domain,
            f"must be >= max_doc_bytes ({self.max_doc_bytes}) so that every domain gets documents",
        )

    def provenance(self) -> dict[str, Any]:
        return {
            "source": "builtin",
            "builder_version": builtin_corpus.BUILDER_VERSION,
            "versions": builtin_corpus.package_versions(self.domains),
            **asdict(self),
        }

    def fingerprint(self) -> str:
        return canonical_json_hash({**self.provenance(), "stdlib": str(builtin_corpus.stdlib_dir())})

    def load(self, workdir: Path | None = None) -> datasets.Dataset:
        start = time.perf_counter()
        ds = documents_from_rows(
            builtin_corpus.iter_builtin_documents(
                self.domains, self.max_bytes_per_domain, self.max_doc_bytes
            ),
            workdir / "builtin.arrow" if workdir else None,
        )
        log.info(
            "built-in corpus: %d documents from %s in %.1f s",
            len(ds),
            self.domains,
            time.perf_counter() - start,
        )
        return ds


@dataclass
class LocalFiles:
    """Text / JSON(L) / Parquet files matched by globs, loaded with ``datasets.load_dataset``."""

    paths: list[str] = field(default_factory=list)
    format: str = "auto"
    text_field: str = "text"
    domain_field: str | None = None
    domain: str = "local"
    doc_id_field: str | None = None
    sample_by: str = "document"
    domains: list[str] | None = None
    """Keep only these domains (as the built-in source's ``domains``); None keeps every domain found."""
    on_bad_record: str = "error"
    """A malformed record (not JSON, missing or non-string field): ``error`` stops with a one-line error
    naming file, line and field; ``skip`` skips it and counts it in the corpus manifest (``bad_records``)."""

    def __post_init__(self) -> None:
        self.bad_records = BadRecords()
        self.paths = [str(p) for p in _as_list(self.paths)]
        if self.domains is not None:
            self.domains = [str(d) for d in _as_list(self.domains)]
            require(len(self.domains) > 0, "domains", self.domains, "must name a domain, or be null (all)")
        require(len(self.paths) > 0, "paths", self.paths, "must list one or more file globs")
        require_choice("format", self.format, FORMATS)
        require_choice("sample_by", self.sample_by, SAMPLE_BY)
        require_choice("on_bad_record", self.on_bad_record, ON_BAD_RECORD)
        require(
            isinstance(self.text_field, str) and bool(self.text_field),
            "text_field",
            self.text_field,
            "must be a non-empty column name",
        )
        require(
            isinstance(self.domain, str) and bool(self.domain),
            "domain",
            self.domain,
            "must be a non-empty string",
        )
        self.files()  # fail fast: globs that match nothing, unknown extensions

    def files(self) -> list[Path]:
        """Matched files, sorted and de-duplicated (a glob order never changes the corpus)."""
        found: set[Path] = set()
        for pattern in self.paths:
            found.update(
                Path(p).resolve()
                for p in glob.glob(os.path.expanduser(pattern), recursive=True)
                if Path(p).is_file()
            )
        if not found:
            raise ConfigError("paths", self.paths, "globs match no files")
        files = sorted(found)
        self.resolved_format(files)
        return files

    def resolved_format(self, files: Sequence[Path]) -> str:
        if self.format != "auto":
            return self.format
        formats = {_EXTENSIONS.get(p.suffix.lower()) for p in files}
        if None in formats or len(formats) != 1:
            raise ConfigError(
                "format",
                self.format,
                f"'auto' needs one known file type {sorted(_EXTENSIONS)}; "
                f"got files {[p.name for p in files][:5]}: set format explicitly",
            )
        return next(iter(formats))  # type: ignore[return-value]

    def provenance(self) -> dict[str, Any]:
        return {"source": "local_files", **asdict(self)}

    def fingerprint(self) -> str:
        files = self.files()
        base = Path(os.path.commonpath([p.parent for p in files]))
        listing = [(p.relative_to(base).as_posix(), p.stat().st_size, file_sha256(p)) for p in files]
        # the matched files (relative names, sizes, hashes) are the identity; how the globs were written is
        # not
        settings = {k: v for k, v in self.provenance().items() if k != "paths"}
        if self.on_bad_record == "error":  # the default reads what it read before: the key of before
            del settings["on_bad_record"]
        return canonical_json_hash({"conversion": CONVERSION_VERSION, **settings, "files": listing})

    def load(self, workdir: Path | None = None) -> datasets.Dataset:
        """Stream every record of every file into documents (with ``workdir``: an Arrow file there, memory-
        mapped); a malformed record stops the load or is skipped and counted (``on_bad_record``)."""
        files = self.files()
        fmt = self.resolved_format(files)
        base = Path(os.path.commonpath([p.parent for p in files]))
        for path in files:
            check_readable_text(path, binary_ok=fmt == "parquet", utf8=fmt == "text")
        self.bad_records = BadRecords()
        found: set[str] = set()
        rows = self._documents(files, [p.relative_to(base).as_posix() for p in files], fmt, found)
        ds = documents_from_rows(rows, workdir / "local_files.arrow" if workdir else None, validate=False)
        _check_unique_ids(ds, self.doc_id_field)
        validate_documents(ds)
        for d in self.domains or []:
            require_choice("domains", d, sorted(found))
        log.info("local files: %d documents from %d files%s", len(ds), len(files), self.bad_records.summary())
        return ds

    def _documents(
        self, files: Sequence[Path], rel: Sequence[str], fmt: str, found: set[str]
    ) -> Iterator[Row]:
        """Documents of every file in order; the domains seen go into ``found``."""
        text_field = "text" if fmt == "text" else self.text_field
        keep = None if self.domains is None else set(self.domains)
        for path, relpath in zip(files, rel, strict=True):
            key = _file_row_key(relpath, fmt == "text")
            for i, line, row in read_records(
                path, fmt, relpath, (text_field, self.domain_field, self.doc_id_field)
            ):
                where = "" if fmt == "text" else f" ({'row' if fmt == 'parquet' else 'line'} {line})"
                try:
                    if isinstance(row, ConfigError):
                        raise row
                    docs = _row_documents(i, row, source="local", name=key(i, row), text_field=text_field,
                                          domain_field=self.domain_field, domain=self.domain,
                                          doc_id_field=self.doc_id_field, sample_by=self.sample_by,
                                          extra_meta={"file": relpath}, where=where)  # fmt: skip
                except ConfigError as err:
                    self._bad_record(err, f"{relpath}{where}")
                    continue
                for doc in docs:
                    found.add(doc["domain"])
                    if keep is None or doc["domain"] in keep:
                        yield doc

    def _bad_record(self, err: ConfigError, where: str) -> None:
        if self.on_bad_record == "error":
            raise ConfigError(
                err.field, err.value, f"{err.allowed}; or set on_bad_record=skip to skip such records"
            )
        self.bad_records.add(err, where)


@dataclass
class HubDataset:
    """The first ``max_documents`` records of a Hugging Face Hub dataset (streamed: nothing else is
    downloaded).

    ``name`` may also be a local dataset directory, which is how this runs offline.
    """

    name: str = ""
    config: str | None = None
    split: str = "train"
    text_field: str = "text"
    domain_field: str | None = None
    domain: str | None = None
    max_documents: int = 10_000
    streaming: bool = True
    revision: str | None = None

    def __post_init__(self) -> None:
        require(
            isinstance(self.name, str) and bool(self.name),
            "name",
            self.name,
            "must be a Hub dataset id like 'wikitext' or a local dataset directory",
        )
        require_positive_int("max_documents", self.max_documents)
        require(
            isinstance(self.text_field, str) and bool(self.text_field),
            "text_field",
            self.text_field,
            "must be a non-empty column name",
        )

    @property
    def source_label(self) -> str:
        return f"hf:{self.name}"

    def provenance(self) -> dict[str, Any]:
        return {"source": "hf_hub", "datasets": datasets.__version__, **asdict(self)}

    def fingerprint(self) -> str:
        if self.revision is None:
            log.warning(
                "source.revision is not set: the Hub dataset %s may change under the same cache key",
                self.name,
            )
        return canonical_json_hash({"conversion": CONVERSION_VERSION, **self.provenance()})

    def load(self, workdir: Path | None = None) -> datasets.Dataset:
        try:
            data = datasets.load_dataset(
                self.name, self.config, split=self.split, streaming=self.streaming, revision=self.revision
            )
        except Exception as err:  # the Hub raises many types; one clear line is what the user needs
            offline = os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("HF_DATASETS_OFFLINE") == "1"
            hint = " (HF_HUB_OFFLINE/HF_DATASETS_OFFLINE is set)" if offline else ""
            raise RuntimeError(
                f"source.name={self.name!r}: could not load split {self.split!r}{hint}: {err}"
            ) from err
        rows = _to_documents(
            data,
            source=self.source_label,
            key=lambda i, row: f"{self.split}#{i}",
            text_field=self.text_field,
            domain_field=self.domain_field,
            domain=self.domain or self.name.rstrip("/").split("/")[-1],
            max_documents=self.max_documents,
        )
        log.info("hub dataset %s: %d documents", self.name, len(rows))
        return documents_from_rows(rows, workdir / "hub.arrow" if workdir else None)
