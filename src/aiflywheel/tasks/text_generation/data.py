"""Rows of a text generation feature: read, checked, split.

A source is a CSV or JSONL file holding one of three kinds of rows:

- ``pairs``: a prompt column and a response column;
- ``chat``: a messages column, each a list of ``{role, content}`` turns (JSON text in a
  CSV cell): an optional system turn first, then user and assistant alternating, ending
  with the assistant, whose last turn is the response;
- ``text``: a text column; the model learns to continue it (no prompt).

Bad rows stop the run with one line naming the row (1-based, header excluded) and the fix:
an empty side, roles out of order, a row longer than ``max_length`` tokens (checked with
the model's tokenizer in ``check_lengths``). Exact duplicate rows are dropped and counted.
The split is seeded and grouped by prompt, so one prompt never lands in two parts.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiflywheel.data.language import detect_language
from aiflywheel.errors import DataError
from aiflywheel.files import write_text_atomic
from aiflywheel.models.causal_lm import Example, encode
from aiflywheel.tasks.text_generation.config import GenerationConfig

PARTS = ("train", "val", "test")
# Shipped sources: the help center's curated FAQ (Lumen Market, 116 zh/en entries written
# for this project) as customer-service question -> reply pairs.
DEMO_SOURCES = {
    "demo:help-center-replies": ("aiflywheel.tasks.assistant", "help_center/faq.jsonl"),
}
DEMO_COLUMNS = {"question": "prompt", "answer": "response"}
ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class Row:
    """One row: an ``Example`` and its language; ``id`` is stable (a hash of the content)."""

    id: str
    example: Example
    language: str
    meta: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)

    @property
    def prompt_text(self) -> str:
        """The prompt as one text (what the nearest-neighbour baseline compares)."""
        if self.example.messages:
            return "\n".join(c for r, c in self.example.messages if r != "system")
        return self.example.prompt

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "prompt": self.example.prompt,
            "messages": [list(m) for m in self.example.messages],
            "response": self.example.response,
            "language": self.language,
            **({"meta": self.meta} if self.meta else {}),
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Row:
        example = Example(
            response=obj["response"],
            prompt=obj.get("prompt", ""),
            messages=tuple((r, c) for r, c in obj.get("messages", [])),
        )
        return cls(obj["id"], example, obj.get("language", "other"), obj.get("meta") or {})


def _row_id(example: Example) -> str:
    key = json.dumps([example.prompt, list(example.messages), example.response], ensure_ascii=False)
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]


def _records(path: Path, fmt: str) -> list[dict[str, Any]]:
    if not path.is_file():
        raise DataError(f"generation.source {str(path)!r} is not a file")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
    if fmt == "auto":
        suffix = path.suffix.lower()
        if suffix not in (".csv", ".jsonl"):
            raise DataError(
                f"{path}: cannot tell the format from {suffix or 'no suffix'!r}; "
                "set generation.format to csv or jsonl"
            )
        fmt = suffix[1:]
    if fmt == "csv":
        return list(csv.DictReader(io.StringIO(text)))
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError as exc:
            raise DataError(f"{path} line {n}: not JSON ({exc.msg}); one object per line") from None
        if not isinstance(obj, dict):
            raise DataError(f"{path} line {n}: expected a JSON object, got {type(obj).__name__}")
        out.append(obj)
    return out


def _kind(records: list[dict[str, Any]], config: GenerationConfig, path: Path) -> str:
    if config.kind != "auto":
        return config.kind
    columns = set(records[0]) if records else set()
    if {config.prompt_column, config.response_column} <= columns:
        return "pairs"
    if config.messages_column in columns:
        return "chat"
    if config.text_column in columns:
        return "text"
    raise DataError(
        f"{path}: no {config.prompt_column}+{config.response_column}, {config.messages_column} "
        f"or {config.text_column} columns (found {', '.join(sorted(columns)) or 'none'}); "
        "set generation.prompt_column/response_column, messages_column or text_column"
    )


def _text(record: dict[str, Any], column: str, where: str) -> str:
    if column not in record:
        raise DataError(f"{where}: missing column {column!r}")
    value = record[column]
    return "" if value is None else str(value).strip()


def _messages(value: Any, where: str) -> tuple[tuple[str, str], ...]:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise DataError(
                f"{where}: messages is not JSON; give a list of {{role, content}} turns"
            ) from None
    if not isinstance(value, list) or not value:
        raise DataError(f"{where}: messages must be a non-empty list of {{role, content}} turns")
    turns = []
    for i, turn in enumerate(value):
        if not isinstance(turn, dict) or turn.get("role") not in ROLES:
            raise DataError(
                f"{where}: turn {i + 1} needs a role of {', '.join(ROLES)} and a content"
            )
        content = str(turn.get("content") or "").strip()
        if not content:
            raise DataError(f"{where}: turn {i + 1} ({turn['role']}) is empty; remove or fill it")
        turns.append((turn["role"], content))
    roles = [r for r, _ in turns]
    body = roles[1:] if roles[0] == "system" else roles
    expected = ["user" if i % 2 == 0 else "assistant" for i in range(len(body))]
    if body != expected or not body or body[-1] != "assistant":
        raise DataError(
            f"{where}: roles out of order ({' -> '.join(roles)}); expected an optional system "
            "turn, then user and assistant alternating, ending with the assistant"
        )
    return tuple(turns)


def demo_path(source: str) -> Path | None:
    """The file of a ``demo:`` source, None for other sources; DataError for unknown ones."""
    if not source.startswith("demo:"):
        return None
    if source not in DEMO_SOURCES:
        raise DataError(
            f"generation.source {source!r} is not a shipped source ({', '.join(DEMO_SOURCES)})"
        )
    from importlib import resources

    package, name = DEMO_SOURCES[source]
    return Path(str(resources.files(package).joinpath(name)))


def read_rows(path: Path, config: GenerationConfig) -> tuple[list[Row], dict[str, Any]]:
    """The rows of ``path`` (checked) and counts for the data report."""
    records = _records(path, config.format)
    if path.name == "faq.jsonl" and config.source in DEMO_SOURCES:
        records = [{DEMO_COLUMNS.get(k, k): v for k, v in r.items()} for r in records]
    if not records:
        raise DataError(f"{path}: no rows")
    kind = _kind(records, config, path)
    rows: list[Row] = []
    seen: set[str] = set()
    duplicates = 0
    for n, record in enumerate(records, 1):
        where = f"{path.name} row {n}"
        if kind == "pairs":
            prompt = _text(record, config.prompt_column, where)
            response = _text(record, config.response_column, where)
            if not prompt or not response:
                side = "prompt" if not prompt else "response"
                raise DataError(f"{where}: the {side} is empty; fill it or remove the row")
            example = Example(response=response, prompt=prompt)
        elif kind == "chat":
            if config.messages_column not in record:
                raise DataError(f"{where}: missing column {config.messages_column!r}")
            turns = _messages(record[config.messages_column], where)
            example = Example(response=turns[-1][1], messages=turns[:-1])
        else:
            text = _text(record, config.text_column, where)
            if not text:
                raise DataError(f"{where}: the text is empty; fill it or remove the row")
            example = Example(response=text)
        row_id = _row_id(example)
        if row_id in seen:
            duplicates += 1
            continue
        seen.add(row_id)
        language = ""
        if config.language_column and config.language_column in record:
            language = str(record[config.language_column] or "").strip()
        language = language or detect_language(example.response)
        rows.append(Row(row_id, example, language, {"row": n}))
    counts = {
        "kind": kind,
        "rows_read": len(records),
        "duplicates_dropped": duplicates,
        "rows": len(rows),
        "languages": dict(sorted(Counter(r.language for r in rows).items())),
    }
    return rows, counts


def redact_rows(rows: list[Row], mode: str, types: list[str]) -> tuple[list[Row], int]:
    """Rows with PII in prompts, turns and responses replaced (``pii.mode``; ``drop_row``
    drops a row with any hit, ``off`` keeps everything); the number of rows changed."""
    if mode == "off":
        return rows, 0
    from aiflywheel.data.pii import scrub

    def clean(text: str) -> tuple[str, bool]:
        if not text:
            return text, False
        new, hits = scrub(text, mode="redact" if mode == "drop_row" else mode, types=types)
        return new, bool(hits)

    out, changed = [], 0
    for row in rows:
        prompt, a = clean(row.example.prompt)
        response, b = clean(row.example.response)
        turns = [(r, *clean(c)) for r, c in row.example.messages]
        hit = a or b or any(h for _, _, h in turns)
        if hit:
            changed += 1
            if mode == "drop_row":
                continue
        example = Example(
            response=response, prompt=prompt, messages=tuple((r, c) for r, c, _ in turns)
        )
        out.append(Row(row.id, example, row.language, row.meta))
    return out, changed


def check_lengths(rows: list[Row], tokenizer: Any, *, chat: bool, max_length: int) -> None:
    """A ``DataError`` naming the first row longer than ``max_length`` tokens."""
    for row in rows:
        ids, labels = encode(tokenizer, row.example, chat)
        if len(ids) > max_length:
            prompt_tokens = sum(1 for label in labels if label == -100)
            where = f"row {row.meta.get('row', row.id)}"
            raise DataError(
                f"{where} is {len(ids)} tokens ({prompt_tokens} prompt + "
                f"{len(ids) - prompt_tokens} response), longer than generation.max_length "
                f"{max_length}; shorten the row or raise max_length"
            )


def split_rows(rows: list[Row], *, val: float, test: float, seed: int) -> dict[str, list[Row]]:
    """Seeded split grouped by prompt text (a prompt is in one part only)."""
    groups: dict[str, list[Row]] = {}
    for row in rows:
        key = row.prompt_text or row.id
        groups.setdefault(key, []).append(row)
    keys = sorted(groups)
    random.Random(seed).shuffle(keys)
    n = len(keys)
    n_test = max(1, round(n * test)) if test > 0 else 0
    n_val = max(1, round(n * val)) if val > 0 else 0
    if n - n_test - n_val < 1:
        raise DataError(
            f"{len(rows)} rows ({n} distinct prompts) cannot fill train, val and test; "
            "add rows or lower split.val/split.test"
        )
    parts = {
        "test": keys[:n_test],
        "val": keys[n_test : n_test + n_val],
        "train": keys[n_test + n_val :],
    }
    return {name: [r for k in part for r in groups[k]] for name, part in parts.items()}


def write_rows(path: Path, rows: list[Row]) -> None:
    text = "".join(json.dumps(r.to_json(), ensure_ascii=False) + "\n" for r in rows)
    write_text_atomic(path, text)


def read_split(path: Path) -> list[Row]:
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    return [Row.from_json(json.loads(line)) for line in lines if line.strip()]
