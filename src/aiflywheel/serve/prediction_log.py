"""The prediction log writer: group commit, so a prediction is stored before it is answered.

A request hands its rows to ``write`` (or ``submit`` + ``Ticket.wait``) and waits. One
writer thread, woken by the first row, lingers ``linger_ms`` (2 ms) for company, then
inserts everything queued (up to ``CHUNK_ROWS`` rows) in one transaction
(``Store.log_predictions``); requests that arrive meanwhile form the next batch, so under
load many requests share one commit. Only after that commit returns
are the waiting requests released: an answered prediction is in the store, and a server
killed at any moment loses only predictions it never answered.

When the store fails, the writer keeps the queued rows and retries with backoff; a
request waits at most ``wait_seconds`` for its rows, then gets ``StoreError`` (503) and
its rows are withdrawn unless a write of them has already begun. While the store is
failing, new rows are refused at once (503), and so are rows beyond ``max_backlog``;
the writer probes the store (``Store.check_writable``) until it answers again.

Shadow rows (a candidate's answers to live traffic, never answered to anyone) stay
asynchronous: queued after their prediction is stored, written after the predictions
queued before them, dropped when the store refuses them for good.
"""

from __future__ import annotations

import asyncio
import contextlib
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


class Ticket:
    """The rows of one request on their way to the store."""

    __slots__ = ("rows", "error", "taken", "withdrawn", "_done", "_waiter")

    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.rows = rows
        self.error: str | None = None  # why the rows were not stored, once done
        self.taken = False  # a write of these rows has begun
        self.withdrawn = False  # the request gave up waiting before any write began
        self._done = threading.Event()
        # (event loop, future) of the request awaiting ``write``, set when done
        self._waiter: tuple[asyncio.AbstractEventLoop, asyncio.Future[None]] | None = None

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def wait(self, timeout: float) -> bool:
        """True once stored; False on timeout; StoreError when the rows were refused."""
        if not self._done.wait(timeout):
            return False
        if self.error is not None:
            raise StoreError(self.error)
        return True


class PredictionWriter:
    """Writes predictions in group commits (callers wait) and shadow rows in the background."""

    def __init__(
        self,
        store: Store,
        *,
        max_backlog: int = 10_000,
        wait_seconds: float = 5.0,
        linger_ms: float = 2.0,
        drain_seconds: float = 30.0,
        hook: Hook | None = None,
    ) -> None:
        self.store = store
        self.max_backlog = max_backlog
        self.wait_seconds = wait_seconds
        self.linger_seconds = linger_ms / 1000
        self.drain_seconds = drain_seconds
        self._hook = hook or (lambda _event, _n: None)
        self._cond = threading.Condition()
        self._tickets: deque[Ticket] = deque()
        self._queued_rows = 0  # rows of the tickets queued or being written
        self._shadow: deque[dict[str, Any]] = deque()
        self._stopping = False
        self._shadow_failures = 0
        self._thread: threading.Thread | None = None
        self.last_error: str | None = None  # set while the store is failing

    # -- producer side ----------------------------------------------------------------
    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name="prediction-log-writer", daemon=True
            )
            self._thread.start()

    @property
    def backlog(self) -> int:
        """Predictions waiting for the store (queued or being written)."""
        return self._queued_rows

    @property
    def shadow_backlog(self) -> int:
        return len(self._shadow)

    @property
    def failing(self) -> bool:
        """True from a failed write until the store takes a write (or a probe) again."""
        return self.last_error is not None

    def check_capacity(self) -> None:
        """Raise StoreError when the store is failing or too many predictions wait for it."""
        if self._stopping:
            raise StoreError("the server is shutting down")
        if self.last_error is not None:
            raise StoreError(f"the prediction log cannot be written: {self.last_error}")
        if self._queued_rows >= self.max_backlog:
            raise StoreError(
                f"the prediction log is {self._queued_rows} rows behind (limit "
                f"{self.max_backlog}): the store is not keeping up"
            )

    def submit(self, rows: Sequence[dict[str, Any]]) -> Ticket:
        """Queue prediction rows (``id, feature, version, text, output, ...``); wait on the
        ticket before answering. StoreError when the writer refuses them now."""
        ticket = Ticket(list(rows))
        with self._cond:
            self.check_capacity()
            idle = not self._tickets
            self._tickets.append(ticket)
            self._queued_rows += len(ticket.rows)
            # Waking the writer costs a GIL hand-over: only when it waits for rows or has
            # a full chunk; otherwise it takes these when its linger ends.
            if idle or self._queued_rows >= CHUNK_ROWS:
                self._cond.notify_all()
        return ticket

    async def write(self, rows: Sequence[dict[str, Any]]) -> None:
        """Store ``rows`` in the next group commit; StoreError (503) when not stored in
        ``wait_seconds`` or refused."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        ticket = self.submit(rows)
        with self._cond:
            if ticket.done:
                future.set_result(None)
            else:
                ticket._waiter = (loop, future)
        try:
            await asyncio.wait_for(asyncio.shield(future), self.wait_seconds)
        except asyncio.TimeoutError:
            self._withdraw(ticket)
            if ticket.done and ticket.error is None:
                return  # stored just as the wait ended
            reason = f": {self.last_error}" if self.last_error else " (the store is busy)"
            raise StoreError(
                f"the prediction was not stored within {self.wait_seconds:g} s{reason}; "
                "it was not answered, retry later"
            ) from None
        if ticket.error is not None:
            raise StoreError(ticket.error)

    def submit_shadow(self, rows: Sequence[dict[str, Any]]) -> bool:
        """Queue shadow rows; False (dropped) when the shadow backlog is full."""
        with self._cond:
            if len(self._shadow) + len(rows) > self.max_backlog:
                return False
            self._shadow.extend(rows)
            self._cond.notify_all()
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
        with self._cond:
            rows = self._queued_rows
            for ticket in list(self._tickets):
                self._finish([ticket], "the server shut down before the prediction was stored")
            self._tickets.clear()
        left = rows + len(self._shadow)
        if left:
            log.error(
                "%d predictions (never answered) and %d shadow rows could not be stored "
                "before exit: %s",
                rows,
                len(self._shadow),
                self.last_error,
            )
        return left

    # -- writer thread ----------------------------------------------------------------
    def _withdraw(self, ticket: Ticket) -> None:
        """Take a ticket whose request stopped waiting out of the queue (unless being written)."""
        with self._cond:
            if ticket.done:
                return
            ticket.withdrawn = True  # a write under way may still store it: harmless
            if ticket.taken:
                return
            self._tickets.remove(ticket)
            self._queued_rows -= len(ticket.rows)
            self._finish([ticket], "withdrawn: the request stopped waiting")

    def _finish(self, tickets: list[Ticket], error: str | None) -> None:
        """Mark tickets done and wake their requests: one hand-over per event loop, not
        per request (call with the lock held)."""
        futures: dict[asyncio.AbstractEventLoop, list[asyncio.Future[None]]] = {}
        for ticket in tickets:
            ticket.error = error
            ticket._done.set()
            if ticket._waiter is not None:
                loop, future = ticket._waiter
                futures.setdefault(loop, []).append(future)
                ticket._waiter = None
        for loop, waiting in futures.items():
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
                loop.call_soon_threadsafe(_settle, waiting)

    def _run(self) -> None:
        delay = BACKOFF_START
        while True:
            with self._cond:
                while not self._tickets and not self._shadow and not self._stopping:
                    if self.last_error is not None:
                        break  # nothing to write but the store failed: probe it below
                    self._cond.wait()
                # Linger a moment so that the requests of one model batch share a commit.
                linger_until = time.monotonic() + self.linger_seconds
                while (
                    self._tickets
                    and self._queued_rows < CHUNK_ROWS
                    and not self._stopping
                    and (remaining := linger_until - time.monotonic()) > 0
                ):
                    self._cond.wait(remaining)
                if self._stopping:
                    break
            if self._cycle():
                delay = BACKOFF_START
                continue
            self._sleep(delay)
            delay = min(delay * 2, BACKOFF_MAX)
        self._drain_until(time.monotonic() + self.drain_seconds)

    def _drain_until(self, deadline: float) -> None:
        delay = BACKOFF_START
        while (self._tickets or self._shadow) and time.monotonic() < deadline:
            if not self._cycle():
                time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
                delay = min(delay * 2, BACKOFF_MAX)

    def _sleep(self, seconds: float) -> None:
        until = time.monotonic() + seconds
        with self._cond:
            while (remaining := until - time.monotonic()) > 0 and not self._stopping:
                self._cond.wait(remaining)

    def _cycle(self) -> bool:
        """Write the predictions queued now, then the shadow rows queued before them; with
        nothing queued after a failure, probe the store. False when the caller should back off."""
        with self._cond:
            shadow_count = len(self._shadow)
            idle = not self._tickets
        if idle and not shadow_count and self.last_error is not None:
            return self._probe()
        if self._write_predictions() is False:
            return False
        return self._write_shadow(shadow_count)

    def _probe(self) -> bool:
        try:
            self.store.check_writable()
        except StoreError as exc:
            self.last_error = str(exc)
            return False
        log.info("the store answers again: %s", self.store.url)
        self.last_error = None
        return True

    def _write_predictions(self) -> bool | None:
        """One group commit of the queued tickets; None when none was queued."""
        with self._cond:
            batch: list[Ticket] = []
            size = 0
            for ticket in self._tickets:
                if batch and size + len(ticket.rows) > CHUNK_ROWS:
                    break
                batch.append(ticket)
                size += len(ticket.rows)
            if not batch:
                return None
            for ticket in batch:
                ticket.taken = True
        rows = [row for ticket in batch for row in ticket.rows]
        error: str | None = None
        try:
            self.store.log_predictions(rows)
        except StoreError as exc:
            self.last_error = str(exc)
            self._hook("predictions_failed", len(rows))
            log.warning("storing %d predictions failed, will retry: %s", len(rows), exc)
            with self._cond:
                for ticket in batch:  # rows whose request stopped waiting are not retried
                    ticket.taken = False
                    if ticket.withdrawn:
                        self._tickets.remove(ticket)
                        self._queued_rows -= len(ticket.rows)
                        self._finish([ticket], "withdrawn: the request stopped waiting")
            return False
        except Exception as exc:  # rows the store refuses for good (e.g. a deleted feature)
            log.error("the store refuses %d predictions: %s", len(rows), exc)
            self._hook("predictions_dropped", len(rows))
            error = f"the store refuses the prediction: {exc}"
        else:
            self.last_error = None
            self._hook("predictions_written", len(rows))
        with self._cond:
            for _ in batch:
                self._tickets.popleft()
            self._queued_rows -= len(rows)
            self._finish(batch, error)
        return True

    def _write_shadow(self, count: int) -> bool:
        while count > 0:
            chunk = list(islice(self._shadow, min(count, CHUNK_ROWS)))
            try:
                self.store.log_shadow_predictions(chunk)
            except StoreError as exc:
                self.last_error = str(exc)
                self._hook("shadow_failed", len(chunk))
                log.warning("storing %d shadow rows failed, will retry: %s", len(chunk), exc)
                if not self._refused_for_good():
                    return False
                log.error("dropping %d shadow rows the store keeps refusing: %s", len(chunk), exc)
                self._hook("shadow_dropped", len(chunk))
                self.last_error = None
            except Exception as exc:
                log.error("dropping %d shadow rows the store refuses: %s", len(chunk), exc)
                self._hook("shadow_dropped", len(chunk))
            else:
                self.last_error = None
                self._shadow_failures = 0
                self._hook("shadow_written", len(chunk))
            with self._cond:
                for _ in chunk:
                    self._shadow.popleft()
            count -= len(chunk)
        return True

    def _refused_for_good(self) -> bool:
        """After a failed shadow write: True when the store works but refused 3 times."""
        try:
            self.store.check_writable()
        except StoreError:
            return False
        self._shadow_failures += 1
        return self._shadow_failures >= 3


def _settle(futures: list[asyncio.Future[None]]) -> None:
    for future in futures:
        if not future.done():
            future.set_result(None)
