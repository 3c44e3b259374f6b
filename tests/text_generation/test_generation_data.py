"""Readers of pairs, chat transcripts and texts, and their one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aiflywheel.errors import DataError, ModelError
from aiflywheel.models.causal_lm import check_chat
from aiflywheel.tasks.text_generation.config import GenerationConfig
from aiflywheel.tasks.text_generation.data import check_lengths, read_rows, split_rows


def jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    return path


def config(**kw) -> GenerationConfig:
    return GenerationConfig(source="x", **kw)


def test_pairs_csv_dedupe_and_language(tmp_path: Path) -> None:
    path = tmp_path / "pairs.csv"
    path.write_text(
        "prompt,response\nwhere is my order,it ships today\n退款要多久,五个工作日\n"
        "where is my order,it ships today\n",
        "utf-8",
    )
    rows, counts = read_rows(path, config())
    assert counts["kind"] == "pairs" and counts["duplicates_dropped"] == 1
    assert [r.language for r in rows] == ["en", "zh"]
    assert rows[0].example.prompt == "where is my order"


@pytest.mark.parametrize(
    ("row", "words"),
    [
        ({"prompt": "hi", "response": "  "}, "row 2: the response is empty"),
        ({"prompt": "", "response": "x"}, "row 2: the prompt is empty"),
    ],
)
def test_a_pair_with_an_empty_side_names_the_row(tmp_path: Path, row: dict, words: str) -> None:
    path = jsonl(tmp_path / "p.jsonl", [{"prompt": "a", "response": "b"}, row])
    with pytest.raises(DataError, match=words) as caught:
        read_rows(path, config())
    assert "\n" not in str(caught.value) and "fill it or remove the row" in str(caught.value)


def test_chat_rows_and_roles_out_of_order(tmp_path: Path) -> None:
    good = {
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "hello"},
            {"role": "user", "content": "refund?"},
            {"role": "assistant", "content": "five days"},
        ]
    }
    rows, counts = read_rows(jsonl(tmp_path / "c.jsonl", [good]), config())
    assert counts["kind"] == "chat"
    assert rows[0].example.response == "five days" and len(rows[0].example.messages) == 4
    bad = {"messages": [{"role": "assistant", "content": "hi"}, {"role": "user", "content": "x"}]}
    with pytest.raises(DataError, match=r"row 2: roles out of order \(assistant -> user\)"):
        read_rows(jsonl(tmp_path / "b.jsonl", [good, bad]), config())


def test_texts_and_unknown_columns(tmp_path: Path) -> None:
    rows, counts = read_rows(jsonl(tmp_path / "t.jsonl", [{"text": "once upon a time"}]), config())
    assert counts["kind"] == "text" and rows[0].example.continuation
    with pytest.raises(DataError, match="no prompt\\+response, messages or text columns"):
        read_rows(jsonl(tmp_path / "u.jsonl", [{"q": "a", "a": "b"}]), config())


def test_split_keeps_a_prompt_in_one_part(tmp_path: Path) -> None:
    data = [{"prompt": f"p{i % 10}", "response": f"r{i}"} for i in range(40)]
    rows, _ = read_rows(jsonl(tmp_path / "s.jsonl", data), config())
    parts = split_rows(rows, val=0.2, test=0.2, seed=0)
    seen = [{r.example.prompt for r in parts[n]} for n in ("train", "val", "test")]
    assert not (seen[0] & seen[1] or seen[0] & seen[2] or seen[1] & seen[2])
    assert sum(len(p) for p in parts.values()) == 40


def test_a_row_longer_than_the_context_and_a_missing_chat_template(
    tmp_path: Path, tiny_lms
) -> None:
    from transformers import AutoTokenizer

    chat_tok = AutoTokenizer.from_pretrained(str(tiny_lms["chat"]))
    plain_tok = AutoTokenizer.from_pretrained(str(tiny_lms["plain"]))
    long = {"prompt": "where is my order", "response": " ".join(["order"] * 80)}
    rows, _ = read_rows(jsonl(tmp_path / "l.jsonl", [long]), config())
    with pytest.raises(
        DataError, match=r"row 1 is \d+ tokens .* longer than generation.max_length 32"
    ):
        check_lengths(rows, chat_tok, chat=True, max_length=32)
    with pytest.raises(ModelError, match="has no chat template.*prompt_format: plain"):
        check_chat(plain_tok, True, "gemma3-270m")


def test_the_template_is_a_valid_recipe_on_the_shipped_rows() -> None:
    from importlib import resources

    from aiflywheel.recipe import load_recipe
    from aiflywheel.tasks.text_generation.data import demo_path

    template = resources.files("aiflywheel.recipes") / "text-generation.yaml"
    recipe = load_recipe(Path(str(template)))
    assert recipe.task == "text_generation" and recipe.generation.model == "smollm2-135m"
    rows, counts = read_rows(demo_path(recipe.generation.source), recipe.generation)
    assert counts["rows"] == 116 and counts["languages"] == {"en": 58, "zh": 58}
    with pytest.raises(DataError, match="not a shipped source"):
        demo_path("demo:nothing")
