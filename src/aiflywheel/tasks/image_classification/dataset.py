"""A set of decoded images with labels, stored as safetensors pixels plus a JSONL index."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from aiflywheel.errors import DataError
from aiflywheel.files import write_arrays_atomic, write_text_atomic


@dataclass
class ImageSet:
    """``pixels`` uint8 (N, H, W, C); one label, id and meta dict per image."""

    pixels: np.ndarray
    labels: list[str]
    ids: list[str]
    meta: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.meta:
            self.meta = [{} for _ in self.labels]
        if not len(self.pixels) == len(self.labels) == len(self.ids) == len(self.meta):
            raise DataError("pixels, labels, ids and meta must have one entry per image")

    def __len__(self) -> int:
        return len(self.labels)

    @classmethod
    def empty(cls, size: int, channels: int) -> ImageSet:
        return cls(np.zeros((0, size, size, channels), np.uint8), [], [], [])

    def take(self, index: Sequence[int]) -> ImageSet:
        index = list(index)
        return ImageSet(
            self.pixels[index] if index else self.pixels[:0],
            [self.labels[i] for i in index],
            [self.ids[i] for i in index],
            [self.meta[i] for i in index],
        )

    def concat(self, other: ImageSet) -> ImageSet:
        return ImageSet(
            np.concatenate([self.pixels, other.pixels]),
            [*self.labels, *other.labels],
            [*self.ids, *other.ids],
            [*self.meta, *other.meta],
        )

    def content_hash(self) -> str:
        digest = hashlib.sha256(np.ascontiguousarray(self.pixels).tobytes())
        digest.update(json.dumps([self.ids, self.labels]).encode())
        return digest.hexdigest()

    def save(self, path_stem: Path) -> None:
        """``<stem>.safetensors`` (pixels) and ``<stem>.jsonl`` (id, label, meta)."""
        write_arrays_atomic(path_stem.with_suffix(".safetensors"), {"pixels": self.pixels})
        lines = [
            json.dumps({"id": i, "label": label, **meta}, ensure_ascii=False)
            for i, label, meta in zip(self.ids, self.labels, self.meta, strict=True)
        ]
        write_text_atomic(path_stem.with_suffix(".jsonl"), "".join(f"{x}\n" for x in lines))

    @classmethod
    def load(cls, path_stem: Path) -> ImageSet:
        from safetensors.numpy import load_file

        pixels_file = path_stem.with_suffix(".safetensors")
        if not pixels_file.is_file():
            raise DataError(f"image split {pixels_file} is missing")
        pixels = load_file(str(pixels_file))["pixels"]
        rows = [
            json.loads(line)
            for line in path_stem.with_suffix(".jsonl").read_text(encoding="utf-8").splitlines()
            if line.strip()
        ]
        ids = [r.pop("id") for r in rows]
        labels = [r.pop("label") for r in rows]
        return cls(pixels, labels, ids, rows)
