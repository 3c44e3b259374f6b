"""The data report counts rows longer than clean.max_chars per label and warns about them."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich.console import Console

from aiflywheel.data.check import check_data
from aiflywheel.data.summary import print_data_summary
from aiflywheel.recipe import parse_recipe


def _check(tmp_path: Path, too_long: str) -> dict:
    rows = [f"short news item number {i},{'ab'[i % 2]}" for i in range(20)]
    rows += [f"story {i} {'is long ' * 10},a" for i in range(4)]  # 4 of 14 'a' rows
    (tmp_path / "d.csv").write_text("text,label\n" + "\n".join(rows) + "\n", encoding="utf-8")
    recipe = parse_recipe(
        {
            "feature": "news",
            "data": {"source": "d.csv"},
            "clean": {"max_chars": 60, "too_long": too_long, "duplicates": "exact"},
            "split": {"train": 0.5, "val": 0.25, "test": 0.25},
        },
        base_dir=tmp_path,
    )
    return check_data(recipe, tmp_path / "out").report


@pytest.mark.parametrize("too_long", ["truncate", "drop"])
def test_too_long_rows_are_counted_per_label_and_warned(tmp_path: Path, too_long: str) -> None:
    report = _check(tmp_path, too_long)
    stats = report["too_long"]
    assert (stats["action"], stats["max_chars"], stats["rows"], stats["of_rows"]) == (
        too_long,
        60,
        4,
        24,
    )
    assert stats["share"] == round(4 / 24, 4)
    assert stats["by_label"] == {
        "a": {"rows": 4, "of_rows": 14, "share": round(4 / 14, 4)},
        "b": {"rows": 0, "of_rows": 10, "share": 0.0},
    }
    if too_long == "truncate":
        assert report["rows"]["kept"] == 24 and report["cleaning"]["truncated"] == 4
        assert report["lengths"]["max"] <= 60
    else:
        assert report["rows"]["kept"] == 20 and report["drops"]["too_long"] == 4
    (warning,) = [w for w in report["warnings"] if w["code"].startswith("too_long")]
    assert warning["code"] == f"too_long_{too_long}" and warning["level"] == "warning"
    assert (
        "4 rows (16.7%) were longer than clean.max_chars (60 characters) and were "
        in warning["message"]
    )
    assert "'a' 4 (28.6% of its rows)" in warning["message"]

    page = (tmp_path / "out" / "data_report.html").read_text(encoding="utf-8")
    assert 'id="too-long"' in page and "28.6%" in page

    out = io.StringIO()
    print_data_summary(report, Console(file=out, width=200))
    assert f"longer than 60 chars ({too_long}): 4 rows (16.7%): a 4 (28.6%)" in out.getvalue()


def test_no_long_rows_no_warning(tmp_path: Path) -> None:
    (tmp_path / "d.csv").write_text(
        "text,label\n" + "\n".join(f"item {i},{'ab'[i % 2]}" for i in range(20)) + "\n"
    )
    recipe = parse_recipe(
        {"feature": "news", "data": {"source": "d.csv"}, "split": {"stratify": False}},
        base_dir=tmp_path,
    )
    report = check_data(recipe, tmp_path / "out").report
    assert report["too_long"]["rows"] == 0
    assert not [w for w in report["warnings"] if w["code"].startswith("too_long")]
    page = (tmp_path / "out" / "data_report.html").read_text(encoding="utf-8")
    assert "No row was longer." in page
