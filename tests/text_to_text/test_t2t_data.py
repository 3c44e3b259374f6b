"""Reading pairs: CSV/TSV/JSONL, the one-line errors naming the row, the split, the demos."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from aiflywheel.errors import DataError, IngestError, RecipeError
from aiflywheel.recipe import parse_recipe
from aiflywheel.tasks.text_to_text.config import TextToTextConfig
from aiflywheel.tasks.text_to_text.data import Pair, read_pairs, split_pairs
from aiflywheel.tasks.text_to_text.demo_data import cedict_pairs, faq_pairs

CONFIG = TextToTextConfig(source="x", max_source_chars=20, max_target_chars=30)


def test_csv_tsv_and_jsonl_read_the_same_pairs(tmp_path: Path) -> None:
    (tmp_path / "p.csv").write_text('source,target\n你好,hello\n"再见 ",  good  bye\n', "utf-8")
    (tmp_path / "p.tsv").write_text("source\ttarget\n你好\thello\n再见\tgood bye\n", "utf-8")
    rows = [{"source": "你好", "target": "hello"}, {"source": "再见", "target": "good bye"}]
    text = "\n".join(json.dumps(r, ensure_ascii=False) for r in rows)
    (tmp_path / "p.jsonl").write_text(text + "\n\n", "utf-8")
    for name in ("p.csv", "p.tsv", "p.jsonl"):
        pairs = read_pairs(name, CONFIG, tmp_path)
        assert [(p.source, p.target) for p in pairs] == [("你好", "hello"), ("再见", "good bye")]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("a.csv", "source,target\nok,fine\n你好,\n", "a.csv row 3: the target ('target') is empty"),
        ("a.csv", "source,target\n ,x\n", "a.csv row 2: the source ('source') is empty"),
        (
            "a.csv",
            "source,target\nok," + "y" * 31 + "\n",
            "a.csv row 2: the target has 31 characters, more than text_to_text.max_target_chars "
            "30; shorten or split it, or raise the limit",
        ),
        ("a.csv", "src,tgt\nok,fine\n", "a.csv: no column 'source'; its columns are src, tgt"),
        ("a.jsonl", '{"source": "a", "target": "b"}\n{oops\n', "a.jsonl line 2: not valid JSON"),
        ("a.jsonl", '{"source": "a"}\n', "a.jsonl line 1: no key 'target' (keys: source)"),
        ("a.txt", "x", "cannot tell the format of 'a.txt'"),
        ("a.csv", "", "a.csv is empty"),
        ("a.csv", "source,target\n", "a.csv has a header but no pairs"),
    ],
)
def test_bad_rows_are_one_line_naming_the_row(
    tmp_path: Path, name: str, content: str, message: str
) -> None:
    (tmp_path / name).write_text(content, "utf-8")
    with pytest.raises(DataError) as caught:
        read_pairs(name, CONFIG, tmp_path)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_a_missing_file_and_non_utf8_are_ingest_errors(tmp_path: Path) -> None:
    with pytest.raises(IngestError, match="does not exist"):
        read_pairs("nope.csv", CONFIG, tmp_path)
    (tmp_path / "gbk.csv").write_bytes("source,target\n你好,hi\n".encode("gbk"))
    with pytest.raises(IngestError, match="not UTF-8"):
        read_pairs("gbk.csv", CONFIG, tmp_path)


def test_split_keeps_a_source_in_one_split_and_is_seeded() -> None:
    pairs = [Pair(f"s{i % 50}", f"t{i}") for i in range(200)]
    parts = split_pairs(pairs, train=0.6, val=0.2, seed=3)
    assert sum(len(v) for v in parts.values()) == 200
    where = {}
    for name, rows in parts.items():
        for p in rows:
            assert where.setdefault(p.source, name) == name
    assert parts == split_pairs(pairs, train=0.6, val=0.2, seed=3)
    with pytest.raises(DataError, match="the test split is empty"):
        split_pairs(pairs[:1], train=0.98, val=0.01, seed=0)


def test_the_recipe_section_belongs_to_its_task() -> None:
    base = {"feature": "f", "task": "text_to_text"}
    with pytest.raises(RecipeError, match="missing required key 'text_to_text'"):
        parse_recipe(base)
    with pytest.raises(RecipeError, match="only applies to task text_to_text"):
        parse_recipe({"feature": "f", "data": {"source": "x.csv"}, "text_to_text": {"source": "x"}})
    with pytest.raises(RecipeError, match="hidden must be even"):
        parse_recipe({**base, "text_to_text": {"source": "x", "model": {"hidden": 33}}})
    with pytest.raises(RecipeError, match="beam_sizes"):
        parse_recipe({**base, "text_to_text": {"source": "x", "beam_sizes": 3}})


def test_demo_sets_come_from_the_installed_packages() -> None:
    cedict = cedict_pairs()
    assert len(cedict) > 50_000
    assert len({s for s, _ in cedict}) == len(cedict)  # one gloss per word
    cjk = re.compile(r"[\u3400-\u9fff]")
    assert all(1 <= len(s) <= 4 and cjk.match(s) and not cjk.search(t) for s, t in cedict)
    assert not any(t.lower().startswith(("variant of", "surname", "see ")) for _, t in cedict)
    faq = faq_pairs()
    assert len(faq) >= 50
    assert all(cjk.search(zh) and not cjk.search(en) for zh, en in faq)
