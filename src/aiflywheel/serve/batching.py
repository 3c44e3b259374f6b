"""Micro-batching: concurrent requests for one model share a model call.

Requests wait at most ``max_wait_ms`` for company, and a batch holds at most
``max_batch`` texts (a single request with more texts is one batch of its own). The
model runs on one worker thread per model, so the event loop never blocks on it; while
it runs, new requests queue up and form the next batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

log = logging.getLogger("aiflywheel.serve")

PredictFn = Callable[[Sequence[str]], np.ndarray]


@dataclass
class _Pending:
    texts: list[str]
    future: asyncio.Future[np.ndarray] = field(repr=False)


class MicroBatcher:
    """Collects ``submit`` calls into batches for ``predict`` (texts -> probability rows)."""

    def __init__(
        self,
        predict: PredictFn,
        *,
        max_batch: int = 32,
        max_wait_ms: float = 5.0,
        name: str = "model",
        on_batch: Callable[[int, int], None] | None = None,
    ) -> None:
        self._predict = predict
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000
        self.name = name
        self._on_batch = on_batch
        self._queue: asyncio.Queue[_Pending | None] = asyncio.Queue()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"model-{name}")
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def run_sync(self, fn: Callable[[], object]) -> object:
        """Run ``fn`` on this model's worker thread (loading, warm-up)."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    async def submit(self, texts: list[str]) -> np.ndarray:
        """Probability rows for ``texts``, computed in a shared batch."""
        if self._closing:
            raise RuntimeError(f"batcher {self.name} is closed")
        self.start()
        future: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Pending(texts, future))
        return await future

    async def close(self) -> None:
        """Finish every request already submitted, then stop the worker."""
        self._closing = True
        if self._task is not None:
            self._queue.put_nowait(None)
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._executor.shutdown(wait=False)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        carry: _Pending | None = None
        stop = False
        while not stop:
            first = carry if carry is not None else await self._queue.get()
            carry = None
            if first is None:
                break
            batch = [first]
            size = len(first.texts)
            deadline = loop.time() + self.max_wait
            while size < self.max_batch:
                try:
                    if self._queue.empty():
                        timeout = deadline - loop.time()
                        if timeout <= 0:
                            break
                        item = await asyncio.wait_for(self._queue.get(), timeout)
                    else:
                        item = self._queue.get_nowait()
                except asyncio.TimeoutError:
                    break
                if item is None:
                    stop = True
                    break
                if size + len(item.texts) > self.max_batch:
                    carry = item
                    break
                batch.append(item)
                size += len(item.texts)
            await self._score(batch, size)

    async def _score(self, batch: list[_Pending], size: int) -> None:
        texts = [text for item in batch for text in item.texts]
        try:
            proba = await asyncio.get_running_loop().run_in_executor(
                self._executor, self._predict, texts
            )
        except Exception as exc:  # every waiting request gets the model's error
            log.exception("model %s failed on a batch of %d texts", self.name, size)
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(exc)
            return
        if self._on_batch is not None:
            self._on_batch(size, len(batch))
        start = 0
        for item in batch:
            end = start + len(item.texts)
            if not item.future.done():
                item.future.set_result(proba[start:end])
            start = end
