from __future__ import annotations

import subprocess
import sys

import pytest
from quality_fixtures import GIBBERISH, GOOD_PARAGRAPH, REPETITIVE, docs, with_quality

from datascale.config_errors import ConfigError
from datascale.data.documents import DocumentError, column
from datascale.data.quality.heuristic import HeuristicFilter, QualityThreshold
from datascale.data.transforms import PoolTransform


def test_good_paragraph_passes_every_datatrove_filter() -> None:
    out, report = HeuristicFilter().apply(docs(("good", GOOD_PARAGRAPH)))
    assert report.removed == {}
    assert column(out, "text") == [GOOD_PARAGRAPH]  # kept untouched (apply_line_edits is off)


def test_gopher_drops_gibberish_and_repetition_with_their_reasons() -> None:
    pool = docs(
        ("good", GOOD_PARAGRAPH), ("gibberish", GIBBERISH), ("repetitive", REPETITIVE), ("short", "Hi.")
    )
    out, report = HeuristicFilter(filters=["gopher_quality", "gopher_repetition"], name="gopher").apply(pool)
    assert report.removed == {
        "gibberish": "gopher_quality:gopher_enough_stop_words",
        "repetitive": "gopher_repetition:dup_line_frac",
        "short": "gopher_quality:gopher_short_doc",
    }
    assert column(out, "doc_id") == ["good"]
    assert (report.input_docs, report.output_docs) == (4, 1)
    assert report.counts["gopher_quality:gopher_enough_stop_words"] == 1


def test_first_rejecting_filter_names_the_reason() -> None:
    pool = docs(("gibberish", GIBBERISH))
    assert HeuristicFilter(filters=["c4", "gopher_quality"]).apply(pool)[1].removed == {
        "gibberish": "c4:too_few_sentences"
    }
    assert HeuristicFilter(filters=["fineweb"]).apply(pool)[1].removed == {
        "gibberish": "fineweb:line_punct_ratio"
    }


def test_options_reach_the_datatrove_constructor() -> None:
    short = " ".join(["The cat and the dog sat by the fire in the house."] * 2)
    pool = docs(("short", short))
    assert HeuristicFilter(filters=["gopher_quality"]).apply(pool)[1].removed == {
        "short": "gopher_quality:gopher_short_doc"
    }
    relaxed = HeuristicFilter(filters=["gopher_quality"], options={"gopher_quality": {"min_doc_words": 5}})
    assert relaxed.apply(pool)[1].removed == {}
    assert relaxed.fingerprint()["options"] == {"gopher_quality": {"min_doc_words": 5}}


def test_c4_line_edits_are_kept_only_when_asked() -> None:
    pool = docs(("good", GOOD_PARAGRAPH + "Click here for more\n"))
    kept, report = HeuristicFilter(filters=["c4"]).apply(pool)
    assert column(kept, "text") == [GOOD_PARAGRAPH + "Click here for more\n"] and report.marked == {}
    edited, report = HeuristicFilter(filters=["c4"], apply_line_edits=True).apply(pool)
    assert column(edited, "text") == [GOOD_PARAGRAPH.strip()]  # the line without terminal punctuation is gone
    assert report.marked == {"good": "c4:lines_removed"}


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"filters": ["gopher", "c4"]}, "filters"),
        ({"filters": []}, "filters"),
        ({"filters": ["c4", "c4"]}, "filters"),
        ({"filters": ["c4"], "options": {"fineweb": {}}}, "options"),
        ({"filters": ["c4"], "options": {"c4": {"min_sentences": 3}}}, "options.c4.min_sentences"),
    ],
)
def test_invalid_settings_name_the_field(kwargs: dict, field: str) -> None:
    with pytest.raises(ConfigError) as err:
        HeuristicFilter(**kwargs)
    assert err.value.field == field


def test_fingerprint_records_settings_and_library_versions() -> None:
    fp = HeuristicFilter(filters=["c4"]).fingerprint()
    assert fp["filters"] == ["c4"] and fp["version"] >= 1
    assert fp["libraries"]["datatrove"] and fp["libraries"]["spacy"]
    assert isinstance(HeuristicFilter(), PoolTransform)


def test_filters_run_without_importing_torch() -> None:
    """datascale.data never imports torch (thinc, under spacy, would import it if it could)."""
    code = (
        "import sys\n"
        "from datascale.data.documents import documents_from_rows, make_document\n"
        "from datascale.data.quality.heuristic import HeuristicFilter\n"
        "ds = documents_from_rows([make_document('a', 'The cat and the dog. ' * 30, 'web', 't')])\n"
        "HeuristicFilter().apply(ds)\n"
        "import spacy, thinc.compat\n"
        "print('torch' in sys.modules, thinc.compat.has_torch)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split()[-2:] == ["False", "False"]


# ------------------------------------------------------------------------------------------ QualityThreshold


def test_quality_threshold_keeps_values_at_or_above_and_drops_missing_with_reason() -> None:
    pool = with_quality([0.9, 0.7, 0.2, None])
    out, report = QualityThreshold(threshold=0.7).apply(pool)
    assert column(out, "doc_id") == ["d0", "d1"]  # 0.7 stored as float32 still passes 0.7
    assert report.removed == {"d2": "quality_below_threshold", "d3": "quality_missing"}
    assert report.stats["with_value"] == 3


def test_quality_threshold_missing_error_names_the_document() -> None:
    with pytest.raises(DocumentError, match="'d1'"):
        QualityThreshold(threshold=0.5, missing="error").apply(with_quality([0.9, None]))


def test_quality_threshold_reads_a_meta_field() -> None:
    pool = with_quality([None, None, None, None], meta=[{"score": 3}, {"score": 1.5}, {"score": "high"}, {}])
    out, report = QualityThreshold(threshold=2, meta_field="score").apply(pool)
    assert column(out, "doc_id") == ["d0"]
    assert report.removed == {
        "d1": "quality_below_threshold",
        "d2": "quality_missing",
        "d3": "quality_missing",
    }


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"threshold": "high"}, "threshold"),
        ({"threshold": float("nan")}, "threshold"),
        ({"missing": "keep"}, "missing"),
    ],
)
def test_quality_threshold_invalid_settings(kwargs: dict, field: str) -> None:
    with pytest.raises(ConfigError) as err:
        QualityThreshold(**kwargs)
    assert err.value.field == field
