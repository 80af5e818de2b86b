from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import json
import re

import pytest

from datascale.data import builtin_corpus as bc
from datascale.data import webtext
from datascale.data.documents import documents_from_rows
from datascale.data.sources import BuiltinCorpus

MARKUP = re.compile(r"https?://|\]\(|<a |<img |\.\. image::|\[!\[|`{2}|^#{1,6} ", re.MULTILINE)


@pytest.fixture(scope="module")
def web_rows() -> list[dict]:
    return list(bc.iter_builtin_documents(["web"], 200_000, 3000))


def test_default_domains_are_unchanged_and_web_is_available() -> None:
    assert bc.DOMAINS == ("literature", "code", "science")
    assert BuiltinCorpus().domains == ["literature", "code", "science"]
    assert bc.AVAILABLE_DOMAINS == ("literature", "code", "science", "web")
    assert set(bc.DOMAIN_BUILDERS) == set(bc.AVAILABLE_DOMAINS)


def test_web_documents_are_package_readmes_with_markup(web_rows: list[dict]) -> None:
    ds = documents_from_rows(web_rows)  # schema and unique ids validated
    assert len(ds) >= 20
    assert {r["domain"] for r in web_rows} == {"web"} and {r["source"] for r in web_rows} == {
        "builtin/pypi-metadata"
    }
    with_markup = [r for r in web_rows if MARKUP.search(r["text"])]
    assert len(with_markup) >= len(web_rows) // 2  # links, badges, headings, literal markup: noisy text
    for row in web_rows:
        meta = json.loads(row["meta"])
        assert row["doc_id"] == f"pypi:{meta['package']}#{meta['chunk']}"
        assert meta["version"] == importlib.metadata.version(meta["package"])
        assert meta["package"] != "datascale"


def test_web_domain_is_capped_and_chunked(web_rows: list[dict]) -> None:
    sizes = [len(r["text"].encode("utf-8")) for r in web_rows]
    assert sum(sizes) <= 200_000 and sum(sizes) > 150_000
    assert max(sizes) <= 3000


def test_web_order_is_stable_and_spread_over_the_alphabet(web_rows: list[dict]) -> None:
    again = list(bc.iter_builtin_documents(["web"], 200_000, 3000))
    assert [(r["doc_id"], r["text"]) for r in again] == [(r["doc_id"], r["text"]) for r in web_rows]
    packages = list(dict.fromkeys(json.loads(r["meta"])["package"] for r in web_rows))
    digests = [hashlib.sha256(p.encode()).hexdigest() for p in packages]
    assert digests == sorted(digests)  # hash-of-name order, like the other built-in domains
    assert len({p[0] for p in packages}) >= 5  # so a cap keeps a spread, not the packages starting with "a"


def test_installed_descriptions_are_one_per_canonical_name_sorted() -> None:
    descriptions = webtext.installed_descriptions()
    names = [d.name for d in descriptions]
    assert names == sorted(set(names))
    assert all(n == webtext.canonical_name(n) for n in names)
    assert webtext.canonical_name("Foo_Bar.baz") == "foo-bar-baz"


def test_fingerprint_tracks_the_inputs_and_only_when_web_is_requested(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    default = bc.package_versions()
    # existing corpora keep their fingerprints: no web keys unless web is requested
    assert not any(k.startswith(("pypi_metadata", "webtext")) for k in default)
    assert bc.package_versions(list(bc.DOMAINS)) == default
    with_web = bc.package_versions(["literature", "web"])
    assert {k: v for k, v in with_web.items() if k in default} == default
    first = webtext.web_inputs_fingerprint()
    assert (
        with_web["pypi_metadata_sha256"]
        == first["pypi_metadata_sha256"]
        == webtext.web_inputs_fingerprint()["pypi_metadata_sha256"]
    )
    descriptions = webtext.installed_descriptions()
    edited = [dataclasses.replace(descriptions[0], text=descriptions[0].text + "!"), *descriptions[1:]]
    monkeypatch.setattr(webtext, "installed_descriptions", lambda: edited)
    assert webtext.web_inputs_fingerprint()["pypi_metadata_sha256"] != first["pypi_metadata_sha256"]
    bumped = [dataclasses.replace(descriptions[0], version="999"), *descriptions[1:]]
    monkeypatch.setattr(webtext, "installed_descriptions", lambda: bumped)
    assert webtext.web_inputs_fingerprint()["pypi_metadata_sha256"] != first["pypi_metadata_sha256"]


def test_old_style_description_header_is_unfolded() -> None:
    class Meta(dict):
        def get_payload(self) -> str:
            return ""

        def get_all(self, key: str) -> list[str] | None:
            return [self[key]] if key in self else None

    meta = Meta({"Description": "Title\n        =====\n        \n        Body text."})
    assert webtext._description(meta) == "Title\n=====\n\nBody text."  # type: ignore[arg-type]
    assert webtext._description(Meta({"Description": "UNKNOWN"})) == ""  # type: ignore[arg-type]
