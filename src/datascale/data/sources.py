"""Document sources (Hydra ``source`` group): each turns some text collection into a DOCUMENT_FEATURES
Dataset.

Every source has ``load() -> datasets.Dataset`` and a cheap ``fingerprint() -> str``: the identity of what
``load()`` would return, so that the prepared corpus can be cached without loading anything. Local files and
Hub datasets share one conversion path (:func:`_to_documents`), so the Hub code is tested through local files.
"""

from __future__ import annotations

import glob
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import datasets

from datascale.config_errors import ConfigError, require, require_choice, require_positive_int
from datascale.data import builtin_corpus
from datascale.data.documents import documents_from_rows, make_document
from datascale.storage import canonical_json_hash, file_sha256

log = logging.getLogger("datascale.data")

FORMATS = ("auto", "text", "json", "parquet")
SAMPLE_BY = ("document", "paragraph")
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

    def load(self) -> datasets.Dataset: ...

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
    text_field: str = "text",
    domain_field: str | None = None,
    domain: str | None = None,
    doc_id_field: str | None = None,
    sample_by: str = "document",
    max_documents: int | None = None,
    extra_meta: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Map raw records (a Dataset, an IterableDataset or any iterable of dicts) to document rows.

    ``key(i, row)`` names row ``i`` when there is no ``doc_id_field``; doc ids are ``<source>:<key>`` (plus
    ``#p<k>`` per paragraph when ``sample_by="paragraph"``). Empty texts are skipped; the other columns of a
    row go into ``meta``. Raises ConfigError naming the field when a record lacks the text/domain/id field.
    """
    used = {text_field, domain_field, doc_id_field}
    out: list[dict[str, Any]] = []
    for i, row in enumerate(rows):
        if max_documents is not None and len(out) >= max_documents:
            break
        if text_field not in row:
            raise ConfigError(
                "text_field",
                text_field,
                f"must be a field of every record; record {key(i, row)} has fields {sorted(row)}",
            )
        text = row[text_field]
        if text is None:  # a JSON record without the field: datasets fills it with None
            raise ConfigError(
                "text_field",
                text_field,
                f"must be set in every record; record {key(i, row)} has none (fields {sorted(row)})",
            )
        if not isinstance(text, str):
            raise ConfigError(
                "text_field",
                text_field,
                f"must name a string field; record {key(i, row)} has {type(text).__name__}",
            )
        if domain_field is not None:
            row_domain = row.get(domain_field)
            if not isinstance(row_domain, str) or not row_domain:
                raise ConfigError(
                    "domain_field",
                    domain_field,
                    f"must name a non-empty string field; record {key(i, row)} has {row_domain!r}",
                )
        else:
            row_domain = domain
        if doc_id_field is not None:
            if row.get(doc_id_field) in (None, ""):
                raise ConfigError(
                    "doc_id_field",
                    doc_id_field,
                    f"must be set in every record; record {key(i, row)} has none",
                )
            base = f"{source}:{row[doc_id_field]}"
        else:
            base = f"{source}:{key(i, row)}"
        meta = {**(extra_meta or {}), **{k: v for k, v in row.items() if k not in used}}
        pieces = [text] if sample_by == "document" else _paragraphs(text)
        for k, piece in enumerate(pieces):
            if not piece.strip():
                continue
            doc_id = base if sample_by == "document" else f"{base}#p{k}"
            out.append(make_document(doc_id, piece, str(row_domain), source, meta=meta))
    return out[:max_documents] if max_documents is not None else out


def check_readable_text(path: Path, binary_ok: bool = False) -> None:
    """A one-line ConfigError for a file that cannot be a corpus: empty, unreadable, binary or not UTF-8."""
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ConfigError("paths", str(path), f"file cannot be read: {err.strerror}") from None
    if not data:
        raise ConfigError("paths", str(path), "file is empty")
    if binary_ok:
        return
    if b"\x00" in data[:65536]:
        raise ConfigError("paths", str(path), "file is binary (NUL bytes), not text: set format or drop it")
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(
            "paths",
            str(path),
            f"file is not UTF-8 (byte 0x{data[err.start]:02x} at offset {err.start}): convert it, "
            "e.g. `iconv -f latin1 -t utf-8`",
        ) from None


def _file_row_key(relpath: str, one_per_file: bool) -> Callable[[int, Mapping[str, Any]], str]:
    """Doc-id key of row ``i`` of a local file: the file itself, or ``<file>#<i>``."""

    def key(i: int, row: Mapping[str, Any]) -> str:
        return relpath if one_per_file else f"{relpath}#{i}"

    return key


def _check_unique_ids(rows: Sequence[Mapping[str, Any]], doc_id_field: str | None) -> None:
    """Generated ids are unique by construction; ids taken from a column must be checked."""
    if doc_id_field is None:
        return
    seen: set[str] = set()
    for row in rows:
        if row["doc_id"] in seen:
            raise ConfigError(
                "doc_id_field", doc_id_field, f"must give unique document ids; {row['doc_id']!r} repeats"
            )
        seen.add(row["doc_id"])


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

    def load(self) -> datasets.Dataset:
        start = time.perf_counter()
        ds = documents_from_rows(
            builtin_corpus.iter_builtin_documents(self.domains, self.max_bytes_per_domain, self.max_doc_bytes)
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

    def __post_init__(self) -> None:
        self.paths = [str(p) for p in _as_list(self.paths)]
        if self.domains is not None:
            self.domains = [str(d) for d in _as_list(self.domains)]
            require(len(self.domains) > 0, "domains", self.domains, "must name a domain, or be null (all)")
        require(len(self.paths) > 0, "paths", self.paths, "must list one or more file globs")
        require_choice("format", self.format, FORMATS)
        require_choice("sample_by", self.sample_by, SAMPLE_BY)
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
        return canonical_json_hash({"conversion": CONVERSION_VERSION, **settings, "files": listing})

    def load(self) -> datasets.Dataset:
        files = self.files()
        fmt = self.resolved_format(files)
        base = Path(os.path.commonpath([p.parent for p in files]))
        rel = [p.relative_to(base).as_posix() for p in files]
        for path in files:
            check_readable_text(path, binary_ok=fmt == "parquet")
        # One split per file: a single load_dataset call that still tells us which file each record came from.
        names = {f"f{i:06d}": [str(p)] for i, p in enumerate(files)}
        kwargs: dict[str, Any] = {"sample_by": "document"} if fmt == "text" else {}
        # The Arrow copy load_dataset makes is only needed until the rows are converted (prepare_data keeps
        # its own copy of the documents), so it goes to a temporary dir instead of growing the shared HF
        # cache.
        with tempfile.TemporaryDirectory(prefix="datascale-local-") as tmp:
            parts = datasets.load_dataset(fmt, data_files=names, cache_dir=tmp, **kwargs)
            rows = self._convert(parts, fmt, names, rel)
        _check_unique_ids(rows, self.doc_id_field)
        rows = self._keep_domains(rows)
        log.info("local files: %d documents from %d files", len(rows), len(files))
        return documents_from_rows(rows)

    def _keep_domains(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if self.domains is None:
            return rows
        found = sorted({str(r["domain"]) for r in rows})
        for d in self.domains:
            require_choice("domains", d, found)
        keep = set(self.domains)
        return [r for r in rows if r["domain"] in keep]

    def _convert(
        self, parts: datasets.DatasetDict, fmt: str, names: Mapping[str, Any], rel: Sequence[str]
    ) -> list[dict[str, Any]]:
        text_field = "text" if fmt == "text" else self.text_field
        rows: list[dict[str, Any]] = []
        for name, relpath in zip(names, rel, strict=True):
            part = parts[name]
            for col, what in (
                (text_field, "text_field"),
                (self.domain_field, "domain_field"),
                (self.doc_id_field, "doc_id_field"),
            ):
                if col is not None and len(part) and col not in part.column_names:
                    raise ConfigError(
                        what, col, f"must be a column of {relpath}; its columns are {part.column_names}"
                    )
            one_per_file = fmt == "text"
            rows.extend(
                _to_documents(
                    part.to_list(),
                    source="local",
                    text_field=text_field,
                    domain_field=self.domain_field,
                    domain=self.domain,
                    doc_id_field=self.doc_id_field,
                    sample_by=self.sample_by,
                    key=_file_row_key(relpath, one_per_file),
                    extra_meta={"file": relpath},
                )
            )
        return rows


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

    def load(self) -> datasets.Dataset:
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
        return documents_from_rows(rows)
