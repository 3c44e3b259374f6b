"""A served generator: a ``TunedLM`` with the recipe's limits; one generation at a time
(two at once on a small CPU only make both slower)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from aiflywheel.models.causal_lm import Example, Sampling, TunedLM, stream_generate
from aiflywheel.tasks.text_generation.config import GenerationConfig


@dataclass
class Completion:
    texts: list[str]
    completion_tokens: list[int]
    prompt_tokens: int
    seconds: float


@dataclass
class GenerationPredictor:
    lm: TunedLM
    config: GenerationConfig
    labels: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def predict_proba(self, texts: list[str]) -> Any:
        """Generators have no class probabilities (the micro-batcher is never used)."""
        import numpy as np

        return np.zeros((len(texts), 0))

    def complete(self, example: Example, *, n: int, sampling: Sampling) -> Completion:
        started = time.perf_counter()
        ids = self.lm.prompt_ids(example)
        with self._lock:
            out = self.lm.generate(example, n=n, sampling=sampling)
        return Completion(
            [t for t, _ in out], [k for _, k in out], len(ids), time.perf_counter() - started
        )

    def stream(self, example: Example, *, sampling: Sampling) -> Iterator[str]:
        """Text deltas of one completion; holds the lock while generating."""
        with self._lock:
            yield from stream_generate(
                self.lm.model,
                self.lm.tokenizer,
                self.lm.prompt_ids(example),
                sampling=sampling,
                stops=self.lm.stops,
            )
