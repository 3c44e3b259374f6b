"""The data report page: self-contained, escaped, verdict first, robust to empty parts."""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from aiflywheel.data.report_html import render_data_report_html

sys.path.insert(0, str(Path(__file__).parents[1]))
import report_checks as checks  # noqa: E402

LEAKED = "validation texts also appear in train"


def _report() -> dict[str, Any]:
    """A report shaped like the one the data stages write."""
    return {
        "feature": "review-sentiment",
        "task": "text_classification",
        "source": "demo:zh-reviews",
        "generated_at": "2026-11-25T01:02:03+00:00",
        "dataset_version": "3f2a9c1be4d5a6f70819283746556473829100aa",
        "seconds": 4.2,
        "input": {
            "format": "csv",
            "encoding": "gb18030",
            "notes": ["decoded as GB18030"],
            "malformed_lines": [
                [12, "invalid JSON: Expecting value"],
                [40, "3 fields, expected 2"],
            ],
            "malformed_total": 5,
        },
        "rows": {"read": 35124, "kept": 16890, "dropped": 18234},
        "drops": {
            "empty": 3,
            "too_short": 10,
            "too_long": 2,
            "missing_label": 0,
            "duplicate": 17000,
            "near_duplicate": 120,
            "conflicting_label": 94,
            "pii": 0,
            "malformed": 5,
        },
        "duplicates": {
            "exact": 17000,
            "near": 120,
            "conflicting_label_groups": 47,
            "conflict_policy": "drop",
            "examples": [
                {"kept": "服务很好，下次还来！", "dropped": "服务很好,下次还来!", "kind": "near"},
                {"kept": "服务很好，下次还来！", "dropped": "服务很好,下次还来!", "kind": "near"},
            ],
        },
        "cleaning": {
            "unicode_normalized": 120,
            "html_stripped": 30,
            "control_chars_removed": 4,
            "whitespace_collapsed": 900,
        },
        "pii": {
            "mode": "redact",
            "types": ["email", "phone"],
            "rows_with_pii": 12,
            "hits": {"email": 3, "phone": 9, "cn_id": 0},
        },
        "labels": {
            "counts": {"negative": 8890, "positive": 8000},
            "n_labels": 2,
            "imbalance_ratio": 1.11,
        },
        "lengths": {
            "unit": "chars",
            "min": 2,
            "p5": 10,
            "p25": 30,
            "p50": 60,
            "p75": 120,
            "p95": 300,
            "p99": 800,
            "max": 2000,
            "mean": 95.3,
            "histogram": {"edges": [0, 400, 800], "counts": [15000, 1890]},
        },
        "languages": {"zh": 16000, "en": 500, "mixed": 300, "other": 90},
        "splits": {
            "fractions": {"train": 0.8, "val": 0.1, "test": 0.1},
            "seed": 42,
            "stratified": True,
            "group_by": None,
            "parts": {
                "train": {
                    "rows": 13512,
                    "labels": {"positive": 6400, "negative": 7112},
                    "groups": None,
                },
                "val": {"rows": 1689, "labels": {"positive": 800, "negative": 889}, "groups": None},
                "test": {
                    "rows": 1689,
                    "labels": {"positive": 800, "negative": 889},
                    "groups": None,
                },
            },
            "leakage": {
                "test_in_train": 0,
                "val_in_train": 3,
                "test_in_val": 0,
                "groups_shared": 0,
            },
            "k_folds": None,
            "split_version": "99aa88bb77cc66dd55ee44ff3322110000",
        },
        "warnings": [
            {
                "level": "info",
                "code": "pii_found",
                "message": "PII found in 12 rows (3 email, 9 phone) and redacted",
            },
            {
                "level": "warning",
                "code": "few_examples",
                "message": "label 'refund' has 12 examples: expect low recall; collect ≥ 100",
            },
            {
                "level": "error",
                "code": "leakage",
                "message": f"3 {LEAKED}: remove them before training",
            },
        ],
    }


def _render(report: dict[str, Any]) -> tuple[str, ET.Element]:
    return checks.render(render_data_report_html, report)


def test_page_is_self_contained_and_offline() -> None:
    # charts: drops, labels, lengths, languages, splits
    checks.assert_self_contained(render_data_report_html(_report()), charts=5)


def test_verdict_comes_first_with_the_most_serious_warning_on_top() -> None:
    page, root = _render(_report())
    verdict = checks.section(root, "verdict")
    assert "verdict-error" in verdict.get("class", "")
    levels = [li.get("class") for li in verdict.iter("li")]
    assert levels == ["level-error", "level-warning", "level-info"]
    assert "1 error, 1 warning, 1 info" in checks.page_text(verdict)
    first_warning = page.index(LEAKED)
    assert first_warning < page.index('id="rows"') < page.index('id="splits"')
    assert (
        page.index('id="splits"') < page.index('id="notes"') < page.index("generated by aiflywheel")
    )


def test_header_and_numbers_are_shown() -> None:
    _, root = _render(_report())
    assert root.findtext(".//h1") == "review-sentiment"
    checks.assert_shows(
        root,
        (
            "demo:zh-reviews",
            "3f2a9c1be4d5",
            "2026-11-25 01:02:03 UTC",
            "35,124",
            "16,890",
            "18,234",
            "48.1%",
            "17,000",
            "exact duplicate",
            "1.11",
            "95.3",
            "13,512",
            "7,112",
            "80%",
            "phone number",
            "Chinese (zh)",
            "94.7%",
            "decoded as GB18030",
            "gb18030",
            "4.2 s",
        ),
    )
    # the hash is shortened (full one on hover)
    assert "3f2a9c1be4d5a6f7" not in checks.page_text(root)


def test_rows_over_max_chars_are_shown_per_label() -> None:
    report = _report()
    report["too_long"] = {
        "max_chars": 2000,
        "action": "truncate",
        "rows": 640,
        "of_rows": 17000,
        "share": 0.0376,
        "by_label": {
            "sports": {"rows": 600, "of_rows": 4000, "share": 0.15},
            "tech": {"rows": 40, "of_rows": 6000, "share": 0.0067},
            "world": {"rows": 0, "of_rows": 7000, "share": 0.0},
        },
    }
    report["cleaning"]["truncated"] = 640
    _, root = _render(report)
    section = checks.section(root, "too-long")
    checks.assert_shows(section, ("2,000", "truncate", "640", "3.8%", "sports", "15.0%", "4,000"))
    text = checks.page_text(section)
    assert "tech" in text and "world" not in text and "1 other label had no row" in text
    checks.assert_shows(checks.section(root, "rows"), ("cut to clean.max_chars",))
    del report["too_long"]
    assert 'id="too-long"' not in _render(report)[0]  # reports written before this section


def test_duplicate_examples_are_listed_once() -> None:
    _, root = _render(_report())
    assert checks.page_text(checks.section(root, "duplicates")).count("服务很好，下次还来！") == 1


def test_leakage_is_green_when_zero_and_red_when_not() -> None:
    _, root = _render(_report())
    splits = checks.section(root, "splits")
    cells = {
        "".join(row[0].itertext()): row[1]
        for row in splits.iter("tr")
        if len(row) == 2 and row[1].tag == "td"
    }
    assert "ok" in cells["test texts also in train"].get("class", "")
    assert "bad" in cells["validation texts also in train"].get("class", "")
    assert cells["validation texts also in train"].text == "3"

    clean = _report()
    clean["splits"]["leakage"] = dict.fromkeys(clean["splits"]["leakage"], 0)
    _, root = _render(clean)
    assert "No leakage" in checks.page_text(checks.section(root, "splits"))


def test_malformed_lines_are_listed_with_line_numbers() -> None:
    _, root = _render(_report())
    notes = checks.page_text(checks.section(root, "notes"))
    assert "12 invalid JSON: Expecting value" in notes
    assert "40 3 fields, expected 2" in notes
    assert "3 more malformed lines not listed" in notes


def test_text_from_the_data_is_escaped() -> None:
    report = _report()
    nasty = '<script>alert("x")</script>'
    report["feature"] = checks.BOLD_FEATURE
    report["labels"]["counts"] = {nasty: 10, "退款": 5, 'say "hi" & go': 3}
    report["splits"]["parts"]["train"]["labels"] = {nasty: 8, "退款": 4}
    report["duplicates"]["examples"] = [{"kept": nasty, "dropped": "<img src=x>", "kind": "near"}]
    report["warnings"] = [{"level": "error", "code": "x", "message": f"label {nasty} is odd"}]
    page, root = _render(report)
    checks.assert_escaped(page, root, shown=(nasty, "退款", 'say "hi" & go'))
    assert "<img" not in page


def test_no_warnings_reads_no_problems_found() -> None:
    report = _report()
    report["warnings"] = []
    _, root = _render(report)
    verdict = checks.section(root, "verdict")
    assert "verdict-ok" in verdict.get("class", "")
    assert "No problems found" in checks.page_text(verdict)


def test_many_labels_show_the_top_30_and_say_how_many_more() -> None:
    report = _report()
    report["labels"]["counts"] = {f"类别{i:03d}": 1000 - i for i in range(200)}
    report["labels"]["n_labels"] = 200
    report["splits"]["parts"]["train"]["labels"] = {f"类别{i:03d}": 5 for i in range(200)}
    _, root = _render(report)
    labels = checks.section(root, "labels")
    chart = labels.find(".//svg")
    assert chart is not None
    shown = {t for t in (el.text for el in chart.iter("text")) if t and t.startswith("类别")}
    assert len(shown) == 30
    assert "top 30 of 200" in checks.page_text(labels)
    assert "170 more labels" in checks.page_text(labels)
    header = [th.text for th in checks.section(root, "splits").iter("th")]
    assert "other labels" in header


def test_unlabeled_data_renders() -> None:
    report = _report()
    report["task"] = "assistant"
    report["labels"] = {"counts": {}, "n_labels": 0, "imbalance_ratio": None}
    for part in report["splits"]["parts"].values():
        part["labels"] = {}
    _, root = _render(report)
    assert "unlabeled" in checks.page_text(checks.section(root, "labels"))
    splits = checks.section(root, "splits")
    assert splits.find(".//svg") is None
    assert "13,512" in checks.page_text(splits)


def test_zero_rows_render() -> None:
    report = _report()
    report["rows"] = {"read": 0, "kept": 0, "dropped": 0}
    report["drops"] = dict.fromkeys(report["drops"], 0)
    report["duplicates"] = {
        "exact": 0,
        "near": 0,
        "conflicting_label_groups": 0,
        "conflict_policy": "drop",
        "examples": [],
    }
    report["labels"] = {"counts": {}, "n_labels": 0, "imbalance_ratio": None}
    report["lengths"] = {}
    report["languages"] = {"zh": 0, "en": 0, "mixed": 0, "other": 0}
    report["pii"]["rows_with_pii"] = 0
    report["pii"]["hits"] = {"email": 0, "phone": 0}
    report["input"] = {
        "format": "jsonl",
        "encoding": "utf-8",
        "notes": [],
        "malformed_lines": [],
        "malformed_total": 0,
    }
    report["splits"]["parts"] = {
        name: {"rows": 0, "labels": {}, "groups": None} for name in ("train", "val", "test")
    }
    report["splits"]["leakage"] = dict.fromkeys(report["splits"]["leakage"], 0)
    report["warnings"] = []
    _, root = _render(report)
    checks.assert_shows(
        root,
        (
            "No rows were dropped",
            "No rows, so no lengths",
            "No rows, so no languages",
            "No problems found",
        ),
    )


def test_missing_and_none_sections_render() -> None:
    report = _report()
    for key in (
        "input",
        "rows",
        "drops",
        "duplicates",
        "cleaning",
        "pii",
        "labels",
        "lengths",
        "too_long",
    ):
        report[key] = None
    report["languages"] = {}
    report["splits"] = None
    report["warnings"] = None
    report["dataset_version"] = None
    report["generated_at"] = "not a date"
    _, root = _render(report)
    checks.assert_shows(root, ("The data has not been split", "not a date"))
    assert _render({})[1].findtext(".//h1") == "unnamed feature"


def test_groups_are_shown_when_the_split_is_grouped() -> None:
    report = _report()
    report["splits"]["group_by"] = "user_id"
    for n, part in enumerate(report["splits"]["parts"].values()):
        part["groups"] = 100 * (n + 1)
    _, root = _render(report)
    splits = checks.section(root, "splits")
    assert "grouped by user_id" in checks.page_text(splits)
    assert "groups" in [th.text for th in splits.iter("th")]


@pytest.mark.parametrize("level", ["error", "warning", "info", "surprise"])
def test_each_warning_level_renders(level: str) -> None:
    report = _report()
    report["warnings"] = [{"level": level, "code": "c", "message": "a sentence to act on"}]
    _, root = _render(report)
    verdict = checks.section(root, "verdict")
    expected = level if level != "surprise" else "info"
    assert f"verdict-{expected}" in verdict.get("class", "")
    assert "a sentence to act on" in checks.page_text(verdict)
