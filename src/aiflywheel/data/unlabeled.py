"""Unlabeled texts for domain-adaptive pre-training: files, folders and demo sources.

A source is one of:

- ``demo:NAME``: an unlabeled demo corpus (``UNLABELED_DEMO_SOURCES`` in ``demo_sources``);
- a ``.txt`` file (one text per line), a ``.jsonl`` file (one object per line, the text
  in ``text_field``) or a ``.csv`` file (the text in column ``text_field``);
- a folder: every such file under it, in path order.

Blank texts are skipped; nothing else is changed here (the caller cleans and filters).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from aiflywheel.errors import IngestError

SUFFIXES = (".txt", ".jsonl", ".csv")


def check_unlabeled_source(source: str) -> None:
    """``ValueError`` naming ``source`` when it cannot be an unlabeled source (the recipe
    validator; whether a file exists is checked when it is read)."""
    from aiflywheel.data.demo_sources import DEMO_PREFIX, UNLABELED_DEMO_SOURCES

    if not source.strip():
        raise ValueError("is empty; expected a .txt/.jsonl/.csv file, a folder or demo:NAME")
    if source.startswith(DEMO_PREFIX):
        name = source[len(DEMO_PREFIX) :]
        if name not in UNLABELED_DEMO_SOURCES:
            known = ", ".join(DEMO_PREFIX + key for key in UNLABELED_DEMO_SOURCES)
            raise ValueError(f"unknown unlabeled demo source {source!r}; known: {known}")
        return
    suffix = Path(source).suffix.lower()
    if suffix and suffix not in SUFFIXES and not Path(source).is_dir():
        raise ValueError(
            f"{source!r} is a {suffix} file; expected a .txt, .jsonl or .csv file, a folder "
            "or demo:NAME"
        )


def read_unlabeled_texts(
    source: str, *, text_field: str = "text", base_dir: Path | None = None
) -> list[str]:
    """The texts of ``source`` (see the module docstring; a relative path is taken from
    ``base_dir``, the recipe's folder); ``IngestError`` in one line when it is missing,
    empty or unreadable."""
    from aiflywheel.data.demo_sources import DEMO_PREFIX, load_unlabeled_demo

    try:
        check_unlabeled_source(source)
    except ValueError as exc:
        raise IngestError(f"unlabeled texts {source!r}: {exc}") from None
    if source.startswith(DEMO_PREFIX):
        texts = load_unlabeled_demo(source)
    else:
        path = Path(source).expanduser()
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.suffix.lower() in SUFFIXES)
            if not files:
                raise IngestError(f"unlabeled texts: folder {path} holds no .txt/.jsonl/.csv file")
        elif path.is_file():
            files = [path]
        else:
            raise IngestError(f"unlabeled texts: {path} does not exist")
        texts = [text for file in files for text in _read_file(file, text_field)]
    texts = [t for t in texts if t.strip()]
    if not texts:
        raise IngestError(f"unlabeled texts: {source!r} holds no non-blank text")
    return texts


def _read_file(path: Path, field: str) -> list[str]:
    suffix = path.suffix.lower()
    try:
        with path.open(encoding="utf-8", newline="" if suffix == ".csv" else None) as handle:
            if suffix == ".txt":
                return [line.rstrip("\r\n") for line in handle]
            if suffix == ".csv":
                reader = csv.DictReader(handle)
                if field not in (reader.fieldnames or []):
                    raise IngestError(
                        f"unlabeled texts: {path} has no column {field!r} "
                        f"(columns: {', '.join(reader.fieldnames or [])}); set text_field"
                    )
                return [row[field] or "" for row in reader]
            texts = []
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                row = json.loads(line)
                value = row.get(field) if isinstance(row, dict) else None
                if not isinstance(value, str):
                    raise IngestError(
                        f"unlabeled texts: {path} line {number} has no string field {field!r}; "
                        "set text_field"
                    )
                texts.append(value)
            return texts
    except UnicodeDecodeError:
        raise IngestError(f"unlabeled texts: {path} is not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise IngestError(f"unlabeled texts: {path} line {exc.lineno} is not JSON") from None
