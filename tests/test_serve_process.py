"""`flywheel serve` as a real process: SIGTERM drains, kill -9 keeps answered feedback;
and the `serve` / `keys` commands."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from sqlalchemy import text

from aiflywheel.cli import main
from aiflywheel.core.versions import promote
from aiflywheel.settings import get_settings
from aiflywheel.store import Store, open_store
from aiflywheel.tasks.text_classification.demo_turn import free_port

sys.path.insert(0, str(Path(__file__).parent))
from serve_processes import serve_processes  # noqa: E402
from test_serve import FEATURE, bearer, metric_value, register_tfidf  # noqa: E402


@contextmanager
def running_server(home: Path, *args: str) -> Iterator[tuple[subprocess.Popen, str, Path]]:
    """`flywheel serve` on a free loopback port, ready; killed on the way out."""
    with serve_processes((home, free_port(), args), ready_seconds=60) as [(proc, base, log)]:
        yield proc, base, log


def test_sigterm_finishes_requests_in_flight_and_stores_every_prediction(
    flywheel_home: Path, tmp_path: Path
) -> None:
    store = open_store()
    register_tfidf(store, tmp_path / "models")  # a candidate, served with --serve-candidates
    # A batch waits 3 s for a 17th request that never comes: all 16 are in flight at SIGTERM.
    with running_server(
        flywheel_home,
        "--no-auth",
        "--serve-candidates",
        "--max-batch",
        "17",
        "--max-wait-ms",
        "3000",
    ) as (proc, base, log):
        answers: list[httpx.Response] = []

        def classify(i: int) -> None:
            answers.append(
                httpx.post(f"{base}/v1/classify", json={"text": f"great {i}"}, timeout=60)
            )

        threads = [threading.Thread(target=classify, args=(i,)) for i in range(16)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 30
        while True:
            metrics = httpx.get(f"{base}/metrics", timeout=5).text
            if metric_value(metrics, "flywheel_predictions_in_progress", feature=FEATURE) == 16:
                break
            assert time.monotonic() < deadline, "the 16 requests never reached the model"
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        for thread in threads:
            thread.join()
        assert proc.wait(timeout=60) in (0, -signal.SIGTERM)
        output = log.read_text()
    assert [a.status_code for a in answers] == [200] * 16
    assert "authentication is OFF" in " ".join(output.split())
    reopened = Store(get_settings().store_url)
    for answer in answers:
        assert reopened.get_prediction(answer.json()["prediction_id"]) is not None
    assert reopened.count_predictions(FEATURE) == 16


def test_kill_9_during_feedback_keeps_every_answered_feedback(
    flywheel_home: Path, tmp_path: Path
) -> None:
    store = open_store()
    promote(store, FEATURE, register_tfidf(store, tmp_path / "models"), actor="test")
    key, _ = store.create_api_key("client", "load")
    headers = bearer(key)
    with running_server(flywheel_home) as (proc, base, _log):
        ids: list[str] = []
        for i in range(4):
            texts = [f"review {i}-{j} great" for j in range(50)]
            body = httpx.post(
                f"{base}/v1/classify", json={"texts": texts}, headers=headers, timeout=30
            ).json()
            ids += [p["prediction_id"] for p in body["predictions"]]
        answered: list[str] = []
        lock = threading.Lock()

        def give_feedback(part: list[str]) -> None:
            with httpx.Client(base_url=base, headers=headers, timeout=30) as client:
                for pid in part:
                    try:
                        answer = client.post(
                            "/v1/feedback",
                            json={"prediction_id": pid, "thumb": "up", "idempotency_key": pid},
                        )
                    except httpx.TransportError:
                        return
                    if answer.is_success:
                        with lock:
                            answered.append(pid)

        threads = [threading.Thread(target=give_feedback, args=(ids[k::8],)) for k in range(8)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 60
        while len(answered) < 40:
            assert time.monotonic() < deadline, "feedback never got going"
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
        for thread in threads:
            thread.join()
        proc.wait()
    assert answered
    reopened = Store(get_settings().store_url)
    if reopened.engine.dialect.name == "sqlite":  # the file survived the kill intact
        with reopened.engine.connect() as connection:
            assert connection.execute(text("PRAGMA integrity_check")).scalar() == "ok"
    stored = {item.prediction_id for item in reopened.list_feedback(FEATURE)}
    assert set(answered) <= stored


# -- commands ---------------------------------------------------------------------------
def test_keys_create_list_revoke(capsys) -> None:
    assert main(["keys", "create", "--role", "admin", "--name", "ops"]) == 0
    key = capsys.readouterr().out.strip().splitlines()[-1]
    store = open_store()
    row = store.authenticate(key)
    assert row is not None and row.role == "admin" and row.name == "ops"
    assert main(["keys", "list"]) == 0
    listed = capsys.readouterr().out
    assert row.key_id in listed and "admin" in listed and key not in listed
    assert main(["keys", "revoke", row.key_id]) == 0
    assert store.authenticate(key) is None
    assert main(["keys", "revoke", "nope"]) == 2
    assert "no API key with id 'nope'" in capsys.readouterr().err


def test_serve_refuses_to_start_without_models_or_with_a_bad_shadow(capsys, tmp_path) -> None:
    assert main(["serve", "--port", str(free_port())]) == 2
    assert "no feature has a model version" in capsys.readouterr().err
    register_tfidf(open_store(), tmp_path / "models")
    assert main(["serve", "--shadow", FEATURE]) == 2
    assert "FEATURE:VERSION" in capsys.readouterr().err
    assert main(["serve", "--feature", "other"]) == 2
    assert "unknown feature 'other'" in capsys.readouterr().err
