"""The built-in demo sources, read from their installed packages (marked: packaged)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pytest

from aiflywheel.data.check import check_data
from aiflywheel.recipe import load_recipe, parse_recipe

pytestmark = pytest.mark.packaged


def _template(name: str):
    return load_recipe(Path(str(resources.files("aiflywheel.recipes") / f"{name}.yaml")))


def _whole_corpus(name: str):
    """The template without its demo-sized ``data.sample``."""
    recipe = _template(name)
    obj = recipe.model_dump(mode="json")
    obj["data"]["sample"] = None
    return parse_recipe(obj, base_dir=recipe.base_dir)


def test_zh_reviews_data_check(tmp_path: Path) -> None:
    result = check_data(_whole_corpus("zh-reviews"), tmp_path / "run")
    report = result.report
    assert report["rows"]["read"] == 16548 + 18576
    assert 16_000 < report["rows"]["kept"] < 18_000
    assert set(report["labels"]["counts"]) == {"positive", "negative"}
    # The corpus has 47 texts listed as both positive and negative.
    assert report["duplicates"]["conflicting_label_groups"] == 47
    assert report["languages"]["zh"] / report["rows"]["kept"] > 0.95
    assert report["splits"]["leakage"] == {
        "test_in_train": 0,
        "val_in_train": 0,
        "test_in_val": 0,
        "groups_shared": 0,
    }
    assert len((tmp_path / "run" / "splits" / "folds.json").read_text()) > 0
    parts = report["splits"]["parts"]
    assert abs(parts["test"]["rows"] / report["rows"]["kept"] - 0.1) < 0.01


def test_en_reviews_groups_by_movie(tmp_path: Path) -> None:
    result = check_data(_template("en-reviews"), tmp_path / "run")
    report = result.report
    assert report["rows"]["read"] == 12_808
    assert report["languages"]["en"] / report["rows"]["kept"] > 0.95
    assert report["splits"]["group_by"] == "movie"
    assert report["splits"]["leakage"]["groups_shared"] == 0
    assert all(report["splits"]["parts"][name]["groups"] > 10 for name in ("train", "val", "test"))
