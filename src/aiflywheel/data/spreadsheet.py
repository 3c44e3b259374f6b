"""CSV files people open in a spreadsheet: formula cells neutralized, and restored on read.

A cell that starts with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return is run as a
formula by Excel, LibreOffice and Google Sheets (CSV injection: ``=HYPERLINK(...)``,
``=cmd|' /C calc'!A0``). Following the OWASP advice, such a cell is written with a
single quote in front, which spreadsheets read as "this is text". A cell that already
starts with a quote followed by such a cell gets one more quote, so
:func:`restore_cell` undoes :func:`neutralize_cell` exactly (``import`` reads back what
``export`` wrote).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = ["FORMULA_STARTS", "csv_text", "neutralize_cell", "restore_cell"]

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _needs_quote(value: str) -> bool:
    """True when ``value`` would run as a formula, or is a neutralized one already."""
    return value.lstrip("'").startswith(FORMULA_STARTS)


def neutralize_cell(value: str) -> str:
    """``value`` with a ``'`` in front when a spreadsheet would run it as a formula."""
    return "'" + value if _needs_quote(value) else value


def restore_cell(value: str) -> str:
    """The value :func:`neutralize_cell` was given for ``value``."""
    if value.startswith("'") and _needs_quote(value[1:]):
        return value[1:]
    return value


def csv_text(columns: Sequence[str], rows: Iterable[Mapping[str, Any]]) -> str:
    """A CSV document (header, then one line per row; None as an empty cell) whose cells
    are neutralized for spreadsheets."""
    buffer = io.StringIO()
    # CRLF line ends (RFC 4180): the csv module then quotes a cell holding a lone CR too.
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow([neutralize_cell(name) for name in columns])
    for row in rows:
        writer.writerow(
            [neutralize_cell("" if row.get(name) is None else str(row[name])) for name in columns]
        )
    return buffer.getvalue()
