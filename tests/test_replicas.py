"""Two `flywheel serve` replicas behind nginx on one Postgres store (deploy/replicas.py):
a promote or rollback through either reaches both, an idempotency key sent to both makes
one row, the audit log is consistent, and a replica killed mid-load loses nothing
answered. Postgres only: replicas share one store (the throwaway cluster of conftest)."""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from aiflywheel.core.versions import promote
from aiflywheel.store import Store, open_store

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent / "deploy"))
from replicas import Deployment, replicas  # noqa: E402

from test_serve import FEATURE, bearer, register_tfidf  # noqa: E402

SERVE_ARGS = ("--feature", FEATURE, "--reload-interval", "0.2", "--log-level", "warning")


@pytest.fixture
def shared_store(
    postgres_server, flywheel_home: Path, monkeypatch: pytest.MonkeyPatch, request
) -> Store:
    url = postgres_server.new_database()
    request.addfinalizer(lambda: postgres_server.drop_database(url))
    monkeypatch.setenv("FLYWHEEL_DB_URL", url)
    return open_store()


@pytest.fixture
def deployment(shared_store: Store, flywheel_home: Path, tmp_path: Path) -> Iterator[Deployment]:
    register_tfidf(shared_store, tmp_path / "models")
    promote(shared_store, FEATURE, 1, actor="test")
    register_tfidf(shared_store, tmp_path / "models", C=1.0)
    with replicas(
        2, db_url=str(shared_store.url), home=flywheel_home, serve_args=SERVE_ARGS
    ) as running:
        yield running


def served_version(base: str, key: str) -> int:
    answer = httpx.post(f"{base}/v1/classify", json={"text": "great"}, headers=bearer(key))
    assert answer.status_code == 200, answer.text
    return answer.json()["version"]


def wait_for(check, what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_promote_rollback_and_idempotency_across_two_replicas(
    deployment: Deployment, shared_store: Store
) -> None:
    client, _ = shared_store.create_api_key("client", "app")
    admin, _ = shared_store.create_api_key("admin", "alice")
    a, b = (replica.url for replica in deployment.replicas)
    assert [served_version(base, client) for base in (a, b, deployment.url)] == [1, 1, 1]

    # Promote through replica a: b swaps too (its poller reads the champion from the store).
    url = f"/v1/features/{FEATURE}"
    promoted = httpx.post(f"{a}{url}/promote", json={"version": 2}, headers=bearer(admin))
    assert promoted.status_code == 200 and promoted.json()["serving_version"] == 2
    wait_for(lambda: served_version(b, client) == 2, "replica b to serve v2")
    assert {served_version(deployment.url, client) for _ in range(6)} == {2}

    # Roll back through b: a follows.
    rolled = httpx.post(f"{b}{url}/rollback", json={"reason": "r"}, headers=bearer(admin))
    assert rolled.status_code == 200 and rolled.json()["serving_version"] == 1
    wait_for(lambda: served_version(a, client) == 1, "replica a to serve v1 again")
    assert {served_version(deployment.url, client) for _ in range(6)} == {1}
    audits = [
        httpx.get(f"{base}{url}/audit", headers=bearer(client)).json()["events"] for base in (a, b)
    ]
    assert audits[0] == audits[1]
    assert [(e["action"], e["actor"], e["from_version"], e["to_version"]) for e in audits[0]] == [
        ("promote", "test", None, 1),
        ("promote", "alice", 1, 2),
        ("rollback", "alice", 2, 1),
    ]
    assert shared_store.champion(FEATURE).version == 1

    # One Idempotency-Key sent to both replicas at once: one feedback row, the same id.
    answer = httpx.post(f"{a}/v1/classify", json={"text": "很好 great"}, headers=bearer(client))
    pid = answer.json()["prediction_id"]
    wait_for(lambda: shared_store.get_prediction(pid) is not None, "the prediction stored")
    body = {"prediction_id": pid, "corrected_label": "negative"}
    headers = {**bearer(client), "Idempotency-Key": "same-key"}
    results: dict[str, httpx.Response] = {}
    threads = [
        threading.Thread(
            target=lambda base=base: results.__setitem__(
                base, httpx.post(f"{base}/v1/feedback", json=body, headers=headers)
            )
        )
        for base in (a, b)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(r.status_code for r in results.values()) == [200, 201], [
        r.text for r in results.values()
    ]
    assert len({r.json()["feedback_id"] for r in results.values()}) == 1
    assert shared_store.feedback_counts(FEATURE)["pending"] == 1
    # A retry through nginx (either replica) is the same row again.
    again = httpx.post(f"{deployment.url}/v1/feedback", json=body, headers=headers)
    assert again.status_code == 200
    assert again.json()["feedback_id"] == results[a].json()["feedback_id"]


def test_a_replica_killed_mid_load_loses_nothing_answered(
    deployment: Deployment, shared_store: Store
) -> None:
    client, _ = shared_store.create_api_key("client", "app")
    answered: list[str] = []
    failed: list[int] = []
    lock = threading.Lock()
    total, threads_n = 2000, 4
    tickets = iter(range(total))

    def load() -> None:
        with httpx.Client(base_url=deployment.url, headers=bearer(client), timeout=30) as http:
            for i in tickets:
                try:
                    answer = http.post("/v1/classify", json={"text": f"great {i}"})
                except httpx.TransportError:
                    with lock:
                        failed.append(-1)
                    continue
                with lock:
                    if answer.status_code == 200:
                        answered.append(answer.json()["prediction_id"])
                    else:
                        failed.append(answer.status_code)

    workers = [threading.Thread(target=load) for _ in range(threads_n)]
    for worker in workers:
        worker.start()
    wait_for(lambda: len(answered) >= 400, "400 answers", timeout=60)
    victim = deployment.replicas[0].process
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    for worker in workers:
        worker.join()
    # The survivor answered the rest; only requests in flight at the kill may fail (502).
    assert len(answered) + len(failed) == total
    assert len(failed) <= threads_n and set(failed) <= {502}, failed
    survivor = deployment.replicas[1].process
    survivor.send_signal(signal.SIGTERM)  # stores what it answered, then exits
    survivor.wait(timeout=60)
    stored = {pid for pid in answered if shared_store.get_prediction(pid) is not None}
    lost = len(answered) - len(stored)
    assert lost == 0, f"{lost} of {len(answered)} answered predictions are not in the store"
