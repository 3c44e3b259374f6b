"""The server's moving parts on their own: micro-batcher, prediction writer, config."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

from aiflywheel.errors import SettingsError, StoreError
from aiflywheel.serve.app import describe_request_error
from aiflywheel.serve.batching import MicroBatcher
from aiflywheel.serve.config import make_config
from aiflywheel.serve.prediction_log import PredictionWriter


def _proba(texts: Sequence[str]) -> np.ndarray:
    return np.array([[len(t), 1.0] for t in texts])


def test_batcher_groups_concurrent_requests_and_keeps_their_order() -> None:
    batches: list[tuple[int, int]] = []

    async def main() -> list[np.ndarray]:
        batcher = MicroBatcher(
            _proba, max_batch=8, max_wait_ms=50, on_batch=lambda s, n: batches.append((s, n))
        )
        results = await asyncio.gather(
            *(batcher.submit(["x" * i] * (1 + i % 2)) for i in range(1, 7))
        )
        big = await batcher.submit(["y"] * 20)  # larger than max_batch: a batch of its own
        await batcher.close()
        return [*results, big]

    results = asyncio.run(main())
    for i, rows in enumerate(results[:6], start=1):
        assert rows.shape == (1 + i % 2, 2) and (rows[:, 0] == i).all()
    assert results[6].shape == (20, 2)
    assert sum(size for size, _ in batches) == 9 + 20
    assert all(size <= 8 for size, _ in batches[:-1]) and batches[-1] == (20, 1)
    assert len(batches) < 7


def test_batcher_hands_a_model_error_to_every_waiting_request() -> None:
    def broken(texts: Sequence[str]) -> np.ndarray:
        raise ValueError("model exploded")

    async def main() -> list[Any]:
        batcher = MicroBatcher(broken, max_batch=8, max_wait_ms=20)
        results = await asyncio.gather(
            batcher.submit(["a"]), batcher.submit(["b"]), return_exceptions=True
        )
        await batcher.close()
        return results

    assert all(isinstance(r, ValueError) for r in asyncio.run(main()))


class FlakyStore:
    """Fails the first ``failures`` writes, then records every row it gets."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.calls: list[tuple[str, list[str]]] = []
        self.lock = threading.Lock()
        self.url = "flaky://"

    def _write(self, kind: str, rows: Sequence[dict[str, Any]], key: str) -> None:
        with self.lock:
            if self.failures > 0:
                self.failures -= 1
                raise StoreError("store write failed: database is locked")
            self.calls.append((kind, [row[key] for row in rows]))

    def log_predictions(self, rows: Sequence[dict[str, Any]]) -> None:
        self._write("predictions", rows, "id")

    def log_shadow_predictions(self, rows: Sequence[dict[str, Any]]) -> None:
        self._write("shadow", rows, "prediction_id")

    def check_writable(self) -> None:
        if self.failures > 0:
            raise StoreError("store write failed: database is locked")

    def written(self, kind: str) -> list[str]:
        return [i for k, ids in self.calls if k == kind for i in ids]


def _row(i: int) -> dict[str, Any]:
    return {"id": f"p{i}", "feature": "f", "version": 1, "text": "t", "label": "a"}


def test_writer_retries_failed_writes_and_loses_nothing() -> None:
    store = FlakyStore(failures=3)
    events: list[tuple[str, int]] = []
    writer = PredictionWriter(
        store,  # type: ignore[arg-type]
        hook=lambda event, n: events.append((event, n)),
    )
    writer.start()
    assert writer.submit([_row(i) for i in range(5)]).wait(timeout=30)
    assert store.written("predictions") == [f"p{i}" for i in range(5)]  # stored when done
    writer.submit_shadow([{"prediction_id": "p0"}, {"prediction_id": "p1"}])
    assert writer.close() == 0
    assert store.written("shadow") == ["p0", "p1"]
    assert ("predictions_failed", 5) in events and ("predictions_written", 5) in events


def test_writer_group_commits_concurrent_requests() -> None:
    store = FlakyStore()
    writer = PredictionWriter(store)  # type: ignore[arg-type]
    tickets = [writer.submit([_row(i), _row(100 + i)]) for i in range(50)]  # before it starts
    writer.start()
    assert all(ticket.wait(timeout=30) for ticket in tickets)
    assert len(store.calls) == 1 and len(store.written("predictions")) == 100
    assert writer.backlog == 0 and writer.close() == 0


def test_writer_answers_503_while_the_store_fails_and_never_stores_withdrawn_rows() -> None:
    store = FlakyStore(failures=10**9)
    writer = PredictionWriter(store, max_backlog=3, drain_seconds=0.2)  # type: ignore[arg-type]
    writer.submit([_row(i) for i in range(3)])
    with pytest.raises(StoreError, match="3 rows behind"):
        writer.check_capacity()
    assert writer.close() == 3  # never answered; reported, not silently lost

    writer = PredictionWriter(store, wait_seconds=0.2)  # type: ignore[arg-type]
    writer.start()
    with pytest.raises(StoreError, match="not stored within 0.2 s"):
        asyncio.run(writer.write([_row(0)]))
    with pytest.raises(StoreError, match="cannot be written"):  # failing: refused at once
        asyncio.run(writer.write([_row(1)]))
    assert writer.backlog == 0  # the request gave up: its rows were withdrawn
    store.failures = 0
    deadline = time.monotonic() + 10
    while writer.failing:  # the writer probes the store until it answers
        assert time.monotonic() < deadline, "the writer never noticed the store came back"
        time.sleep(0.02)
    asyncio.run(writer.write([_row(2)]))
    assert store.written("predictions") == ["p2"]
    assert writer.close() == 0


def test_config_parses_shadows_and_names_bad_values() -> None:
    config = make_config(shadows=("review-sentiment:v3", "other:2"))
    assert config.shadows == (("review-sentiment", 3), ("other", 2))
    with pytest.raises(SettingsError, match="FEATURE:VERSION"):
        make_config(shadows=("review-sentiment",))
    with pytest.raises(SettingsError, match="max_batch"):
        make_config(max_batch=0)


def test_request_errors_become_one_line_naming_the_field() -> None:
    errors = [
        {"loc": ("body", "texts", 2), "msg": "Input should be a valid string", "input": 5},
        {"loc": ("body", "feature"), "msg": "x", "input": None},
    ]
    assert describe_request_error(errors) == (
        "texts.2: Input should be a valid string, got 5 (and 1 more problem(s))"
    )
    assert describe_request_error([{"loc": ("body", "x"), "type": "missing", "msg": "m"}]) == (
        "missing required field 'x'"
    )


def test_length_buckets_bound_padding_and_keep_every_index() -> None:
    from aiflywheel.tasks.text_classification.models.encoding import length_buckets

    lengths = [90, 12, 14, 40, 13, 95, 41, 12, 60, 15]
    buckets = list(length_buckets(lengths, 3))
    assert sorted(i for b in buckets for i in b) == list(range(len(lengths)))
    for bucket in buckets:
        assert len(bucket) <= 3
        shortest = min(lengths[i] for i in bucket)
        assert max(lengths[i] for i in bucket) <= 1.5 * shortest + 4  # bounded padding
    assert [lengths[b[0]] for b in buckets] == sorted(lengths[b[0]] for b in buckets)
    assert list(length_buckets([], 4)) == []
    assert list(length_buckets([7] * 5, 2)) == [[0, 1], [2, 3], [4]]
