from __future__ import annotations

from pathlib import Path

import pytest

from aiflywheel.data.ingest import ingest
from aiflywheel.errors import IngestError
from aiflywheel.recipe import DataConfig


def _csv(tmp_path: Path, text: str, name: str = "d.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _config(path: Path, **columns) -> DataConfig:
    mapping = {"text": "text", "label": "label", **columns}
    return DataConfig(source=str(path), columns=mapping)


def test_maps_columns_and_keeps_meta(tmp_path: Path) -> None:
    path = _csv(tmp_path, "msg,team,user\nhello there,billing,u1\n你好,account,u2\n")
    result = ingest(
        DataConfig(source=path.name, columns={"text": "msg", "label": "team", "meta": ["user"]}),
        base_dir=tmp_path,
        seed=0,
    )
    assert [(r.text, r.label, r.meta) for r in result.dataset] == [
        ("hello there", "billing", {"user": "u1"}),
        ("你好", "account", {"user": "u2"}),
    ]
    assert result.rows_read == 2 and result.format == "csv" and result.encoding == "utf-8"


def test_absent_column_lists_the_columns(tmp_path: Path) -> None:
    path = _csv(tmp_path, "message,team\nhi,a\n")
    with pytest.raises(
        IngestError,
        match=r"column 'text' \(data.columns.text\) not found; columns are: 'message', 'team'",
    ):
        ingest(_config(path), base_dir=tmp_path, seed=0)


def test_missing_labels_and_texts_are_counted_drops(tmp_path: Path) -> None:
    path = _csv(tmp_path, "text,label\nfine,a\nno label,\n,b\nnan label,NaN\n")
    result = ingest(_config(path), base_dir=tmp_path, seed=0)
    assert [r.text for r in result.dataset] == ["fine", "nan label"]
    assert result.drops == {"missing_label": 1, "empty": 1}


def test_json_nan_and_null_labels_are_missing(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text(
        '{"text": "a", "label": null}\n{"text": "b", "label": NaN}\n{"text": "c", "label": 1}\n'
    )
    result = ingest(_config(path), base_dir=tmp_path, seed=0)
    assert [(r.text, r.label) for r in result.dataset] == [("c", "1")]
    assert result.drops == {"missing_label": 2}


def test_label_map_renames_raw_labels(tmp_path: Path) -> None:
    path = _csv(tmp_path, "text,label\nbad,1\ngood,5\n")
    config = DataConfig(source=str(path), label_map={"1": "negative", "5": "positive"})
    assert [r.label for r in ingest(config, base_dir=tmp_path, seed=0).dataset] == [
        "negative",
        "positive",
    ]


def test_ids_are_stable_under_reordering(tmp_path: Path) -> None:
    first = _csv(tmp_path, "text,label\nalpha,a\nbeta,b\nalpha,a\n", "one.csv")
    second = _csv(tmp_path, "text,label\nbeta,b\nalpha,a\nalpha,a\n", "two.csv")
    ids_one = {r.text: r.id for r in ingest(_config(first), base_dir=tmp_path, seed=0).dataset}
    ids_two = {r.text: r.id for r in ingest(_config(second), base_dir=tmp_path, seed=0).dataset}
    assert ids_one == ids_two
    all_ids = [r.id for r in ingest(_config(first), base_dir=tmp_path, seed=0).dataset]
    assert len(set(all_ids)) == 3 and all_ids[2] == all_ids[0] + "-2"


def test_id_column_must_be_unique_and_present(tmp_path: Path) -> None:
    dup = _csv(tmp_path, "id,text,label\n7,a,x\n7,b,y\n")
    with pytest.raises(IngestError, match=r"repeats value '7' \(lines 2 and 3\)"):
        ingest(_config(dup, id="id"), base_dir=tmp_path, seed=0)
    empty = _csv(tmp_path, "id,text,label\n,a,x\n", "e.csv")
    with pytest.raises(IngestError, match="id column 'id' is empty at line 2"):
        ingest(_config(empty, id="id"), base_dir=tmp_path, seed=0)


def test_sample_is_seeded_and_keeps_order(tmp_path: Path) -> None:
    rows = "".join(f"text {i},l{i % 2}\n" for i in range(100))
    path = _csv(tmp_path, "text,label\n" + rows)
    config = DataConfig(source=str(path), sample=10)
    first = [r.text for r in ingest(config, base_dir=tmp_path, seed=1).dataset]
    assert first == [r.text for r in ingest(config, base_dir=tmp_path, seed=1).dataset]
    assert first != [r.text for r in ingest(config, base_dir=tmp_path, seed=2).dataset]
    assert first == sorted(first, key=lambda t: int(t.split()[1]))


def test_unknown_demo_source(tmp_path: Path) -> None:
    with pytest.raises(
        IngestError,
        match="unknown demo source 'demo:nope'; known: demo:zh-reviews, demo:en-reviews",
    ):
        ingest(DataConfig(source="demo:nope"), base_dir=tmp_path, seed=0)


def test_several_text_columns_are_joined_skipping_empty_cells(tmp_path: Path) -> None:
    path = _csv(
        tmp_path,
        "title,content,label\nRates rise, The bank moved. ,economy\n,Only content,sport\n"
        "Only title,,tech\n ,,tech\n",
    )
    result = ingest(_config(path, text=["title", "content"]), base_dir=tmp_path, seed=0)
    assert [r.text for r in result.dataset] == [
        "Rates rise\nThe bank moved.",
        "Only content",
        "Only title",
    ]
    assert result.drops == {"empty": 1}


def test_text_separator_is_configurable(tmp_path: Path) -> None:
    path = _csv(tmp_path, "title,content,label\n标题,正文,a\n")
    config = _config(path, text=["title", "content"], text_separator="。")
    assert ingest(config, base_dir=tmp_path, seed=0).dataset.texts == ["标题。正文"]


def test_single_text_column_is_kept_as_it_is(tmp_path: Path) -> None:
    path = _csv(tmp_path, 'text,label\n" padded ",a\n')
    for text in ("text", ["text"]):
        result = ingest(_config(path, text=text), base_dir=tmp_path, seed=0)
        assert result.dataset.texts == [" padded "]


def test_absent_one_of_several_text_columns_is_named(tmp_path: Path) -> None:
    path = _csv(tmp_path, "title,body,label\nt,b,a\n")
    with pytest.raises(
        IngestError,
        match=r"column 'content' \(data.columns.text\) not found; columns are: 'title', 'body'",
    ):
        ingest(_config(path, text=["title", "content"]), base_dir=tmp_path, seed=0)
