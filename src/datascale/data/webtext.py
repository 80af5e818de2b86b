"""The ``web`` built-in domain: package READMEs from the installed distributions' METADATA, as web-like text.

A long description on PyPI is the closest thing to crawled web text already on this machine: real prose mixed
with badges, links, HTML, tables, install boilerplate and licence notices, in Markdown or reStructuredText, by
many authors. That heterogeneity is what quality filters and classifiers are meant to sort out.

The text depends on what is installed in this environment (it changes when a dependency is added), so
:func:`web_inputs_fingerprint` hashes every (name, version, description) that goes in; the corpus manifest
records it. Only this environment's install dirs are read (``sysconfig`` purelib/platlib), never the working
directory, so the set does not depend on the cwd. The project's own distribution is left out (its README
is our text, and changes with the repository).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import re
import sysconfig
from collections.abc import Iterator
from dataclasses import dataclass

from datascale.data.chunking import BLANK_LINE, document_chunks
from datascale.data.documents import Row, make_document

WEB_DOMAIN = "web"
WEB_SOURCE = "builtin/pypi-metadata"
#: Bump when the extraction rules change: it is part of the corpus fingerprint (when ``web`` is requested).
WEBTEXT_VERSION = 1
EXCLUDED_DISTRIBUTIONS = frozenset({"datascale"})
MARKDOWN_HEADING = re.compile(r"\n(?=#{1,6}\s)")
RST_HEADING = re.compile(r"\n(?=[^\n]+\n[=\-~^*#]{3,}[ \t]*\n)")  # a title line underlined by =, -, ~ ...
_FOLDED_DESCRIPTION = re.compile(r"\n {8}\|?|\n\t\|?")  # old-style `Description:` header continuation lines


@dataclass(frozen=True)
class PackageDescription:
    """One installed distribution's long description."""

    name: str  # canonical (PEP 503) name
    version: str
    text: str
    content_type: str


def canonical_name(name: str) -> str:
    """PEP 503 normalisation: ``Foo_Bar.baz`` and ``foo-bar-baz`` are the same distribution."""
    return re.sub(r"[-_.]+", "-", name).lower()


def install_dirs() -> list[str]:
    """This environment's package install dirs (a venv's site-packages), sorted, without duplicates."""
    paths = sysconfig.get_paths()
    return sorted({paths["purelib"], paths["platlib"]})


def _field(metadata: importlib.metadata.PackageMetadata, key: str) -> str:
    """One metadata header ("" when absent)."""
    values = metadata.get_all(key) or []
    return str(values[0]) if values else ""


def _description(metadata: importlib.metadata.PackageMetadata) -> str:
    """The long description: the message body (Metadata >= 2.1) or the folded ``Description`` header."""
    body = metadata.get_payload()  # type: ignore[attr-defined]
    if isinstance(body, str) and body.strip():
        return body
    header = _field(metadata, "Description")
    text = _FOLDED_DESCRIPTION.sub("\n", header)
    return "" if text.strip() == "UNKNOWN" else text


def installed_descriptions() -> list[PackageDescription]:
    """Every installed distribution with a non-empty long description, one per canonical name, sorted by
    name (a name installed twice keeps its lowest version string: stable, independent of dir order)."""
    found: dict[str, PackageDescription] = {}
    for dist in importlib.metadata.distributions(path=install_dirs()):
        metadata = dist.metadata
        raw_name = _field(metadata, "Name") if metadata is not None else ""
        if not raw_name:
            continue
        name = canonical_name(raw_name)
        if name in EXCLUDED_DISTRIBUTIONS:
            continue
        text = _description(metadata).replace("\r\n", "\n")
        if not text.strip():
            continue
        desc = PackageDescription(
            name,
            _field(metadata, "Version"),
            text,
            _field(metadata, "Description-Content-Type"),
        )
        if name not in found or desc.version < found[name].version:
            found[name] = desc
    return [found[name] for name in sorted(found)]


def spread_order(descriptions: list[PackageDescription]) -> list[PackageDescription]:
    """Ordered by a hash of the name, like the other built-in domains: deterministic, and a byte cap keeps a
    spread of the alphabet instead of the packages that start with ``a``."""
    return sorted(descriptions, key=lambda d: hashlib.sha256(d.name.encode("utf-8")).hexdigest())


def web_inputs_fingerprint() -> dict[str, str]:
    """What the ``web`` text depends on: sha256 over (name, version, sha256 of description) of every input."""
    h = hashlib.sha256()
    descriptions = installed_descriptions()
    for desc in descriptions:
        text_hash = hashlib.sha256(desc.text.encode("utf-8")).hexdigest()
        h.update(f"{desc.name}\0{desc.version}\0{text_hash}\n".encode())
    return {
        "webtext_builder": str(WEBTEXT_VERSION),
        "pypi_metadata_distributions": str(len(descriptions)),
        "pypi_metadata_sha256": h.hexdigest(),
    }


def iter_web(max_doc_bytes: int) -> Iterator[Row]:
    """Document rows ``pypi:<name>#<k>``: each description cut at headings, then blank lines."""
    for desc in spread_order(installed_descriptions()):
        for k, chunk in enumerate(
            document_chunks(desc.text, max_doc_bytes, [MARKDOWN_HEADING, RST_HEADING, BLANK_LINE])
        ):
            yield make_document(
                f"pypi:{desc.name}#{k}",
                chunk,
                WEB_DOMAIN,
                WEB_SOURCE,
                meta={
                    "package": desc.name,
                    "version": desc.version,
                    "chunk": k,
                    "content_type": desc.content_type,
                },
            )
