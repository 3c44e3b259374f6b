"""The prediction log writer: batches inserts on a background thread, loses nothing.

``submit`` only appends to memory, so a response never waits for the database. The
writer thread inserts what has gathered (``Store.log_predictions``), then the shadow
rows that refer to those predictions (``Store.log_shadow_predictions``; shadow rows are
always submitted after their prediction, so writing predictions first keeps the foreign
key). When the store fails, rows stay in memory and are retried with backoff; once
``max_backlog`` predictions wait, ``check_capacity`` raises ``StoreError`` and classify
answers 503 instead of answering without a record. ``close`` writes everything left.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from itertools import islice
from typing import Any

from aiflywheel.errors import StoreError
from aiflywheel.store import Store

log = logging.getLogger("aiflywheel.serve")

CHUNK_ROWS = 1000
BACKOFF_START, BACKOFF_MAX = 0.05, 2.0

Hook = Callable[[str, int], None]


class PredictionWriter:
    """Background writer of predictions and shadow predictions."""

    def __init__(
        self,
        store: Store,
        *,
        max_backlog: int = 50_000,
        flush_ms: float = 50.0,
        drain_seconds: float = 30.0,
        hook: Hook | None = None,
    ) -> None:
        self.store = store
        self.max_backlog = max_backlog
        self.flush_seconds = flush_ms / 1000
        self.drain_seconds = drain_seconds
        self._hook = hook or (lambda _event, _n: None)
        self._cond = threading.Condition()
        self._rows: deque[dict[str, Any]] = deque()
        self._shadow: deque[dict[str, Any]] = deque()
        self._pending: dict[str, dict[str, Any]] = {}
        self._flush_now = False
        self._stopping = False
        self._shadow_failures = 0
        self._thread: threading.Thread | None = None
        self.last_error: str | None = None

    # -- producer side ----------------------------------------------------------------
    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name="prediction-log-writer", daemon=True
            )
            self._thread.start()

    @property
    def backlog(self) -> int:
        """Predictions not yet stored."""
        return len(self._rows)

    @property
    def shadow_backlog(self) -> int:
        return len(self._shadow)

    def check_capacity(self) -> None:
        """Raise StoreError when too many predictions are waiting for the store."""
        if len(self._rows) >= self.max_backlog:
            reason = f"; last error: {self.last_error}" if self.last_error else ""
            raise StoreError(
                f"the prediction log is {len(self._rows)} rows behind (limit "
                f"{self.max_backlog}): the store is not keeping up{reason}"
            )

    def submit(self, rows: Sequence[dict[str, Any]]) -> None:
        """Queue prediction rows (``id, feature, version, text, label, probabilities, ...``)."""
        if self._stopping:
            raise StoreError("the server is shutting down")
        with self._cond:
            idle = not self._rows and not self._shadow
            self._rows.extend(rows)
            for row in rows:
                self._pending[row["id"]] = row
            # Waking the writer thread costs a GIL hand-over: only when it waits for rows
            # or has a full chunk; otherwise it picks these up when its linger ends.
            if idle or len(self._rows) >= CHUNK_ROWS:
                self._cond.notify_all()

    def submit_shadow(self, rows: Sequence[dict[str, Any]]) -> bool:
        """Queue shadow rows; False (dropped) when the shadow backlog is full."""
        with self._cond:
            if len(self._shadow) + len(rows) > self.max_backlog:
                return False
            idle = not self._rows and not self._shadow
            self._shadow.extend(rows)
            if idle:
                self._cond.notify_all()
            return True

    def pending(self, prediction_id: str) -> dict[str, Any] | None:
        """The queued row of a prediction not stored yet, or None."""
        return self._pending.get(prediction_id)

    def wait_written(self, prediction_id: str, timeout: float) -> bool:
        """Flush now and wait until ``prediction_id`` is stored; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while prediction_id in self._pending:
                self._flush_now = True
                self._cond.notify_all()
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
        return True

    def close(self) -> int:
        """Write everything queued (retrying up to ``drain_seconds``); returns rows left unsaved."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        else:
            self._drain_until(time.monotonic() + self.drain_seconds)
        left = len(self._rows) + len(self._shadow)
        if left:
            log.error(
                "%d predictions and %d shadow rows could not be stored before exit: %s",
                len(self._rows),
                len(self._shadow),
                self.last_error,
            )
        return left

    # -- writer thread ----------------------------------------------------------------
    def _run(self) -> None:
        delay = BACKOFF_START
        while True:
            with self._cond:
                while not self._rows and not self._shadow and not self._stopping:
                    self._cond.wait()
                linger_until = time.monotonic() + self.flush_seconds
                while (
                    not self._flush_now
                    and not self._stopping
                    and len(self._rows) < CHUNK_ROWS
                    and (remaining := linger_until - time.monotonic()) > 0
                ):
                    self._cond.wait(remaining)
                if self._stopping:
                    break
                self._flush_now = False
            if self._cycle():
                delay = BACKOFF_START
                continue
            self._sleep(delay, wake_on_stop=True)
            delay = min(delay * 2, BACKOFF_MAX)
        self._drain_until(time.monotonic() + self.drain_seconds)

    def _drain_until(self, deadline: float) -> None:
        delay = BACKOFF_START
        while (self._rows or self._shadow) and time.monotonic() < deadline:
            if not self._cycle():
                self._sleep(min(delay, max(0.0, deadline - time.monotonic())), wake_on_stop=False)
                delay = min(delay * 2, BACKOFF_MAX)

    def _sleep(self, seconds: float, *, wake_on_stop: bool) -> None:
        until = time.monotonic() + seconds
        with self._cond:
            while (remaining := until - time.monotonic()) > 0:
                if wake_on_stop and self._stopping:
                    return
                self._cond.wait(remaining)

    def _cycle(self) -> bool:
        """Write the predictions queued now, then the shadow rows queued before them.

        False when a write failed and the caller should back off.
        """
        with self._cond:
            shadow_count = len(self._shadow)
            row_count = len(self._rows)
        return self._write(self._rows, row_count, predictions=True) and self._write(
            self._shadow, shadow_count, predictions=False
        )

    def _write(self, queue: deque[dict[str, Any]], count: int, *, predictions: bool) -> bool:
        kind = "predictions" if predictions else "shadow"
        while count > 0:
            chunk = list(islice(queue, min(count, CHUNK_ROWS)))
            try:
                if predictions:
                    self.store.log_predictions(chunk)
                else:
                    self.store.log_shadow_predictions(chunk)
            except StoreError as exc:
                self.last_error = str(exc)
                self._hook(f"{kind}_failed", len(chunk))
                log.warning("storing %d %s rows failed, will retry: %s", len(chunk), kind, exc)
                if predictions or not self._refused_for_good():
                    return False
                log.error("dropping %d shadow rows the store keeps refusing: %s", len(chunk), exc)
                self._hook("shadow_dropped", len(chunk))
            except Exception as exc:  # rows the store refuses for good (e.g. a deleted feature)
                log.error("dropping %d %s rows the store refuses: %s", len(chunk), kind, exc)
                self._hook(f"{kind}_dropped", len(chunk))
            else:
                self.last_error = None
                self._shadow_failures = 0
                self._hook(f"{kind}_written", len(chunk))
            with self._cond:
                for _ in chunk:
                    row = queue.popleft()
                    if predictions:
                        self._pending.pop(row["id"], None)
                self._cond.notify_all()
            count -= len(chunk)
        return True

    def _refused_for_good(self) -> bool:
        """After a failed shadow write: True when the store works but refused 3 times."""
        try:
            self.store.ping()
        except StoreError:
            return False
        self._shadow_failures += 1
        return self._shadow_failures >= 3
