"""The in-memory dataset that flows between data stages, and its JSONL form."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from aiflywheel.errors import DataError
from aiflywheel.files import write_bytes_atomic


@dataclass(frozen=True)
class Record:
    """One example: a stable id, the text, an optional label and string metadata."""

    id: str
    text: str
    label: str | None = None
    meta: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"id": self.id, "text": self.text, "label": self.label, "meta": self.meta}

    @classmethod
    def from_json(cls, obj: dict) -> Record:
        return cls(
            id=str(obj["id"]),
            text=str(obj["text"]),
            label=None if obj.get("label") is None else str(obj["label"]),
            meta={str(k): str(v) for k, v in (obj.get("meta") or {}).items()},
        )


class Dataset:
    """An ordered list of records with unique ids."""

    def __init__(self, records: Iterable[Record]) -> None:
        self.records: list[Record] = list(records)
        seen: set[str] = set()
        for rec in self.records:
            if rec.id in seen:
                raise DataError(f"record id {rec.id!r} appears more than once; ids must be unique")
            seen.add(rec.id)

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[Record]:
        return iter(self.records)

    def __getitem__(self, index: int) -> Record:
        return self.records[index]

    @property
    def texts(self) -> list[str]:
        return [r.text for r in self.records]

    @property
    def labels(self) -> list[str | None]:
        return [r.label for r in self.records]

    def content_hash(self) -> str:
        """SHA-256 over the canonical JSON of every record, in order (the dataset version)."""
        digest = hashlib.sha256()
        for rec in self.records:
            digest.update(_canonical_line(rec))
        return digest.hexdigest()

    def to_jsonl(self, path: str | Path) -> None:
        """Write one record per line, atomically."""
        write_bytes_atomic(Path(path), b"".join(_canonical_line(r) for r in self.records))

    @classmethod
    def from_jsonl(cls, path: str | Path) -> Dataset:
        path = Path(path)
        records = []
        with path.open(encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    records.append(Record.from_json(json.loads(line)))
                except (ValueError, KeyError, TypeError) as exc:
                    raise DataError(f"{path} line {number} is not a dataset record: {exc}") from exc
        return cls(records)


def _canonical_line(rec: Record) -> bytes:
    return (json.dumps(rec.to_json(), ensure_ascii=False, sort_keys=True) + "\n").encode("utf-8")
