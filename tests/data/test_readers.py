"""Tests for aiflywheel.data.readers.read_table: every input file is built under tmp_path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aiflywheel.data.readers import FORMATS, RawTable, read_table
from aiflywheel.errors import IngestError


def write(tmp_path: Path, name: str, content: str | bytes, encoding: str = "utf-8") -> Path:
    """Write ``content`` to ``tmp_path / name`` and return the path."""
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode(encoding))
    return path


def one_line(message: str) -> bool:
    """Whether an error message is a single line."""
    return "\n" not in message


# ---------------------------------------------------------------- paths and formats


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.csv"
    with pytest.raises(IngestError, match="data file not found: .*nope.csv"):
        read_table(path)


def test_directory(tmp_path: Path) -> None:
    folder = tmp_path / "data.csv"
    folder.mkdir()
    with pytest.raises(IngestError, match="is a directory"):
        read_table(folder)


def test_unknown_extension_names_it_and_the_formats(tmp_path: Path) -> None:
    path = write(tmp_path, "data.docx", "a,b\n1,2\n")
    with pytest.raises(IngestError) as info:
        read_table(path)
    message = str(info.value)
    assert "'.docx'" in message and "csv" in message and "parquet" in message


def test_unknown_explicit_format(tmp_path: Path) -> None:
    path = write(tmp_path, "data.csv", "a,b\n1,2\n")
    with pytest.raises(IngestError, match="unknown data format 'xml'"):
        read_table(path, format="xml")


def test_explicit_format_overrides_extension(tmp_path: Path) -> None:
    path = write(tmp_path, "export.dat", '{"text": "hi"}\n')
    table = read_table(path, format="jsonl")
    assert table.format == "jsonl" and table.rows == [{"text": "hi"}]


@pytest.mark.parametrize("content", [b"", b"  \n\r\n \t\n"])
def test_empty_file(tmp_path: Path, content: bytes) -> None:
    path = write(tmp_path, "data.csv", content)
    with pytest.raises(IngestError, match="data.csv is empty: it has no data rows"):
        read_table(path)


def test_header_only(tmp_path: Path) -> None:
    path = write(tmp_path, "data.csv", "text,label\n\n")
    with pytest.raises(IngestError, match="header but no data rows"):
        read_table(path)


# ---------------------------------------------------------------- encodings


def test_utf8_csv(tmp_path: Path) -> None:
    path = write(tmp_path, "data.csv", "text,label\ncafé ☕,pos\n你好,neg\n")
    table = read_table(path)
    assert isinstance(table, RawTable)
    assert table.path == path and table.format == "csv" and table.encoding == "utf-8"
    assert table.columns == ["text", "label"]
    assert table.rows == [{"text": "café ☕", "label": "pos"}, {"text": "你好", "label": "neg"}]
    assert table.line_numbers == [2, 3]
    assert table.malformed == [] and table.notes == []


def test_utf8_bom(tmp_path: Path) -> None:
    path = write(tmp_path, "data.csv", "\ufefftext,label\r\nhé,pos\r\n")
    table = read_table(path)
    assert table.encoding == "utf-8-sig"
    assert table.columns == ["text", "label"]
    assert table.rows == [{"text": "hé", "label": "pos"}]


def test_bom_stripped_from_header_with_explicit_utf8(tmp_path: Path) -> None:
    path = write(tmp_path, "data.csv", "\ufefftext,label\nhi,pos\n")
    assert read_table(path, encoding="utf-8").columns == ["text", "label"]


@pytest.mark.parametrize("codec", ["utf-16", "utf-16-be", "utf-32"])
def test_utf16_and_utf32_with_bom(tmp_path: Path, codec: str) -> None:
    text = "text\tlabel\n你好\tpos\n"
    bom_be = b"\xfe\xff"
    content = bom_be + text.encode(codec) if codec == "utf-16-be" else text.encode(codec)
    path = write(tmp_path, "data.tsv", content)
    table = read_table(path)
    assert table.encoding in ("utf-16", "utf-32")
    assert table.rows == [{"text": "你好", "label": "pos"}]
    assert "byte order mark" in table.notes[0]


def test_gbk_chinese(tmp_path: Path) -> None:
    text = "评论,标签\n这个产品非常好用,正面\n质量太差了，不推荐,负面\n"
    path = write(tmp_path, "data.csv", text, encoding="gbk")
    table = read_table(path)
    assert table.encoding == "gb18030"
    assert table.columns == ["评论", "标签"]
    assert table.rows[1] == {"评论": "质量太差了，不推荐", "标签": "负面"}
    assert table.notes == ["decoded as GB18030"]


def test_mixed_utf8_and_gbk_lines(tmp_path: Path) -> None:
    lines = [
        b"text,label\n",
        "这个产品非常好用,正面\n".encode(),
        "质量太差了不推荐,负面\n".encode("gbk"),
        b"plain ascii,pos\n",
        "物流很快服务也好,正面\n".encode("gbk"),
    ]
    path = write(tmp_path, "data.csv", b"".join(lines))
    table = read_table(path)
    assert table.encoding == "utf-8+gb18030"
    assert [row["text"] for row in table.rows] == [
        "这个产品非常好用",
        "质量太差了不推荐",
        "plain ascii",
        "物流很快服务也好",
    ]
    assert table.notes == ["mixed encodings: 2 of 5 lines were GB18030, the rest UTF-8"]


def test_gbk_line_that_happens_to_be_valid_utf8_stays_gbk(tmp_path: Path) -> None:
    text = "text,label\n小,neg\n这个产品非常好用,pos\n"
    assert "小".encode("gbk").decode("utf-8") == "С"
    table = read_table(write(tmp_path, "data.csv", text, encoding="gbk"))
    assert table.encoding == "gb18030"
    assert [row["text"] for row in table.rows] == ["小", "这个产品非常好用"]


def test_undecodable_line_in_mixed_file(tmp_path: Path) -> None:
    content = "text,label\n你好,pos\n".encode() + b"bad \xff\xfe\x80 bytes,neg\n"
    path = write(tmp_path, "data.csv", content)
    with pytest.raises(IngestError) as info:
        read_table(path)
    message = str(info.value)
    assert "data.csv" in message and "line 3" in message
    assert "UTF-8" in message and "data.encoding" in message and one_line(message)


def test_undecodable_line_in_gbk_file(tmp_path: Path) -> None:
    good = "".join(f"第{i}条评论内容很好,正面\n" for i in range(20)).encode("gbk")
    path = write(tmp_path, "data.csv", b"text,label\n" + good + b"\xff\xff,neg\n")
    with pytest.raises(IngestError, match=r"line 22 cannot be decoded .*data\.encoding"):
        read_table(path)


def test_single_byte_codepage_falls_back_to_guess(tmp_path: Path) -> None:
    text = "text,label\n" + "Le café était très bon, vraiment,pos\n" * 30
    path = write(tmp_path, "data.csv", text.replace(", v", " v"), encoding="cp1252")
    table = read_table(path)
    assert table.encoding not in ("utf-8", "gb18030")
    assert "best guess" in table.notes[0]
    assert len(table.rows) == 30


def test_explicit_encoding(tmp_path: Path) -> None:
    path = write(tmp_path, "data.csv", "text,label\nNaïve,pos\n", encoding="latin-1")
    table = read_table(path, encoding="latin-1")
    assert table.encoding == "iso8859-1"
    assert table.rows == [{"text": "Naïve", "label": "pos"}]


def test_explicit_encoding_that_fails_names_encoding_and_line(tmp_path: Path) -> None:
    content = b"text,label\nok,pos\nalso ok,neg\n" + "坏,neg\n".encode("gbk")
    path = write(tmp_path, "data.csv", content)
    with pytest.raises(IngestError) as info:
        read_table(path, encoding="utf-8")
    message = str(info.value)
    assert "'utf-8'" in message and "line 4" in message and one_line(message)


def test_unknown_encoding(tmp_path: Path) -> None:
    path = write(tmp_path, "data.csv", "a\n1\n")
    with pytest.raises(IngestError, match="unknown encoding 'klingon'"):
        read_table(path, encoding="klingon")


def test_non_text_codec_is_wrapped(tmp_path: Path) -> None:
    path = write(tmp_path, "data.csv", "a\n1\n")
    with pytest.raises(IngestError, match="cannot be decoded as 'base64'"):
        read_table(path, encoding="base64")


# ---------------------------------------------------------------- binary files


def test_binary_with_nul_bytes(tmp_path: Path) -> None:
    path = write(tmp_path, "data.csv", b"text,label\n\x00\x01\x02\x03,pos\n")
    with pytest.raises(IngestError, match="data.csv looks like a binary file .*NUL.*CSV text"):
        read_table(path)


@pytest.mark.parametrize(
    ("head", "kind"),
    [(b"%PDF-1.7\n", "PDF"), (b"\x89PNG\r\n\x1a\n", "PNG"), (b"\x7fELF\x02\x01", "ELF")],
)
def test_binary_magic_bytes(tmp_path: Path, head: bytes, kind: str) -> None:
    path = write(tmp_path, "data.jsonl", head + b"rest of file\n")
    with pytest.raises(IngestError, match=f"looks like a binary file .*{kind}.*JSON Lines text"):
        read_table(path)


def test_plain_zip_renamed_csv(tmp_path: Path) -> None:
    import zipfile

    path = tmp_path / "data.csv"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("inner.txt", "hello")
    with pytest.raises(IngestError) as info:
        read_table(path)
    assert str(info.value) == (
        "data.csv looks like a binary file (starts like a ZIP/xlsx archive), expected CSV text"
    )


def test_xlsx_renamed_csv(tmp_path: Path) -> None:
    source = make_xlsx(tmp_path / "real.xlsx", {"Sheet1": [["text"], ["hi"]]})
    path = write(tmp_path, "data.csv", source.read_bytes())
    with pytest.raises(IngestError, match="binary file.*it is an Excel workbook.*'xlsx'"):
        read_table(path)


def test_parquet_renamed_json(tmp_path: Path) -> None:
    source = make_parquet(tmp_path / "real.parquet", {"text": ["hi"]})
    path = write(tmp_path, "data.json", source.read_bytes())
    with pytest.raises(IngestError, match="expected JSON text; it is a Parquet file"):
        read_table(path)


# ---------------------------------------------------------------- CSV / TSV


def test_tsv(tmp_path: Path) -> None:
    path = write(tmp_path, "data.tsv", "text\tlabel\nhello, world\tpos\n")
    table = read_table(path)
    assert table.format == "tsv"
    assert table.rows == [{"text": "hello, world", "label": "pos"}]


def test_sniffed_semicolon(tmp_path: Path) -> None:
    path = write(tmp_path, "data.csv", "text;label;score\nhello, there;pos;1,5\nbye;neg;2,0\n")
    table = read_table(path)
    assert table.columns == ["text", "label", "score"]
    assert table.rows[0] == {"text": "hello, there", "label": "pos", "score": "1,5"}
    assert table.notes == ["delimiter sniffed as ';' (semicolon)"]


def test_sniffed_pipe_in_txt(tmp_path: Path) -> None:
    path = write(tmp_path, "data.txt", "text|label\na|b\nc|d\n")
    table = read_table(path)
    assert table.format == "csv" and table.columns == ["text", "label"]


def test_single_column_csv(tmp_path: Path) -> None:
    path = write(tmp_path, "data.csv", "text\nhello; there\nfine\n")
    table = read_table(path)
    assert table.columns == ["text"]
    assert [row["text"] for row in table.rows] == ["hello; there", "fine"]


def test_header_whitespace_stripped_and_values_kept_raw(tmp_path: Path) -> None:
    path = write(tmp_path, "data.csv", " text , label \n  padded  ,\n")
    table = read_table(path)
    assert table.columns == ["text", "label"]
    assert table.rows == [{"text": "  padded  ", "label": ""}]


def test_wrong_delimiter_names_the_right_one(tmp_path: Path) -> None:
    path = write(tmp_path, "data.csv", "text\tlabel\nhello\tpos\nbye\tneg\n")
    with pytest.raises(IngestError) as info:
        read_table(path, delimiter=",")
    assert str(info.value) == (
        "data.csv: delimiter ',' gives one column 'text\\tlabel'; the file looks "
        "tab-separated: set data.delimiter to '\\t'"
    )


def test_tsv_that_is_really_comma_separated(tmp_path: Path) -> None:
    path = write(tmp_path, "data.tsv", "text,label\nhello,pos\n")
    with pytest.raises(IngestError, match="comma-separated: set data.delimiter to ','"):
        read_table(path)


def test_delimiter_aliases_and_validation(tmp_path: Path) -> None:
    path = write(tmp_path, "data.csv", "a\tb\n1\t2\n")
    assert read_table(path, delimiter="\\t").columns == ["a", "b"]
    assert read_table(path, delimiter="tab").columns == ["a", "b"]
    with pytest.raises(IngestError, match="delimiter must be one character.*'::'"):
        read_table(path, delimiter="::")


def test_malformed_rows_and_blank_lines(tmp_path: Path) -> None:
    content = "text,label\nok,pos\n\nextra,field,here\nlonely\nfine,neg\n"
    table = read_table(write(tmp_path, "data.csv", content))
    assert [row["text"] for row in table.rows] == ["ok", "fine"]
    assert table.line_numbers == [2, 6]
    assert table.malformed == [(4, "expected 2 fields, got 3"), (5, "expected 2 fields, got 1")]


def test_all_rows_malformed(tmp_path: Path) -> None:
    path = write(tmp_path, "data.csv", "a,b,c\n1\n2\n")
    with pytest.raises(IngestError, match=r"all 2 rows are malformed \(lines 2, 3"):
        read_table(path)


def test_quoted_multiline_field_keeps_start_line(tmp_path: Path) -> None:
    content = 'text,label\n"first\nsecond\nthird",pos\nnext,neg\r\n"a ""quoted"" word",pos\n'
    table = read_table(write(tmp_path, "data.csv", content))
    assert table.rows[0]["text"] == "first\nsecond\nthird"
    assert table.rows[2]["text"] == 'a "quoted" word'
    assert table.line_numbers == [2, 5, 6]


def test_ten_megabyte_cell(tmp_path: Path) -> None:
    big = "x" * 10_000_000
    path = write(tmp_path, "data.csv", f'text,label\n"{big}",pos\nsmall,neg\n')
    table = read_table(path)
    assert len(table.rows[0]["text"]) == 10_000_000
    assert table.line_numbers == [2, 3]


def test_empty_header_name(tmp_path: Path) -> None:
    path = write(tmp_path, "data.csv", "text,,label\n1,2,3\n")
    with pytest.raises(IngestError, match="empty column name at position 2"):
        read_table(path)


def test_duplicate_header_names(tmp_path: Path) -> None:
    path = write(tmp_path, "data.csv", "text,label,text,label\n1,2,3,4\n")
    with pytest.raises(IngestError) as info:
        read_table(path)
    assert "duplicates 'text', 'label'" in str(info.value)


def test_csv_error_is_wrapped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import csv

    from aiflywheel.data import readers

    monkeypatch.setattr(readers, "_FIELD_SIZE_LIMIT", 10)
    previous = csv.field_size_limit(10)
    try:
        path = write(tmp_path, "data.csv", "a,b\n1,2\n" + "x" * 50 + ",2\n")
        with pytest.raises(IngestError, match="line 3 cannot be parsed as CSV: field larger"):
            read_table(path)
    finally:
        csv.field_size_limit(previous)


def test_large_csv_reads_every_row(tmp_path: Path) -> None:
    rows = "".join(
        f"this is review number {i} with some text,label{i % 5},{i}\n" for i in range(35_000)
    )
    path = write(tmp_path, "data.csv", "text,label,id\n" + rows)
    table = read_table(path)
    assert len(table.rows) == 35_000 and table.line_numbers[-1] == 35_001


# ---------------------------------------------------------------- JSON Lines


def test_jsonl_with_malformed_lines(tmp_path: Path) -> None:
    content = (
        '{"text": "a", "label": "pos"}\n'
        "\n"
        "{not json}\n"
        "[1, 2]\n"
        '{"text": "b", "meta": {"k": [1, 2]}, "score": NaN, "ok": true, "n": 3}\n'
    )
    table = read_table(write(tmp_path, "data.jsonl", content))
    assert table.columns == ["text", "label", "meta", "score", "ok", "n"]
    assert table.rows[0] == {
        "text": "a",
        "label": "pos",
        "meta": None,
        "score": None,
        "ok": None,
        "n": None,
    }
    assert table.rows[1] == {
        "text": "b",
        "label": None,
        "meta": '{"k":[1,2]}',
        "score": None,
        "ok": True,
        "n": 3,
    }
    assert table.line_numbers == [1, 5]
    assert [line for line, _ in table.malformed] == [3, 4]
    assert table.malformed[0][1].startswith("invalid JSON: ")
    assert table.malformed[1][1] == "not an object, got an array"


def test_jsonl_all_malformed(tmp_path: Path) -> None:
    path = write(tmp_path, "data.ndjson", "oops\n42\n\n[1]\n")
    with pytest.raises(IngestError) as info:
        read_table(path)
    message = str(info.value)
    assert "no line is a JSON object" in message and "bad lines 1, 2, 4" in message
    assert one_line(message)


def test_jsonl_that_is_a_json_array_gets_a_hint(tmp_path: Path) -> None:
    path = write(tmp_path, "data.jsonl", '[{"text": "a"},\n {"text": "b"}]\n')
    with pytest.raises(IngestError, match="looks like one JSON array"):
        read_table(path)


def test_jsonl_gbk(tmp_path: Path) -> None:
    content = '{"text": "你好世界", "label": "正面"}\n'.encode("gbk")
    table = read_table(write(tmp_path, "data.jsonl", content))
    assert table.encoding == "gb18030" and table.rows[0]["text"] == "你好世界"


def test_jsonl_unicode_line_separator_inside_string(tmp_path: Path) -> None:
    content = json.dumps({"text": "a\u2028b"}, ensure_ascii=False) + "\n"
    table = read_table(write(tmp_path, "data.jsonl", content))
    assert table.rows == [{"text": "a\u2028b"}]


# ---------------------------------------------------------------- JSON


def test_json_array(tmp_path: Path) -> None:
    content = json.dumps([{"text": "a", "label": 1}, {"text": "b", "x": 2.5}, "stray"])
    table = read_table(write(tmp_path, "data.json", content))
    assert table.columns == ["text", "label", "x"]
    assert table.rows[1] == {"text": "b", "label": None, "x": 2.5}
    assert table.line_numbers == [1, 2]
    assert table.malformed == [(3, "not an object, got a string")]


def test_json_object_wrapping_an_array(tmp_path: Path) -> None:
    content = json.dumps({"data": [{"text": "a"}, {"text": "b"}]})
    table = read_table(write(tmp_path, "data.json", content))
    assert [row["text"] for row in table.rows] == ["a", "b"]
    assert table.notes == ["read the array under key 'data'"]


@pytest.mark.parametrize(
    ("document", "found"),
    [
        (42, "found a number"),
        ("text", "found a string"),
        ({"a": 1, "b": [1]}, "found an object with keys 'a', 'b'"),
    ],
)
def test_json_not_an_array(tmp_path: Path, document: object, found: str) -> None:
    path = write(tmp_path, "data.json", json.dumps(document))
    with pytest.raises(IngestError, match=f"expected a JSON array of objects.*{found}"):
        read_table(path)


def test_json_empty_array(tmp_path: Path) -> None:
    with pytest.raises(IngestError, match="no data rows"):
        read_table(write(tmp_path, "data.json", "[]"))


def test_invalid_json_names_line_and_column(tmp_path: Path) -> None:
    path = write(tmp_path, "data.json", '[\n  {"text": "a"},\n  {"text": }\n]\n')
    with pytest.raises(IngestError, match="invalid JSON at line 3, column 12"):
        read_table(path)


def test_json_that_is_jsonl_gets_a_hint(tmp_path: Path) -> None:
    path = write(tmp_path, "data.json", '{"text": "a"}\n{"text": "b"}\n')
    with pytest.raises(IngestError, match="looks like JSON Lines"):
        read_table(path)


def test_json_too_deep_is_wrapped(tmp_path: Path) -> None:
    path = write(tmp_path, "data.json", "[" * 100_000 + "]" * 100_000)
    with pytest.raises(IngestError, match="data.json"):
        read_table(path)


# ---------------------------------------------------------------- Parquet


def make_parquet(path: Path, columns: dict[str, list[object]]) -> Path:
    """Write a small Parquet file with pyarrow."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table(columns), path)
    return path


def test_parquet(tmp_path: Path) -> None:
    path = make_parquet(
        tmp_path / "data.parquet",
        {
            "text": ["a", "b", None],
            "score": [1.5, float("nan"), 3.0],
            "n": [1, 2, 3],
            "tags": [["x"], [], ["y", "z"]],
        },
    )
    table = read_table(path)
    assert table.format == "parquet" and table.encoding is None
    assert table.columns == ["text", "score", "n", "tags"]
    assert table.rows[1] == {"text": "b", "score": None, "n": 2, "tags": "[]"}
    assert table.rows[2]["tags"] == '["y","z"]'
    assert table.line_numbers == [1, 2, 3]


def test_parquet_empty(tmp_path: Path) -> None:
    import pyarrow as pa

    path = make_parquet(tmp_path / "data.pq", {"text": pa.array([], type=pa.string())})
    with pytest.raises(IngestError, match="no data rows"):
        read_table(path)


def test_parquet_not_parquet(tmp_path: Path) -> None:
    path = write(tmp_path, "data.parquet", "text,label\na,b\n")
    with pytest.raises(IngestError, match="does not look like a Parquet file .*text"):
        read_table(path)


def test_parquet_corrupt(tmp_path: Path) -> None:
    path = write(tmp_path, "data.parquet", b"PAR1" + b"garbage" * 10 + b"PAR1")
    with pytest.raises(IngestError, match="cannot read as Parquet"):
        read_table(path)


# ---------------------------------------------------------------- Excel


def make_xlsx(path: Path, sheets: dict[str, list[list[object]]]) -> Path:
    """Write a small workbook with one sheet per entry, rows written as given."""
    import openpyxl

    workbook = openpyxl.Workbook()
    workbook.remove(workbook.active)
    for name, rows in sheets.items():
        worksheet = workbook.create_sheet(name)
        for row in rows:
            worksheet.append(row)
    workbook.save(path)
    return path


def test_xlsx_first_sheet(tmp_path: Path) -> None:
    path = make_xlsx(
        tmp_path / "data.xlsx",
        {"Reviews": [["text", "label", "stars"], ["good", "pos", 5], ["bad", "neg", 1.5]]},
    )
    table = read_table(path)
    assert table.format == "xlsx" and table.encoding is None
    assert table.columns == ["text", "label", "stars"]
    assert table.rows == [
        {"text": "good", "label": "pos", "stars": 5},
        {"text": "bad", "label": "neg", "stars": 1.5},
    ]
    assert table.line_numbers == [2, 3]


def test_xlsx_named_sheet_with_offset_header_and_gaps(tmp_path: Path) -> None:
    import datetime as dt

    rows: list[list[object]] = [
        [],
        [None, "text", "when"],
        [None, "hello", dt.datetime(2024, 5, 1, 12, 30)],
        [],
        [None, "again", None],
        [None, None, None, "stray"],
        [],
        [],
    ]
    path = make_xlsx(tmp_path / "data.xlsx", {"First": [["ignored"], ["x"]], "Data": rows})
    table = read_table(path, sheet="Data")
    assert table.columns == ["text", "when"]
    assert table.rows == [
        {"text": "hello", "when": "2024-05-01T12:30:00"},
        {"text": "again", "when": None},
    ]
    assert table.line_numbers == [3, 5]
    assert table.malformed == [(6, "value in column 4 outside the header's columns")]
    assert table.notes == ["read sheet 'Data' of 2"]


def test_xlsx_missing_sheet_lists_sheets(tmp_path: Path) -> None:
    path = make_xlsx(tmp_path / "data.xlsx", {"One": [["a"], [1]], "Two": [["b"], [2]]})
    with pytest.raises(IngestError) as info:
        read_table(path, sheet="Three")
    assert str(info.value) == "data.xlsx has no sheet 'Three'; its sheets are 'One', 'Two'"


def test_xlsx_duplicate_header(tmp_path: Path) -> None:
    path = make_xlsx(tmp_path / "data.xlsx", {"S": [["text", "text"], [1, 2]]})
    with pytest.raises(IngestError, match="duplicates 'text'"):
        read_table(path)


def test_xlsx_header_only_and_empty(tmp_path: Path) -> None:
    header_only = make_xlsx(tmp_path / "h.xlsx", {"S": [["text", "label"], [], []]})
    with pytest.raises(IngestError, match="header but no data rows"):
        read_table(header_only)
    empty = make_xlsx(tmp_path / "e.xlsx", {"S": []})
    with pytest.raises(IngestError, match="e.xlsx is empty"):
        read_table(empty)


def test_xlsx_not_a_workbook(tmp_path: Path) -> None:
    path = write(tmp_path, "data.xlsx", "text,label\n")
    with pytest.raises(IngestError, match="does not look like an .xlsx workbook"):
        read_table(path)
    old = write(tmp_path, "old.xlsx", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 64)
    with pytest.raises(IngestError, match="re-save it as .xlsx or CSV"):
        read_table(old)


def test_xlsx_corrupt_zip(tmp_path: Path) -> None:
    path = write(tmp_path, "data.xlsx", b"PK\x03\x04" + b"not really a zip" * 4)
    with pytest.raises(IngestError, match="cannot open as an Excel workbook"):
        read_table(path)


def test_formats_constant() -> None:
    assert FORMATS == ("csv", "tsv", "jsonl", "json", "parquet", "xlsx")


def test_an_unterminated_quote_that_merges_rows_is_an_error_naming_its_line(
    tmp_path: Path,
) -> None:
    # Line 3 opens a quote that closes on line 5 ("5" screen"): three rows would read as one.
    merged = 'text,label\nfine,pos\n"great phone,pos\nbattery bad,neg\nthe 5" screen,pos\nok,neg\n'
    with pytest.raises(IngestError) as caught:
        read_table(write(tmp_path, "merged.csv", merged))
    message = str(caught.value)
    assert one_line(message)
    assert message.startswith("merged.csv: line 3: a quote opened on this line is not closed")
    assert "lines 3-5 read as one row" in message
    # Never closed: the rest of the file would be one cell.
    to_the_end = 'text,label\nfine,pos\n"great phone,pos\nbattery bad,neg\n'
    with pytest.raises(IngestError, match="to_the_end.csv: line 3: a quote opened"):
        read_table(write(tmp_path, "to_the_end.csv", to_the_end))
    # A real multi-line cell still reads as one cell.
    cell = 'text,label\n"Hi there\nsee you soon, bye",pos\nnext,neg\n'
    table = read_table(write(tmp_path, "cell.csv", cell))
    assert [row["text"] for row in table.rows] == ["Hi there\nsee you soon, bye", "next"]
