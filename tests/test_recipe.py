from __future__ import annotations

from importlib import resources
from pathlib import Path

import pytest
import yaml

from aiflywheel.errors import RecipeError
from aiflywheel.recipe import Recipe, load_recipe, parse_recipe, recipe_json_schema

MINIMAL = {"feature": "tickets", "data": {"source": "tickets.csv"}}


def _with(**changes) -> dict:
    obj = {"feature": "tickets", "data": {"source": "tickets.csv"}}
    for dotted, value in changes.items():
        node = obj
        *parents, last = dotted.split("__")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return obj


def test_minimal_recipe_fills_defaults() -> None:
    recipe = parse_recipe(MINIMAL)
    assert recipe.task == "text_classification"
    assert recipe.split.train == 0.8 and recipe.pii.mode == "redact"
    assert recipe.data.columns.text == "text"


def test_unknown_key_is_named_with_allowed_keys() -> None:
    with pytest.raises(
        RecipeError, match=r"unknown key 'data.colums' \(allowed here: source, format"
    ):
        parse_recipe({"feature": "x", "data": {"source": "a.csv", "colums": {}}})


def test_unknown_top_level_key() -> None:
    with pytest.raises(RecipeError, match="unknown key 'modle'"):
        parse_recipe({**MINIMAL, "modle": {}})


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"split__test": 1.5}, r"split.test: Input should be less than 1, got 1.5"),
        ({"split__test": 0.3}, r"must sum to 1, got 0.8\+0.1\+0.3=1.2"),
        ({"feature": "Bad Name"}, r"feature: String should match pattern .* got 'Bad Name'"),
        (
            {"pii__mode": "shred"},
            r"pii.mode: Input should be 'redact', 'mask', 'drop_row' or 'off'",
        ),
        ({"pii__types": ["email", "ssn"]}, r"pii.types.1: .* got 'ssn'"),
        ({"split__group_by": "user"}, r"split.group_by 'user' must be one of data.columns.meta"),
        ({"clean__max_chars": 0}, r"clean.max_chars: Input should be greater than 0, got 0"),
        (
            {"clean__too_long": "cut"},
            r"clean.too_long: Input should be 'truncate' or 'drop', got 'cut'",
        ),
        (
            {"data__columns": {"text": []}},
            r"data.columns.text: list at least one column, e.g. \[title, content\], got \[\]",
        ),
        (
            {"data__columns": {"text": ["title", "title"]}},
            r"data.columns.text: lists 'title' more than once",
        ),
        (
            {"data__columns": {"text": 5}},
            r"data.columns.text: must be a column name or a list of column names, got 5",
        ),
        (
            {"data__columns": {"text": ["title", "label"]}},
            r"data.columns: label column 'label' is also a text column",
        ),
        ({"split__k_folds": 1}, r"split.k_folds: .* got 1"),
    ],
)
def test_bad_values_name_key_and_value(changes: dict, message: str) -> None:
    with pytest.raises(RecipeError, match=message):
        parse_recipe(_with(**changes))


def test_text_may_name_several_columns() -> None:
    columns = parse_recipe(_with(data__columns={"text": ["title", "content"]})).data.columns
    assert columns.text_columns == ["title", "content"] and columns.text_separator == "\n"
    assert parse_recipe(MINIMAL).data.columns.text_columns == ["text"]
    schema = recipe_json_schema()["$defs"]["ColumnMapping"]["properties"]
    assert {"type": "array", "items": {"type": "string"}} in schema["text"]["anyOf"]
    assert schema["text_separator"]["description"]


def test_missing_required_key() -> None:
    with pytest.raises(RecipeError, match="missing required key 'data'"):
        parse_recipe({"feature": "x"})


def test_load_recipe_resolves_relative_paths(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text("feature: x\ndata:\n  source: data.csv\n", encoding="utf-8")
    recipe = load_recipe(path)
    assert recipe.base_dir == tmp_path.resolve()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("feature: x\ndata: [unclosed\n", r"invalid YAML at line \d+, column \d+"),
        ("- a\n- b\n", "expected a mapping of recipe keys, got list"),
        ("", "expected a mapping of recipe keys, got NoneType"),
    ],
)
def test_load_recipe_bad_files(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(RecipeError, match=message):
        load_recipe(path)


def test_missing_recipe_file(tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match="recipe file not found"):
        load_recipe(tmp_path / "nope.yaml")


def test_every_schema_field_has_a_description() -> None:
    schema = recipe_json_schema()
    missing = []
    for name, definition in [("Recipe", schema), *schema.get("$defs", {}).items()]:
        for field, spec in definition.get("properties", {}).items():
            if not spec.get("description"):
                missing.append(f"{name}.{field}")
    assert missing == []
    assert schema["additionalProperties"] is False


def test_templates_are_valid_recipes() -> None:
    folder = resources.files("aiflywheel.recipes")
    names = sorted(e.name for e in folder.iterdir() if e.name.endswith(".yaml"))
    assert {"zh-reviews.yaml", "en-reviews.yaml", "csv.yaml"} <= set(names)
    for name in names:
        recipe = load_recipe(Path(str(folder / name)))
        assert isinstance(recipe, Recipe)


def test_csv_template_shows_several_text_columns() -> None:
    text = (resources.files("aiflywheel.recipes") / "csv.yaml").read_text(encoding="utf-8")
    assert "[title, content]" in text
    edited = yaml.safe_load(text.replace("text: message ", "text: [title, content] ", 1))
    columns = parse_recipe(edited).data.columns
    assert columns.text_columns == ["title", "content"] and columns.text_separator == "\n"
