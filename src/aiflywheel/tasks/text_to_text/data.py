"""Source -> target pairs from CSV, TSV or JSONL (or a demo set), checked row by row.

``read_pairs(path, config)`` returns ``Pair`` rows; a row that cannot be used is one
``DataError`` line naming the row (1-based, as a spreadsheet shows it: the header is row 1
of a CSV/TSV, a JSONL file counts lines) and the fix. ``split_pairs`` splits by distinct
source text, so the same source never lands in two splits.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import random
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from aiflywheel.errors import DataError, IngestError
from aiflywheel.files import write_text_atomic
from aiflywheel.tasks.text_to_text.config import TextToTextConfig

DEMO_PREFIX = "demo:"


@dataclass(frozen=True)
class Pair:
    """One training or test pair; ``origin`` says where it came from (file row, feedback)."""

    source: str
    target: str
    origin: str = ""

    def to_json(self) -> dict[str, str]:
        return asdict(self)


def _format_of(path: Path, declared: str) -> str:
    if declared != "auto":
        return declared
    suffix = path.suffix.lower()
    found = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
    if suffix not in found:
        raise IngestError(
            f"cannot tell the format of {path.name!r} from its extension {suffix or '(none)'}; "
            "use .csv, .tsv or .jsonl, or set text_to_text.format"
        )
    return found[suffix]


def _rows(path: Path, fmt: str, config: TextToTextConfig) -> Iterator[tuple[int, dict[str, Any]]]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise IngestError(f"pairs file {str(path)!r} does not exist") from None
    except UnicodeDecodeError as exc:
        raise IngestError(
            f"{path.name}: not UTF-8 text (byte {exc.start}); save it as UTF-8"
        ) from None
    if not text.strip():
        raise IngestError(f"{path.name} is empty; it needs one pair per row")
    if fmt == "jsonl":
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError:
                raise IngestError(
                    f"{path.name} line {number}: not valid JSON; each line must be one object "
                    f'like {{"{config.source_column}": ..., "{config.target_column}": ...}}'
                ) from None
            if not isinstance(row, dict):
                raise IngestError(f"{path.name} line {number}: a JSON object was expected")
            yield number, row
        return
    reader = csv.DictReader(io.StringIO(text), delimiter="\t" if fmt == "tsv" else ",")
    columns = reader.fieldnames or []
    for wanted in (config.source_column, config.target_column):
        if wanted not in columns:
            raise IngestError(
                f"{path.name}: no column {wanted!r}; its columns are {', '.join(columns)} "
                "(set text_to_text.source_column / target_column)"
            )
    for number, row in enumerate(reader, start=2):
        yield number, row


def check_pair(source: Any, target: Any, config: TextToTextConfig, where: str) -> tuple[str, str]:
    """(source, target) stripped, or a DataError naming ``where`` and the fix."""
    sides = {}
    for side, value, column in (
        ("source", source, config.source_column),
        ("target", target, config.target_column),
    ):
        if value is not None and not isinstance(value, str):
            value = str(value)
        text = " ".join((value or "").split())
        if not text:
            raise DataError(
                f"{where}: the {side} ({column!r}) is empty; fill it in or remove the row"
            )
        limit = config.max_source_chars if side == "source" else config.max_target_chars
        if len(text) > limit:
            raise DataError(
                f"{where}: the {side} has {len(text)} characters, more than "
                f"text_to_text.max_{side}_chars {limit}; shorten or split it, or raise the limit"
            )
        sides[side] = text
    return sides["source"], sides["target"]


def read_pairs(location: str, config: TextToTextConfig, base_dir: Path) -> list[Pair]:
    """Every pair of a file (or demo set); the first unusable row stops with its number."""
    if location.startswith(DEMO_PREFIX):
        from aiflywheel.tasks.text_to_text.demo_data import demo_pairs

        raw = demo_pairs(location.removeprefix(DEMO_PREFIX))
        return [
            Pair(*check_pair(s, t, config, f"{location} entry {i}"), origin=f"{location}:{i}")
            for i, (s, t) in enumerate(raw, start=1)
        ]
    path = Path(location)
    if not path.is_absolute():
        path = base_dir / path
    fmt = _format_of(path, config.format)
    pairs = []
    for number, row in _rows(path, fmt, config):
        where = f"{path.name} {'line' if fmt == 'jsonl' else 'row'} {number}"
        if fmt == "jsonl":
            for wanted in (config.source_column, config.target_column):
                if wanted not in row:
                    raise IngestError(
                        f"{where}: no key {wanted!r} (keys: {', '.join(row) or 'none'}); set "
                        "text_to_text.source_column / target_column"
                    )
        source, target = check_pair(
            row.get(config.source_column), row.get(config.target_column), config, where
        )
        pairs.append(Pair(source, target, origin=f"{path.name}:{number}"))
    if not pairs:
        raise IngestError(f"{path.name} has a header but no pairs")
    return pairs


def _bucket(source: str, seed: int) -> float:
    digest = hashlib.sha256(f"{seed}:{source}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_pairs(
    pairs: list[Pair], *, train: float, val: float, seed: int, sample: int | None = None
) -> dict[str, list[Pair]]:
    """Train/val/test by a seeded hash of the source text (a source's pairs stay together)."""
    if sample is not None and len(pairs) > sample:
        pairs = random.Random(seed).sample(pairs, sample)
    parts: dict[str, list[Pair]] = {"train": [], "val": [], "test": []}
    for pair in pairs:
        where = _bucket(pair.source, seed)
        name = "train" if where < train else "val" if where < train + val else "test"
        parts[name].append(pair)
    for name in ("train", "test"):
        if not parts[name]:
            raise DataError(
                f"the {name} split is empty ({len(pairs)} pairs); add pairs or change split"
            )
    return parts


def write_pairs(path: Path, pairs: list[Pair]) -> None:
    write_text_atomic(
        path, "".join(json.dumps(p.to_json(), ensure_ascii=False) + "\n" for p in pairs)
    )


def load_pairs(path: Path) -> list[Pair]:
    if not path.is_file():
        return []
    return [
        Pair(**json.loads(line))
        for line in path.read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]
