"""Size on disk and speed of a classifier on this machine: latency at batch 1 and 32,
throughput (``measure``)."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from aiflywheel.tasks.text_classification.models.base import check_texts


@dataclass
class Measurement:
    """Size on disk and speed of one classifier on this machine (milliseconds, texts/s)."""

    size_bytes: int
    b1_p50_ms: float
    b1_p95_ms: float
    b32_p50_ms: float
    b32_p95_ms: float
    throughput: float
    texts: int
    batches: int

    def to_json(self) -> dict[str, Any]:
        return {
            "size_bytes": self.size_bytes,
            "size_mb": round(self.size_bytes / 1e6, 3),
            "latency_ms": {
                "batch_1": {"p50": round(self.b1_p50_ms, 3), "p95": round(self.b1_p95_ms, 3)},
                "batch_32": {"p50": round(self.b32_p50_ms, 3), "p95": round(self.b32_p95_ms, 3)},
            },
            "throughput_per_s": round(self.throughput, 2),
            "timed_texts": self.texts,
            "timed_batches": self.batches,
        }


def folder_bytes(directory: str | Path) -> int:
    """Bytes of every file under ``directory``."""
    return sum(p.stat().st_size for p in Path(directory).rglob("*") if p.is_file())


def measure(
    classifier,
    texts: Sequence[str],
    *,
    model_dir: str | Path,
    batch_size: int = 32,
    min_batches: int = 10,
    seed: int = 0,
) -> Measurement:
    """Size of ``model_dir``, latency per call at batch 1 and ``batch_size``, throughput.

    Each text is classified alone once (batch 1); then at least ``min_batches`` batches
    of ``batch_size`` texts drawn at random (seeded) from ``texts`` are classified, as a
    server's mixed-length batches would be. One warm-up call of each size goes first.
    """
    items = check_texts(texts)
    rng = np.random.default_rng(seed)
    n_batches = max(min_batches, math.ceil(len(items) / batch_size))
    batches = [
        [items[i] for i in rng.choice(len(items), batch_size, replace=len(items) < batch_size)]
        for _ in range(n_batches)
    ]
    classifier.predict_proba(batches[0])
    classifier.predict_proba(items[:1])
    single = []
    for text in items:
        start = time.perf_counter()
        classifier.predict_proba([text])
        single.append(time.perf_counter() - start)
    batched = []
    for batch in batches:
        start = time.perf_counter()
        classifier.predict_proba(batch)
        batched.append(time.perf_counter() - start)
    b1, b32 = np.array(single) * 1000, np.array(batched) * 1000
    return Measurement(
        size_bytes=folder_bytes(model_dir),
        b1_p50_ms=float(np.percentile(b1, 50)),
        b1_p95_ms=float(np.percentile(b1, 95)),
        b32_p50_ms=float(np.percentile(b32, 50)),
        b32_p95_ms=float(np.percentile(b32, 95)),
        throughput=batch_size * len(batched) / float(np.sum(batched)),
        texts=len(single),
        batches=len(batched),
    )


__all__ = ["Measurement", "folder_bytes", "measure"]
