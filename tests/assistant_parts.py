"""Test parts shared by the assistant tests: a deterministic encoder."""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np

from aiflywheel.tasks.assistant.bm25 import bm25_tokens


class HashingEncoder:
    """A deterministic test encoder: BM25 tokens hashed into ``dim`` buckets, unit rows.

    Records every text it encodes, so tests can count what was (re-)embedded.
    """

    def __init__(self, name: str = "hashing", dim: int = 64) -> None:
        self.name = name
        self.dim = dim
        self.queries: list[str] = []
        self.passages: list[str] = []

    def _vectors(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for token in bm25_tokens(text) or [text]:
                out[row, zlib.crc32(token.encode()) % self.dim] += 1.0
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        self.queries.extend(texts)
        return self._vectors(texts)

    def encode_passages(self, texts: Sequence[str]) -> np.ndarray:
        self.passages.extend(texts)
        return self._vectors(texts)
