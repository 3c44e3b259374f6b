"""Raw file readers under the ingest stage: one table of raw values from one file.

``read_table`` turns a CSV, TSV, JSON Lines, JSON, Parquet or Excel file into a
``RawTable``: column names, rows of raw values (``str``, ``int``, ``float``, ``bool``
or ``None``), the line each row came from, the rows skipped as malformed and one-line
notes about what was guessed (encoding, delimiter, sheet). It does not map columns,
clean or drop anything else; that is the ingest stage's job.

Every problem a user can cause (missing, empty or binary file, undecodable bytes,
wrong delimiter, duplicate header names, invalid JSON, a corrupt workbook) is raised as
a one-line ``IngestError`` naming the file, the bad value and what was expected.
"""

from __future__ import annotations

import codecs
import csv
import datetime as dt
import io
import json
import math
import zipfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol

from aiflywheel.errors import IngestError, require_module

__all__ = ["FORMATS", "RawTable", "read_table"]

FORMATS: tuple[str, ...] = ("csv", "tsv", "jsonl", "json", "parquet", "xlsx")
"""The formats ``read_table`` understands."""

_EXTENSIONS: dict[str, str] = {
    ".csv": "csv",
    ".txt": "csv",
    ".tsv": "tsv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".xlsx": "xlsx",
}
_TEXT_FORMATS = ("csv", "tsv", "jsonl", "json")
_FORMAT_LABELS = {"csv": "CSV", "tsv": "TSV", "jsonl": "JSON Lines", "json": "JSON"}
_INSTALL_FORMATS = "pip install 'aiflywheel[formats]'"

_BOMS: tuple[tuple[bytes, str], ...] = (
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"PK\x03\x04", "a ZIP/xlsx archive"),
    (b"PK\x05\x06", "a ZIP/xlsx archive"),
    (b"PAR1", "a Parquet file"),
    (b"%PDF", "a PDF document"),
    (b"\x89PNG", "a PNG image"),
    (b"GIF8", "a GIF image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"\x7fELF", "an ELF executable"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"\xd0\xcf\x11\xe0", "an old Excel .xls / OLE2 file"),
    (b"SQLite format 3\x00", "an SQLite database"),
    (b"\xfd7zXZ\x00", "an xz archive"),
    (b"7z\xbc\xaf\x27\x1c", "a 7z archive"),
)
_SNIFF_BYTES = 8192
_SNIFF_CHARS = 65536
_DELIMITERS: tuple[str, ...] = (",", "\t", ";", "|")
_DELIMITER_NAMES = {",": "comma", "\t": "tab", ";": "semicolon", "|": "pipe"}
_DELIMITER_ALIASES = {"\\t": "\t", "tab": "\t"}
_CONSISTENT = 0.9
_FIELD_SIZE_LIMIT = 2**31 - 1
_SHOW_LINES = 5
_ENCODING_HINT = "re-export the file as UTF-8 or set data.encoding"


class _CsvReader(Protocol):
    """What the readers use of a ``csv.reader`` object."""

    line_num: int

    def __iter__(self) -> Iterator[list[str]]: ...

    def __next__(self) -> list[str]: ...


@dataclass
class RawTable:
    """One file read as a table of raw values, before any column mapping or cleaning.

    Every row has every column, in ``columns`` order; a value a row lacks (a key
    absent from a JSON object, a cell outside a short sheet row) is ``None``.
    CSV/TSV values are the strings exactly as written (no type guessing).
    """

    path: Path
    format: str
    encoding: str | None
    columns: list[str]
    rows: list[dict[str, object]]
    line_numbers: list[int]
    malformed: list[tuple[int, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def read_table(
    path: str | Path,
    *,
    format: str = "auto",
    encoding: str = "auto",
    delimiter: str | None = None,
    sheet: str | None = None,
) -> RawTable:
    """Read ``path`` into a ``RawTable``.

    ``format`` is one of ``FORMATS`` or ``"auto"`` (by file extension). ``encoding``
    applies to text formats: ``"auto"`` detects a BOM, then tries UTF-8, then GB18030,
    then charset-normalizer's best guess, and decodes files that mix UTF-8 and GB18030
    lines line by line. ``delimiter`` applies to CSV/TSV (``None``: sniffed for CSV,
    tab for TSV). ``sheet`` names the Excel sheet (``None``: the first one).
    Raises ``IngestError`` for anything that cannot be read.
    """
    path = Path(path)
    _check_is_file(path)
    fmt = _resolve_format(path, format)
    if fmt == "parquet":
        return _read_parquet(path)
    if fmt == "xlsx":
        return _read_xlsx(path, sheet)
    data = _read_bytes(path)
    text, used_encoding, notes = _decode(path, data, fmt, encoding)
    if not text.strip():
        raise IngestError(f"{path.name} is empty: it has no data rows")
    if fmt == "jsonl":
        table = _read_jsonl(path, text)
    elif fmt == "json":
        table = _read_json(path, text)
    else:
        table = _read_delimited(path, text, fmt, delimiter)
    table.encoding = used_encoding
    table.notes[:0] = notes
    return table


# ---------------------------------------------------------------- path and format


def _check_is_file(path: Path) -> None:
    """Raise unless ``path`` is an existing regular file."""
    if not path.exists():
        raise IngestError(f"data file not found: {path}")
    if path.is_dir():
        raise IngestError(f"data path is a directory, expected a file: {path}")


def _resolve_format(path: Path, fmt: str) -> str:
    """Return the format to read ``path`` as: ``fmt`` itself, or guessed from the suffix."""
    allowed = ", ".join(FORMATS)
    if fmt != "auto":
        if fmt not in FORMATS:
            raise IngestError(f"{path.name}: unknown data format {fmt!r}; expected auto, {allowed}")
        return fmt
    suffix = path.suffix.lower()
    if suffix not in _EXTENSIONS:
        shown = suffix or "(none)"
        extensions = " ".join(_EXTENSIONS)
        raise IngestError(
            f"{path.name}: cannot tell the format from the extension {shown!r}; "
            f"expected one of {extensions}, or set data.format to one of {allowed}"
        )
    return _EXTENSIONS[suffix]


def _read_bytes(path: Path) -> bytes:
    """Read the whole file, turning OS errors into ``IngestError``."""
    try:
        return path.read_bytes()
    except OSError as exc:
        raise IngestError(f"cannot read data file {path}: {exc.strerror or exc}") from exc


# ---------------------------------------------------------------- binary detection


def _magic_description(head: bytes) -> str | None:
    """Say what kind of binary file ``head`` starts like, or ``None``."""
    for magic, description in _MAGIC:
        if head.startswith(magic):
            return description
    return None


def _is_xlsx_archive(path: Path) -> bool:
    """Whether the ZIP archive at ``path`` is an Excel workbook."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
    except (zipfile.BadZipFile, OSError):
        return False
    return "xl/workbook.xml" in names


def _check_not_binary(path: Path, data: bytes, fmt: str, *, allow_nul: bool) -> None:
    """Raise if ``data`` looks like a binary file rather than ``fmt`` text."""
    expected = f"expected {_FORMAT_LABELS[fmt]} text"
    description = _magic_description(data[:16])
    if description is None:
        if allow_nul or b"\x00" not in data[:_SNIFF_BYTES]:
            return
        raise IngestError(
            f"{path.name} looks like a binary file (it contains NUL bytes), {expected}"
        )
    hint = ""
    if description == "a Parquet file":
        hint = "; it is a Parquet file: rename it to .parquet or set data.format to 'parquet'"
    elif description.startswith("a ZIP") and _is_xlsx_archive(path):
        hint = "; it is an Excel workbook: rename it to .xlsx or set data.format to 'xlsx'"
    elif description.startswith("an old Excel"):
        hint = "; re-save it as .xlsx or CSV"
    raise IngestError(
        f"{path.name} looks like a binary file (starts like {description}), {expected}{hint}"
    )


# ---------------------------------------------------------------- decoding


def _decode(path: Path, data: bytes, fmt: str, encoding: str) -> tuple[str, str, list[str]]:
    """Decode ``data`` to text; return the text, the encoding used and notes."""
    if not data.strip():
        raise IngestError(f"{path.name} is empty: it has no data rows")
    if encoding != "auto":
        return _decode_explicit(path, data, fmt, encoding)
    for bom, codec in _BOMS:
        if data.startswith(bom):
            _check_not_binary(path, data[len(bom) :], fmt, allow_nul=codec != "utf-8-sig")
            text = _decode_strict(path, data, codec, hint=_ENCODING_HINT)
            notes = (
                [] if codec == "utf-8-sig" else [f"decoded as {codec.upper()} (byte order mark)"]
            )
            return text.lstrip("\ufeff"), codec, notes
    _check_not_binary(path, data, fmt, allow_nul=False)
    try:
        return data.decode("utf-8"), "utf-8", []
    except UnicodeDecodeError:
        return _decode_guessed(path, data)


def _decode_explicit(
    path: Path, data: bytes, fmt: str, encoding: str
) -> tuple[str, str, list[str]]:
    """Decode with the encoding the user named, naming the first line that fails."""
    try:
        codec = codecs.lookup(encoding).name
    except LookupError as exc:
        raise IngestError(
            f"{path.name}: unknown encoding {encoding!r}; expected a Python codec name "
            "such as 'utf-8', 'gb18030', 'utf-16' or 'cp1252', or 'auto'"
        ) from exc
    _check_not_binary(path, data, fmt, allow_nul=codec.startswith(("utf-16", "utf-32")))
    hint = "check data.encoding or set it to 'auto'"
    text = _decode_strict(path, data, codec, hint=hint, name=encoding)
    return text.lstrip("\ufeff"), codec, []


def _decode_strict(
    path: Path, data: bytes, codec: str, *, hint: str, name: str | None = None
) -> str:
    """Decode all of ``data`` with ``codec`` or raise naming the failing line."""
    try:
        return data.decode(codec)
    except UnicodeDecodeError as exc:
        line = data[: exc.start].decode(codec, errors="replace").count("\n") + 1
        bad = data[exc.start : exc.start + 1].hex()
        raise IngestError(
            f"{path.name}: line {line} cannot be decoded as {name or codec!r} "
            f"(byte 0x{bad}); {hint}"
        ) from exc
    except (UnicodeError, LookupError) as exc:
        raise IngestError(
            f"{path.name}: cannot be decoded as {name or codec!r} ({exc}); {hint}"
        ) from exc


def _line_kind(line: bytes) -> str:
    """Classify one line: ``ascii``, ``utf-8``, ``gb18030``, ``either`` or ``bad``.

    ``either`` is a line valid in both encodings whose UTF-8 reading has only two-byte
    characters (below U+0800): short GBK text is often accidentally valid UTF-8 that
    way (GBK "小" is UTF-8 "С"), so such a line is no evidence of UTF-8.
    """
    if line.isascii():
        return "ascii"
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    try:
        line.decode("gb18030")
    except UnicodeDecodeError:
        return "bad" if text is None else "utf-8"
    if text is None:
        return "gb18030"
    return "utf-8" if any(ord(char) >= 0x800 for char in text) else "either"


def _decode_guessed(path: Path, data: bytes) -> tuple[str, str, list[str]]:
    """Decode a file that is not valid UTF-8: GB18030, mixed lines, or a guess."""
    lines = data.split(b"\n")
    if lines and not lines[-1]:
        lines.pop()
    kinds = [_line_kind(line) for line in lines]
    counts = {kind: kinds.count(kind) for kind in ("utf-8", "gb18030", "either", "bad")}
    first_bad = kinds.index("bad") + 1 if counts["bad"] else 0
    if counts["utf-8"]:
        if first_bad:
            raise _undecodable_line(path, first_bad, "neither UTF-8 nor GB18030")
        return _decode_mixed(lines, kinds)
    if not counts["bad"]:
        return data.decode("gb18030"), "gb18030", ["decoded as GB18030"]
    if counts["bad"] * 10 <= counts["gb18030"] + counts["either"]:
        raise _undecodable_line(path, first_bad, "not GB18030 like the rest of the file")
    return _decode_best_guess(path, data, first_bad)


def _decode_mixed(lines: list[bytes], kinds: list[str]) -> tuple[str, str, list[str]]:
    """Decode each line as UTF-8 or, where that fails, GB18030."""
    decoded = [
        line.decode("gb18030" if kind == "gb18030" else "utf-8")
        for line, kind in zip(lines, kinds, strict=True)
    ]
    n_gb = kinds.count("gb18030")
    note = f"mixed encodings: {n_gb} of {len(lines)} lines were GB18030, the rest UTF-8"
    return "\n".join(decoded) + "\n", "utf-8+gb18030", [note]


def _decode_best_guess(path: Path, data: bytes, first_bad: int) -> tuple[str, str, list[str]]:
    """Decode with charset-normalizer's best guess, or raise naming ``first_bad``."""
    import charset_normalizer

    best = charset_normalizer.from_bytes(data).best()
    if best is None or best.encoding is None:
        raise _undecodable_line(path, first_bad, "neither UTF-8 nor GB18030")
    codec = codecs.lookup(best.encoding).name
    text = _decode_strict(path, data, codec, hint=_ENCODING_HINT)
    note = f"decoded as {codec} (charset-normalizer's best guess: not UTF-8 or GB18030)"
    return text.lstrip("\ufeff"), codec, [note]


def _undecodable_line(path: Path, line: int, why: str) -> IngestError:
    """The error for a line whose bytes cannot be decoded."""
    return IngestError(f"{path.name}: line {line} cannot be decoded ({why}); {_ENCODING_HINT}")


# ---------------------------------------------------------------- CSV / TSV


def _read_delimited(path: Path, text: str, fmt: str, delimiter: str | None) -> RawTable:
    """Read CSV/TSV text with the stdlib csv module."""
    sample, truncated = _sample(text)
    notes: list[str] = []
    explicit = _normalize_delimiter(path, delimiter)
    if explicit is None and fmt == "tsv":
        explicit = "\t"
    if explicit is None:
        chosen = _sniff_delimiter(sample, truncated)
        if chosen is None:
            chosen = ","
        elif chosen != ",":
            notes.append(f"delimiter sniffed as {chosen!r} ({_DELIMITER_NAMES[chosen]})")
    else:
        chosen = explicit
    if csv.field_size_limit() < _FIELD_SIZE_LIMIT:
        csv.field_size_limit(_FIELD_SIZE_LIMIT)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=chosen)
    header = _read_header(path, reader)
    if explicit is not None:
        _check_delimiter_fits(path, header, sample, truncated, explicit)
    columns = _clean_header(path, header)
    table = RawTable(path, fmt, None, columns, [], [], [], notes)
    _read_csv_rows(path, reader, table, _QuoteCheck(path, text, chosen, len(columns)))
    _require_rows(path, table)
    return table


class _QuoteCheck:
    """Tells an unterminated quote from a quoted cell that spans lines.

    A cell opened by a quote that is never closed swallows the rows after it (up to the
    next quote, or the end of the file) into one record. A record spanning several lines
    whose every line, read alone with quotes as plain characters, is a complete row of
    the table's width, is taken for such a merge: ``IngestError`` names the line of the
    quote. A real multi-line cell (a comment with line breaks) has lines that are not
    rows of their own, and is read as one cell.
    """

    def __init__(self, path: Path, text: str, delimiter: str, width: int) -> None:
        self.path, self.text, self.delimiter, self.width = path, text, delimiter, width
        self._lines: list[str] | None = None

    def check(self, start: int, end: int) -> None:
        """Raise when the record on lines ``start``..``end`` merges rows (see the class)."""
        if end <= start or self.width < 2:
            return
        if self._lines is None:  # the lines as the csv module counts them
            self._lines = list(io.StringIO(self.text, newline=""))
        lines = [line.rstrip("\r\n") for line in self._lines[start - 1 : end]]
        if not lines[0].count('"'):
            return
        alone = csv.reader(lines, delimiter=self.delimiter, quoting=csv.QUOTE_NONE)
        if all(len(fields) == self.width for fields in alone):
            raise IngestError(
                f"{self.path.name}: line {start}: a quote opened on this line is not closed "
                f"before the line ends, so lines {start}-{end} read as one row; close the "
                'quote, write a quote inside a quoted cell as "", or remove it'
            )


def _sample(text: str) -> tuple[str, bool]:
    """The first ~64 KB of ``text`` and whether it was cut short."""
    if len(text) <= _SNIFF_CHARS:
        return text, False
    return text[:_SNIFF_CHARS], True


def _normalize_delimiter(path: Path, delimiter: str | None) -> str | None:
    """Validate a user-given delimiter; accept ``\\t`` and ``tab`` for a tab."""
    if delimiter is None:
        return None
    delimiter = _DELIMITER_ALIASES.get(delimiter, delimiter)
    if len(delimiter) != 1 or delimiter in '"\r\n':
        raise IngestError(
            f"{path.name}: delimiter must be one character other than a quote or newline, "
            f"got {delimiter!r}"
        )
    return delimiter


def _sample_records(sample: str, truncated: bool, delimiter: str) -> list[list[str]]:
    """Parse the sample with ``delimiter``; drop blank lines and a cut-off last record."""
    try:
        records = [r for r in csv.reader(io.StringIO(sample, newline=""), delimiter=delimiter)]
    except csv.Error:
        return []
    if truncated and records:
        records.pop()
    return [r for r in records if not _is_blank(r)]


def _consistency(records: list[list[str]]) -> float:
    """Share of data records with as many fields as the header (1.0 with no data)."""
    if len(records) < 2:
        return 1.0
    width = len(records[0])
    return sum(len(r) == width for r in records[1:]) / (len(records) - 1)


def _sniff_delimiter(sample: str, truncated: bool) -> str | None:
    """Pick the candidate delimiter giving >1 columns most consistently, or ``None``."""
    best: tuple[float, int] | None = None
    chosen = None
    for rank, candidate in enumerate(_DELIMITERS):
        records = _sample_records(sample, truncated, candidate)
        if not records or len(records[0]) < 2:
            continue
        score = (_consistency(records), -rank)
        if best is None or score > best:
            best, chosen = score, candidate
    return chosen


def _check_delimiter_fits(
    path: Path, header: list[str], sample: str, truncated: bool, delimiter: str
) -> None:
    """Raise if ``delimiter`` gives one column but another delimiter clearly fits."""
    if len(header) != 1:
        return
    for candidate in _DELIMITERS:
        if candidate == delimiter or candidate not in header[0]:
            continue
        records = _sample_records(sample, truncated, candidate)
        if records and len(records[0]) > 1 and _consistency(records) >= _CONSISTENT:
            raise IngestError(
                f"{path.name}: delimiter {delimiter!r} gives one column {header[0]!r}; the "
                f"file looks {_DELIMITER_NAMES[candidate]}-separated: set data.delimiter "
                f"to {candidate!r}"
            )


def _is_blank(row: Sequence[str]) -> bool:
    """Whether a parsed CSV record is a blank line."""
    return not row or (len(row) == 1 and not row[0].strip())


def _read_header(path: Path, reader: _CsvReader) -> list[str]:
    """Return the first non-blank record of ``reader``."""
    for row in _csv_records(path, reader):
        if not _is_blank(row):
            return row
    raise IngestError(f"{path.name} is empty: it has no data rows")


def _csv_records(path: Path, reader: _CsvReader) -> Iterator[list[str]]:
    """Iterate ``reader``, turning ``csv.Error`` into ``IngestError`` with the line."""
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise IngestError(
                f"{path.name}: line {reader.line_num} cannot be parsed as CSV: {exc}"
            ) from exc
        yield row


def _clean_header(path: Path, header: Sequence[object]) -> list[str]:
    """Strip header names; raise on empty or duplicate names."""
    names = [_header_name(value) for value in header]
    empty = [str(i) for i, name in enumerate(names, start=1) if not name]
    if empty:
        raise IngestError(
            f"{path.name}: header has an empty column name at position {', '.join(empty)}; "
            "expected a name for every column"
        )
    seen: set[str] = set()
    duplicates: list[str] = []
    for name in names:
        if name in seen and name not in duplicates:
            duplicates.append(name)
        seen.add(name)
    if duplicates:
        shown = ", ".join(repr(name) for name in duplicates)
        raise IngestError(f"{path.name}: header names must be unique, got duplicates {shown}")
    return names


def _header_name(value: object) -> str:
    """One header name as a stripped string (a whole float like 2023.0 reads as 2023)."""
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).replace("\ufeff", "").strip()


def _read_csv_rows(
    path: Path, reader: _CsvReader, table: RawTable, quotes: _QuoteCheck | None = None
) -> None:
    """Append well-formed records to ``table``; record the others as malformed; raise
    ``IngestError`` on an unterminated quote that merges rows (``quotes``)."""
    columns = table.columns
    width = len(columns)
    line = reader.line_num + 1
    for row in _csv_records(path, reader):
        start, line = line, reader.line_num + 1
        if quotes is not None:
            quotes.check(start, reader.line_num)
        if len(row) == width:
            table.rows.append(dict(zip(columns, row, strict=True)))
            table.line_numbers.append(start)
        elif not _is_blank(row):
            table.malformed.append((start, f"expected {width} fields, got {len(row)}"))


def _require_rows(path: Path, table: RawTable) -> None:
    """Raise if ``table`` has no rows, naming malformed lines when there were some."""
    if table.rows:
        return
    if not table.malformed:
        raise IngestError(f"{path.name} has a header but no data rows")
    shown = ", ".join(str(line) for line, _ in table.malformed[:_SHOW_LINES])
    more = ", ..." if len(table.malformed) > _SHOW_LINES else ""
    reason = table.malformed[0][1]
    raise IngestError(
        f"{path.name} has no data rows: all {len(table.malformed)} rows are malformed "
        f"(lines {shown}{more}; first: {reason})"
    )


# ---------------------------------------------------------------- JSON Lines / JSON


def _raw_value(value: object) -> object:
    """Turn a parsed value into a raw value: str, int, float, bool or None."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return None if math.isnan(value) else value
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, Decimal):
        return str(value)
    return str(value)


def _json_kind(value: object) -> str:
    """Name the JSON type of ``value`` for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _collect_objects(
    path: Path, fmt: str, items: Iterable[tuple[int, dict[str, object]]]
) -> RawTable:
    """Build a table from (line, object) pairs; columns are the union of keys."""
    columns: dict[str, None] = {}
    parsed: list[dict[str, object]] = []
    lines: list[int] = []
    for line, obj in items:
        for key in obj:
            columns.setdefault(key)
        parsed.append(obj)
        lines.append(line)
    names = list(columns)
    rows = [{name: _raw_value(obj.get(name)) for name in names} for obj in parsed]
    return RawTable(path, fmt, None, names, rows, lines, [], [])


def _read_jsonl(path: Path, text: str) -> RawTable:
    """Read JSON Lines: one object per non-blank line; others are malformed."""
    objects: list[tuple[int, dict[str, object]]] = []
    malformed: list[tuple[int, str]] = []
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            malformed.append((number, f"invalid JSON: {exc.msg} at column {exc.colno}"))
            continue
        except (ValueError, RecursionError) as exc:
            malformed.append((number, f"invalid JSON: {_first_line(exc)}"))
            continue
        if isinstance(value, dict):
            objects.append((number, value))
        else:
            malformed.append((number, f"not an object, got {_json_kind(value)}"))
    if not objects:
        hint = ""
        if text.lstrip().startswith("["):
            hint = "; it looks like one JSON array: rename it to .json or set data.format to 'json'"
        shown = ", ".join(str(line) for line, _ in malformed[:_SHOW_LINES])
        more = ", ..." if len(malformed) > _SHOW_LINES else ""
        raise IngestError(
            f"{path.name}: no line is a JSON object (bad lines {shown}{more}; first: "
            f"{malformed[0][1]}){hint}"
        )
    table = _collect_objects(path, "jsonl", objects)
    table.malformed = malformed
    return table


def _read_json(path: Path, text: str) -> RawTable:
    """Read a JSON array of objects, or an object holding one under its only key."""
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        hint = ""
        if exc.msg == "Extra data":
            hint = (
                "; it looks like JSON Lines (one object per line): rename it to .jsonl or "
                "set data.format to 'jsonl'"
            )
        raise IngestError(
            f"{path.name}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}{hint}"
        ) from exc
    except (ValueError, RecursionError) as exc:
        raise IngestError(f"{path.name}: cannot parse JSON: {_first_line(exc)}") from exc
    notes: list[str] = []
    items = document
    if isinstance(document, dict) and len(document) == 1:
        ((key, inner),) = document.items()
        if isinstance(inner, list):
            items = inner
            notes.append(f"read the array under key {key!r}")
    if not isinstance(items, list):
        raise IngestError(
            f"{path.name}: expected a JSON array of objects (or an object with one key "
            f"holding one), found {_describe_json_document(document)}"
        )
    if not items:
        raise IngestError(f"{path.name} has no data rows: the JSON array is empty")
    objects = [(i, item) for i, item in enumerate(items, start=1) if isinstance(item, dict)]
    malformed = [
        (i, f"not an object, got {_json_kind(item)}")
        for i, item in enumerate(items, start=1)
        if not isinstance(item, dict)
    ]
    table = _collect_objects(path, "json", objects)
    table.malformed = malformed
    table.notes = notes
    _require_rows(path, table)
    return table


def _describe_json_document(document: object) -> str:
    """Describe a JSON document that is not an array of objects."""
    if isinstance(document, dict):
        keys = ", ".join(repr(k) for k in list(document)[:_SHOW_LINES])
        more = ", ..." if len(document) > _SHOW_LINES else ""
        return f"an object with keys {keys}{more}" if document else "an empty object"
    return _json_kind(document)


# ---------------------------------------------------------------- Parquet


def _read_parquet(path: Path) -> RawTable:
    """Read a Parquet file with pyarrow; line numbers are row index + 1."""
    pq = require_module("pyarrow.parquet", what="reading Parquet files", install=_INSTALL_FORMATS)
    head = _read_head(path)
    if not head.startswith(b"PAR1"):
        raise IngestError(
            f"{path.name} does not look like a Parquet file (starts like "
            f"{_describe_head(head)}), expected Parquet data"
        )
    try:
        arrow_table = pq.read_table(path)
        names = list(arrow_table.column_names)
        records = arrow_table.to_pylist()
    except Exception as exc:  # pyarrow raises many types for corrupt files
        raise IngestError(
            f"{path.name}: cannot read as Parquet ({type(exc).__name__}: {_first_line(exc)})"
        ) from exc
    columns = _clean_header(path, names)
    rows = [
        {column: _raw_value(record[name]) for column, name in zip(columns, names, strict=True)}
        for record in records
    ]
    if not rows:
        raise IngestError(f"{path.name} has no data rows: the Parquet file has 0 rows")
    return RawTable(path, "parquet", None, columns, rows, list(range(1, len(rows) + 1)))


def _read_head(path: Path) -> bytes:
    """The first 16 bytes of ``path``."""
    try:
        with path.open("rb") as handle:
            return handle.read(16)
    except OSError as exc:
        raise IngestError(f"cannot read data file {path}: {exc.strerror or exc}") from exc


def _describe_head(head: bytes) -> str:
    """Say what a file starting with ``head`` looks like."""
    if not head:
        return "an empty file"
    description = _magic_description(head)
    if description is not None:
        return description
    return "text" if b"\x00" not in head else "unknown binary data"


def _first_line(exc: BaseException) -> str:
    """The first line of an exception's message."""
    message = str(exc).strip()
    return message.splitlines()[0] if message else "no details"


# ---------------------------------------------------------------- Excel


def _read_xlsx(path: Path, sheet: str | None) -> RawTable:
    """Read one sheet of an .xlsx workbook with openpyxl; line numbers are sheet rows."""
    openpyxl = require_module("openpyxl", what="reading Excel files", install=_INSTALL_FORMATS)
    head = _read_head(path)
    if not head.startswith(b"PK"):
        hint = "; re-save it as .xlsx or CSV" if head.startswith(b"\xd0\xcf\x11\xe0") else ""
        raise IngestError(
            f"{path.name} does not look like an .xlsx workbook (starts like "
            f"{_describe_head(head)}), expected an Excel .xlsx file{hint}"
        )
    try:
        workbook = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except Exception as exc:  # openpyxl/zipfile raise many types for corrupt files
        raise IngestError(
            f"{path.name}: cannot open as an Excel workbook ({type(exc).__name__}: "
            f"{_first_line(exc)})"
        ) from exc
    try:
        worksheet, notes = _pick_sheet(path, workbook, sheet)
        worksheet.reset_dimensions()
        try:
            table = _sheet_table(path, enumerate(worksheet.iter_rows(values_only=True), 1))
        except IngestError:
            raise
        except Exception as exc:  # corrupt sheet XML
            raise IngestError(
                f"{path.name}: cannot read sheet {worksheet.title!r} ({type(exc).__name__}: "
                f"{_first_line(exc)})"
            ) from exc
    finally:
        workbook.close()
    table.notes[:0] = notes
    return table


def _pick_sheet(path: Path, workbook: Any, sheet: str | None) -> tuple[Any, list[str]]:
    """Return the requested sheet (or the first) and a note naming it."""
    names: list[str] = list(workbook.sheetnames)
    if not names:
        raise IngestError(f"{path.name} has no sheets")
    if sheet is None:
        name = names[0]
    elif sheet in names:
        name = sheet
    else:
        shown = ", ".join(repr(n) for n in names)
        raise IngestError(f"{path.name} has no sheet {sheet!r}; its sheets are {shown}")
    notes = [f"read sheet {name!r} of {len(names)}"] if len(names) > 1 else []
    return workbook[name], notes


def _is_empty_cell(value: object) -> bool:
    """Whether a cell value counts as empty."""
    return value is None or (isinstance(value, str) and not value.strip())


def _sheet_table(path: Path, numbered_rows: Iterable[tuple[int, Sequence[object]]]) -> RawTable:
    """Build a table from numbered sheet rows: first non-empty row is the header."""
    header_span: tuple[int, int] | None = None
    table = RawTable(path, "xlsx", None, [], [], [])
    for number, cells in numbered_rows:
        if all(_is_empty_cell(value) for value in cells):
            continue
        if header_span is None:
            filled = [i for i, value in enumerate(cells) if not _is_empty_cell(value)]
            header_span = (filled[0], filled[-1] + 1)
            table.columns = _clean_header(path, cells[header_span[0] : header_span[1]])
            continue
        _add_sheet_row(table, number, cells, header_span)
    if header_span is None:
        raise IngestError(f"{path.name} is empty: the sheet has no data rows")
    _require_rows(path, table)
    return table


def _add_sheet_row(
    table: RawTable, number: int, cells: Sequence[object], span: tuple[int, int]
) -> None:
    """Append one sheet row, or record it as malformed if it has cells outside the header."""
    start, end = span
    outside = [
        i + 1
        for i, value in enumerate(cells)
        if (i < start or i >= end) and not _is_empty_cell(value)
    ]
    if outside:
        table.malformed.append(
            (number, f"value in column {outside[0]} outside the header's columns")
        )
        return
    values = list(cells[start:end])
    values += [None] * (end - start - len(values))
    table.rows.append(
        {column: _raw_value(value) for column, value in zip(table.columns, values, strict=True)}
    )
    table.line_numbers.append(number)
