"""Nothing answered is lost: `flywheel serve` killed with SIGKILL under load, and its
database file moved away or deleted while it serves.

The kill test runs on whatever store the settings name (FLYWHEEL_DB_URL: SQLite by
default, Postgres in the Postgres leg); the moved/deleted-file test is about a SQLite
file and is skipped on other stores.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from sqlalchemy.engine import make_url

from aiflywheel.core.versions import promote
from aiflywheel.settings import get_settings
from aiflywheel.store import Store, open_store
from aiflywheel.tasks.text_classification.demo_turn import free_port

sys.path.insert(0, str(Path(__file__).parent))
from serve_processes import serve_processes  # noqa: E402
from test_serve import FEATURE, bearer, register_tfidf  # noqa: E402

FEEDBACK_EVERY = 5  # every 5th request of a thread is feedback on its latest prediction


@dataclass
class Answer:
    sent: float  # time.monotonic() just before the request was sent
    done: float  # time.monotonic() once its answer (or transport error) came
    kind: str  # "classify" or "feedback"
    status: int  # 0: no answer (connection refused or dropped)
    prediction_id: str | None  # the prediction answered, or the one the feedback was about


@dataclass
class Load:
    """Threads sending classify and feedback requests to ``base`` and recording answers."""

    base: str
    key: str
    threads: int = 4
    per_thread: int | None = None  # stop after this many requests each; None: until stop()
    answers: list[Answer] = field(default_factory=list)
    up: threading.Event = field(default_factory=threading.Event)  # cleared: wait for it
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _workers: list[threading.Thread] = field(default_factory=list)

    def start(self) -> Load:
        self.up.set()
        self._workers = [
            threading.Thread(target=self._work, args=(n,), daemon=True) for n in range(self.threads)
        ]
        for worker in self._workers:
            worker.start()
        return self

    def stop(self) -> list[Answer]:
        self._stop.set()
        self.up.set()
        return self.join()

    def join(self) -> list[Answer]:
        for worker in self._workers:
            worker.join(timeout=120)
            assert not worker.is_alive(), "a load thread hung"
        return self.answers

    def ok(self, kind: str, since: float = 0.0) -> list[Answer]:
        with self._lock:
            return [
                a
                for a in self.answers
                if a.kind == kind and 200 <= a.status < 300 and a.sent >= since
            ]

    def wait_for(self, count: int, since: float = 0.0, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while len(self.ok("classify", since)) < count:
            assert time.monotonic() < deadline, f"fewer than {count} predictions answered"
            time.sleep(0.01)

    def _work(self, n: int) -> None:
        latest: str | None = None
        sent = 0
        with httpx.Client(base_url=self.base, headers=bearer(self.key), timeout=30) as client:
            while not self._stop.is_set() and (self.per_thread is None or sent < self.per_thread):
                self.up.wait()
                sent += 1
                if latest is not None and sent % FEEDBACK_EVERY == 0:
                    kind, pid = "feedback", latest
                    url, body = "/v1/feedback", {"prediction_id": pid, "thumb": "up"}
                    latest = None
                else:
                    kind, pid = "classify", None
                    url, body = "/v1/classify", {"text": f"great product {n}-{sent}"}
                started = time.monotonic()
                try:
                    answer = client.post(url, json=body)
                except httpx.TransportError:
                    status = 0
                else:
                    status = answer.status_code
                    if kind == "classify" and status == 200:
                        pid = latest = answer.json()["prediction_id"]
                with self._lock:
                    self.answers.append(Answer(started, time.monotonic(), kind, status, pid))


def _missing(store: Store, answers: list[Answer]) -> tuple[list[str], list[str]]:
    """(answered predictions not stored, predictions with answered feedback not stored)."""
    predictions = [a.prediction_id for a in answers if a.kind == "classify"]
    lost = [pid for pid in predictions if store.get_prediction(pid) is None]
    with_feedback = {item.prediction_id for item in store.list_feedback(FEATURE)}
    lost_feedback = [a.prediction_id for a in answers if a.kind == "feedback"]
    return lost, [pid for pid in lost_feedback if pid not in with_feedback]


def test_kill_9_under_load_loses_no_answered_prediction_or_feedback(
    flywheel_home: Path, tmp_path: Path
) -> None:
    store = open_store()
    promote(store, FEATURE, register_tfidf(store, tmp_path / "models"), actor="test")
    key, _ = store.create_api_key("client", "load")
    flywheel_home.mkdir(parents=True, exist_ok=True)  # holds the server log (on Postgres too)
    port = free_port()
    with serve_processes((flywheel_home, port, ())) as [(proc, base, _)]:
        load = Load(base, key, threads=4, per_thread=500).start()  # 2,000 requests
        load.wait_for(400)
        load.up.clear()  # the threads pause after their request in flight...
        proc.send_signal(signal.SIGKILL)  # ...which the kill may cut off
        proc.wait()
        killed_at = time.monotonic()
    with serve_processes((flywheel_home, port, ())):  # restarted on the same port
        load.up.set()
        answers = load.join()
    assert len(answers) == 4 * 500
    answered = load.ok("classify") + load.ok("feedback")
    lost, lost_feedback = _missing(Store(get_settings().store_url), answered)
    assert lost == [] and lost_feedback == [], (len(lost), len(lost_feedback))
    # (a lost prediction also shows as a 404 to feedback about it after the restart)
    assert {a.status for a in answers} <= {0, 200, 201}, "only 2xx or no answer at all"
    assert len(load.ok("classify", since=killed_at)) >= 300, "the load went on after restart"
    assert len(load.ok("feedback")) >= 300


def _readiness(base: str, status: int, timeout: float) -> float:
    """Seconds until /readyz answers ``status`` (fails after ``timeout``)."""
    started = time.monotonic()
    while True:
        try:
            if httpx.get(f"{base}/readyz", timeout=5).status_code == status:
                return time.monotonic() - started
        except httpx.TransportError:
            pass
        assert time.monotonic() - started < timeout, f"/readyz never answered {status}"
        time.sleep(0.02)


def _sqlite_files(url: str) -> list[Path]:
    database = Path(make_url(url).database or "")
    return [database.with_name(database.name + suffix) for suffix in ("", "-wal", "-shm")]


def test_database_moved_away_or_deleted_while_serving_never_answers_2xx_unstored(
    flywheel_home: Path, tmp_path: Path
) -> None:
    """Contract: a request sent after the database file is gone and answered before it
    is back gets no 2xx (with the file deleted for good: no request sent after the
    deletion gets a 2xx); /readyz answers 503 within a second; once the same file is
    back, every request ever answered 2xx is in it; a deleted file is not silently
    replaced by an empty one."""
    url = get_settings().store_url
    if make_url(url).get_backend_name() != "sqlite":
        pytest.skip("moving or deleting the database file is a SQLite scenario")
    store = open_store()
    promote(store, FEATURE, register_tfidf(store, tmp_path / "models"), actor="test")
    key, _ = store.create_api_key("client", "load")
    files = [path for path in _sqlite_files(url) if path.exists()]
    aside = tmp_path / "aside"
    aside.mkdir()
    args = ("--log-wait-seconds", "1")
    with serve_processes((flywheel_home, free_port(), args)) as [(proc, base, log)]:
        load = Load(base, key).start()
        load.wait_for(200)
        for path in files:  # the file, still open in the server, is gone from its path
            path.rename(aside / path.name)
        gone = time.monotonic()
        assert _readiness(base, 503, timeout=5) < 1.0
        time.sleep(1.5)
        returning = time.monotonic()
        for path in files:
            (aside / path.name).rename(path)
        back = time.monotonic()
        assert _readiness(base, 200, timeout=10) < 5.0  # the writer probes the store again
        load.wait_for(200, since=back)
        answers = load.stop()

        # Sent and answered while the file was away: stored nowhere, so never a 2xx. (A
        # request that waited for the file to come back may be stored, then answered.)
        while_gone = [a for a in answers if gone < a.sent and a.done < returning]
        assert len(while_gone) >= 10 and all(a.status == 503 for a in while_gone), {
            a.status for a in while_gone
        }
        lost, lost_feedback = _missing(Store(url), load.ok("classify") + load.ok("feedback"))
        assert lost == [] and lost_feedback == [], (len(lost), len(lost_feedback))

        load = Load(base, key).start()
        load.wait_for(100)
        for path in files:
            path.unlink()
        deleted = time.monotonic()
        assert _readiness(base, 503, timeout=5) < 1.0
        time.sleep(1.5)
        answers = load.stop()
        after = [a for a in answers if a.sent > deleted]
        assert len(after) >= 10 and all(a.status == 503 for a in after), {a.status for a in after}
        assert httpx.get(f"{base}/readyz", timeout=5).status_code == 503
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) in (0, -signal.SIGTERM)
        output = log.read_text()
    assert "is gone (deleted or moved away" in output
    assert not _sqlite_files(url)[0].exists(), "an empty database replaced the deleted one"
    assert os.listdir(aside) == []
