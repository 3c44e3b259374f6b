"""Ingest: read a source, map its columns, give every row a stable id.

The text comes from one column or from several joined with
``data.columns.text_separator`` (empty cells skipped, so no dangling separators).

Rows whose text is missing are dropped as ``empty`` and rows whose label is missing
(empty, NaN, null) as ``missing_label``; both are counted, never silently lost.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from aiflywheel.data.dataset import Dataset, Record
from aiflywheel.data.demo_sources import is_demo_source, load_demo_source
from aiflywheel.data.readers import RawTable, read_table
from aiflywheel.errors import IngestError
from aiflywheel.recipe import DataConfig


@dataclass
class IngestResult:
    """What ingest read and what it kept."""

    dataset: Dataset
    source: str
    format: str
    encoding: str | None
    rows_read: int
    malformed: list[tuple[int, str]] = field(default_factory=list)
    drops: Counter = field(default_factory=Counter)
    notes: list[str] = field(default_factory=list)


def ingest(config: DataConfig, *, base_dir: Path, seed: int, labeled: bool = True) -> IngestResult:
    """Read ``config.source`` and map it to a Dataset of records."""
    table = read_source(config, base_dir=base_dir)
    mapping = config.columns
    _require_columns(table, config)
    label_column = mapping.label if labeled else None

    indices = list(range(len(table.rows)))
    if config.sample is not None and config.sample < len(indices):
        indices = sorted(random.Random(seed).sample(indices, config.sample))

    drops: Counter = Counter()
    records: list[Record] = []
    seen_ids: dict[str, int] = {}
    text_occurrences: Counter = Counter()
    for index in indices:
        row = table.rows[index]
        line = table.line_numbers[index]
        text = _row_text(row, mapping.text_columns, mapping.text_separator)
        if text is None or not text.strip():
            drops["empty"] += 1
            continue
        label = None
        if label_column is not None:
            label = _as_text(row.get(label_column))
            if label is None or not label.strip():
                drops["missing_label"] += 1
                continue
            label = label.strip()
            label = config.label_map.get(label, label)
        meta = {}
        for column in mapping.meta:
            value = _as_text(row.get(column))
            meta[column] = "" if value is None else value
        if mapping.id is not None:
            row_id = _as_text(row.get(mapping.id))
            if row_id is None or not row_id.strip():
                raise IngestError(
                    f"{table.path}: id column {mapping.id!r} is empty at line {line}; "
                    "every row needs an id (or set data.columns.id: null)"
                )
            row_id = row_id.strip()
            if row_id in seen_ids:
                raise IngestError(
                    f"{table.path}: id column {mapping.id!r} repeats value {row_id!r} "
                    f"(lines {seen_ids[row_id]} and {line}); ids must be unique"
                )
        else:
            row_id = _stable_id(text, text_occurrences)
        seen_ids[row_id] = line
        records.append(Record(id=row_id, text=text, label=label, meta=meta))

    return IngestResult(
        dataset=Dataset(records),
        source=config.source,
        format=table.format,
        encoding=table.encoding,
        rows_read=len(indices) + len(table.malformed),
        malformed=list(table.malformed),
        drops=drops,
        notes=list(table.notes),
    )


def read_source(config: DataConfig, *, base_dir: Path) -> RawTable:
    """The raw table behind ``config.source``: a demo source or a file."""
    if is_demo_source(config.source):
        return load_demo_source(config.source)
    path = Path(config.source).expanduser()
    if not path.is_absolute():
        path = base_dir / path
    return read_table(
        path,
        format=config.format,
        encoding=config.encoding,
        delimiter=config.delimiter,
        sheet=config.sheet,
    )


def _require_columns(table: RawTable, config: DataConfig) -> None:
    mapping = config.columns
    wanted = [("data.columns.text", column) for column in mapping.text_columns]
    if mapping.label is not None:
        wanted.append(("data.columns.label", mapping.label))
    if mapping.id is not None:
        wanted.append(("data.columns.id", mapping.id))
    wanted += [("data.columns.meta", column) for column in mapping.meta]
    present = set(table.columns)
    for key, column in wanted:
        if column not in present:
            shown = ", ".join(repr(c) for c in table.columns[:30])
            more = f" and {len(table.columns) - 30} more" if len(table.columns) > 30 else ""
            raise IngestError(
                f"{table.path}: column {column!r} ({key}) not found; columns are: {shown}{more}"
            )


def _row_text(row: dict[str, object], columns: list[str], separator: str) -> str | None:
    """The row's text: one column's cell as it is, or several columns' cells trimmed and
    joined with ``separator``, skipping empty ones (None when all are empty)."""
    if len(columns) == 1:
        return _as_text(row.get(columns[0]))
    parts = [_as_text(row.get(column)) for column in columns]
    kept = [part.strip() for part in parts if part is not None and part.strip()]
    return separator.join(kept) if kept else None


def _as_text(value: object) -> str | None:
    """A cell as text; None for missing values (None, NaN)."""
    if value is None:
        return None
    if isinstance(value, float):
        if math.isnan(value):
            return None
        if value.is_integer():
            return str(int(value))
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _stable_id(text: str, occurrences: Counter) -> str:
    """Content-derived id: the same text gives the same id in any row order."""
    digest = hashlib.sha1(text.encode("utf-8")).hexdigest()[:12]
    occurrences[digest] += 1
    count = occurrences[digest]
    return f"r{digest}" if count == 1 else f"r{digest}-{count}"
