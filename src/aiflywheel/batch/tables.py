"""Tables read and written a chunk at a time: CSV / TSV, JSON Lines, Parquet.

``TableReader`` gives one column's values in chunks of rows (never the whole file in
memory); ``write_part`` writes a chunk of output rows as one file; ``concatenate`` joins
the parts into the final file, one part in memory at a time. Every problem a user can
cause (missing or unreadable file, unknown format, missing column, a line that is not
JSON, bytes that are not UTF-8, a corrupt Parquet file) is a one-line ``IngestError`` or
``DataError`` naming the file and what was expected.
"""

from __future__ import annotations

import codecs
import csv
import json
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from aiflywheel.data.spreadsheet import neutralize_cell
from aiflywheel.errors import DataError, IngestError, require_module

FORMATS: dict[str, str] = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".parquet": "parquet",
    ".pq": "parquet",
}
PART_SUFFIX = {"csv": ".csv", "tsv": ".tsv", "jsonl": ".jsonl", "parquet": ".parquet"}
_DELIMITER = {"csv": ",", "tsv": "\t"}
_INSTALL = "pip install 'aiflywheel[formats]'"
_FIELD_SIZE_LIMIT = 2**31 - 1


def table_format(path: Path, *, what: str) -> str:
    """The format of ``path`` from its extension; a DataError naming the ones known."""
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        known = ", ".join(FORMATS)
        got = repr(path.suffix) if path.suffix else "no extension"
        raise DataError(f"{what} {path}: unknown format ({got}); use one of {known}")
    return fmt


def _pyarrow_parquet():
    require_module("pyarrow", what="Parquet files", install=_INSTALL)
    import pyarrow.parquet as pq

    return pq


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class TableReader:
    """One column of a table file, read in chunks of ``chunk_rows`` rows.

    Values are raw: ``str`` from CSV, any JSON value (or None when a line lacks the
    field) from JSON Lines, Python values from Parquet.
    """

    def __init__(self, path: Path, column: str) -> None:
        self.path = Path(path)
        self.column = column
        self.format = table_format(self.path, what="input")
        self._check_file()
        self.columns = self._header()
        if column not in self.columns:
            shown = ", ".join(map(repr, self.columns[:20])) or "none"
            raise IngestError(
                f"{self.path} has no column {column!r} (columns: {shown}); "
                "name the input column with --column"
            )

    def _check_file(self) -> None:
        if not self.path.exists():
            raise IngestError(f"cannot read {self.path}: no such file")
        if self.path.is_dir():
            raise IngestError(f"cannot read {self.path}: it is a folder, not a file")
        try:
            with self.path.open("rb") as handle:
                handle.read(1)
        except OSError as exc:
            raise IngestError(f"cannot read {self.path}: {exc.strerror or exc}") from None

    # -- the header: which columns the file has ---------------------------------------
    def _header(self) -> list[str]:
        if self.format == "parquet":
            return list(self._parquet().schema_arrow.names)
        if self.format == "jsonl":
            for _, record in self._jsonl_records():
                return list(record)
            raise IngestError(f"{self.path} holds no JSON lines; expected one object a line")
        for record in self._csv_records():
            return [str(name).strip() for name in record]
        raise IngestError(f"{self.path} is empty; expected a header line naming the columns")

    # -- rows ------------------------------------------------------------------------
    def count(self) -> int:
        """How many rows the file holds (a streamed pass; Parquet reads its metadata)."""
        if self.format == "parquet":
            return int(self._parquet().metadata.num_rows)
        return sum(1 for _ in self.values())

    def chunks(self, chunk_rows: int, *, skip: int = 0) -> Iterator[list[Any]]:
        """The column's values, ``chunk_rows`` at a time, after the first ``skip`` rows."""
        if self.format == "parquet":
            yield from self._parquet_chunks(chunk_rows, skip)
            return
        chunk: list[Any] = []
        for index, value in enumerate(self.values()):
            if index < skip:
                continue
            chunk.append(value)
            if len(chunk) == chunk_rows:
                yield chunk
                chunk = []
        if chunk:
            yield chunk

    def values(self) -> Iterator[Any]:
        """Every row's value of the column (CSV and JSON Lines), streamed."""
        if self.format == "jsonl":
            for _, record in self._jsonl_records():
                yield record.get(self.column)
            return
        records = self._csv_records()
        header = [str(name).strip() for name in next(records)]
        position = header.index(self.column)
        for record in records:
            if not any(cell.strip() for cell in record):
                continue  # a blank line is not a row
            yield record[position] if position < len(record) else None

    def _csv_records(self) -> Iterator[list[str]]:
        csv.field_size_limit(_FIELD_SIZE_LIMIT)
        with self.path.open(encoding="utf-8-sig", newline="") as handle:
            reader = csv.reader(handle, delimiter=_DELIMITER[self.format], strict=True)
            try:
                yield from reader
            except UnicodeDecodeError:
                raise IngestError(
                    f"{self.path} line {_first_undecodable_line(self.path)}: bytes that are "
                    "not UTF-8 text; save the file as UTF-8"
                ) from None
            except csv.Error as exc:
                raise IngestError(
                    f"{self.path} line {reader.line_num}: not valid CSV ({_first_line(exc)})"
                ) from None

    def _jsonl_records(self) -> Iterator[tuple[int, dict[str, Any]]]:
        with self.path.open("rb") as handle:
            for number, raw in enumerate(handle, 1):
                try:
                    line = raw.decode("utf-8-sig" if number == 1 else "utf-8")
                except UnicodeDecodeError:
                    raise IngestError(
                        f"{self.path} line {number}: bytes that are not UTF-8 text; "
                        "save the file as UTF-8"
                    ) from None
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except ValueError as exc:
                    raise IngestError(
                        f"{self.path} line {number}: not valid JSON ({_first_line(exc)}); "
                        "expected one JSON object a line"
                    ) from None
                if not isinstance(record, dict):
                    raise IngestError(
                        f"{self.path} line {number}: a JSON {type(record).__name__}, "
                        "expected one JSON object a line"
                    )
                yield number, record

    def _parquet(self):
        pq = _pyarrow_parquet()
        try:
            return pq.ParquetFile(self.path)
        except Exception as exc:  # pyarrow raises ArrowInvalid / OSError on a bad file
            raise IngestError(
                f"{self.path} is not a readable Parquet file ({_first_line(exc)})"
            ) from None

    def _parquet_chunks(self, chunk_rows: int, skip: int) -> Iterator[list[Any]]:
        source = self._parquet()
        groups, before = [], 0
        for index in range(source.metadata.num_row_groups):  # skip whole row groups unread
            rows = source.metadata.row_group(index).num_rows
            if not groups and before + rows <= skip:
                before += rows
                continue
            groups.append(index)
        if not groups:
            return
        pending: list[Any] = []
        to_drop = skip - before
        try:
            for batch in source.iter_batches(
                batch_size=chunk_rows, columns=[self.column], row_groups=groups
            ):
                values = batch.column(0).to_pylist()
                if to_drop:
                    dropped = min(to_drop, len(values))
                    values, to_drop = values[dropped:], to_drop - dropped
                pending.extend(values)
                while len(pending) >= chunk_rows:
                    yield pending[:chunk_rows]
                    pending = pending[chunk_rows:]
        except OSError as exc:
            raise IngestError(
                f"{self.path} is not a readable Parquet file ({_first_line(exc)})"
            ) from None
        if pending:
            yield pending


def _first_undecodable_line(path: Path) -> int:
    """The number of the first line of ``path`` that is not UTF-8 (read again, streamed:
    a text reader fails a whole block at once, not at the line)."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    with path.open("rb") as handle:
        for number, line in enumerate(handle, 1):
            try:
                decoder.decode(line)
            except UnicodeDecodeError:
                return number
    return number


# -- writing ----------------------------------------------------------------------------


def write_part(path: Path, fmt: str, columns: Sequence[str], rows: list[dict[str, Any]]) -> None:
    """Write ``rows`` (dicts over ``columns``) as one part file (no header for CSV).

    Values that are dicts are written as JSON objects in JSON Lines and as JSON text in
    CSV and Parquet. The caller renames the file into place.
    """
    if fmt == "jsonl":
        with path.open("w", encoding="utf-8") as handle:
            for row in rows:
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        return
    flat = [{key: _flat(row[key]) for key in columns} for row in rows]
    if fmt == "parquet":
        pa = require_module("pyarrow", what="Parquet files", install=_INSTALL)
        pq = _pyarrow_parquet()
        table = pa.Table.from_pylist(flat, schema=_schema(pa, columns))
        pq.write_table(table, path)
        return
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, delimiter=_DELIMITER[fmt])
        for row in flat:
            writer.writerow(
                [neutralize_cell("" if row[key] is None else str(row[key])) for key in columns]
            )


def _flat(value: Any) -> Any:
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False, sort_keys=True)
    return value


def _schema(pa, columns: Sequence[str]):
    """Output columns: ``row`` and ``version`` are integers, the rest text."""
    integers = {"row", "version"}
    return pa.schema([(name, pa.int64() if name in integers else pa.string()) for name in columns])


def concatenate(parts: Sequence[Path], fmt: str, columns: Sequence[str], target: Path) -> None:
    """Join ``parts`` (in order) into ``target``, one part in memory at a time."""
    if fmt == "parquet":
        pa = require_module("pyarrow", what="Parquet files", install=_INSTALL)
        pq = _pyarrow_parquet()
        with pq.ParquetWriter(target, _schema(pa, columns)) as writer:
            for part in parts:
                writer.write_table(pq.read_table(part))
        return
    with target.open("wb") as out:
        if fmt in _DELIMITER:
            header = _DELIMITER[fmt].join(_csv_cell(neutralize_cell(name), fmt) for name in columns)
            out.write((header + "\r\n").encode("utf-8"))
        for part in parts:
            with part.open("rb") as handle:
                shutil.copyfileobj(handle, out)


def _csv_cell(value: str, fmt: str) -> str:
    import io

    buffer = io.StringIO()
    csv.writer(buffer, delimiter=_DELIMITER[fmt], lineterminator="").writerow([value])
    return buffer.getvalue()


__all__ = ["FORMATS", "TableReader", "concatenate", "table_format", "write_part"]
