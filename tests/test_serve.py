"""The REST API on tiny TF-IDF models: classify, feedback, auth, limits, log, swap, shadow."""

from __future__ import annotations

import re
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, select
from sqlalchemy.orm import sessionmaker

from aiflywheel.core.versions import promote
from aiflywheel.recipe import parse_recipe
from aiflywheel.serve.app import create_app
from aiflywheel.serve.config import ServeConfig
from aiflywheel.store import PredictionLog, ShadowPrediction, Store, open_store
from aiflywheel.tasks.text_classification.models.baseline import TfidfBaseline

sys.path.insert(0, str(Path(__file__).parent))
from tiny_models import sentiment_rows  # noqa: E402

FEATURE = "tiny-sentiment"


def register_tfidf(
    store: Store,
    folder: Path,
    *,
    feature: str = FEATURE,
    pii: str = "redact",
    C: float = 4.0,
    metrics: dict[str, Any] | None = None,
) -> int:
    """Fit a TF-IDF baseline on the tiny sentiment rows and register it as a new version."""
    rows = sentiment_rows()
    model = TfidfBaseline(C=C).fit([t for t, _ in rows], [label for _, label in rows])
    path = folder / f"{feature}-{len(list(folder.glob('*'))) if folder.exists() else 0}"
    model.save(path)
    recipe = parse_recipe(
        {"feature": feature, "data": {"source": "reviews.csv"}, "pii": {"mode": pii}}
    ).model_dump(mode="json")
    store.upsert_feature(feature, "text_classification", "tiny", recipe)
    row = store.register_model_version(
        feature,
        run_id=None,
        dataset_version_id=None,
        model_path=str(path),
        base_model="tfidf",
        method="baseline",
        metrics=metrics or {"macro_f1": 0.9, "accuracy": 0.9},
        recipe=recipe,
    )
    return row.version


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def wait_until(check: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    """Poll ``check`` until it holds (fails naming ``what`` if it never does)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"never happened: {what}")
        time.sleep(0.02)


def metric_value(text: str, name: str, **labels: str) -> float:
    """The value of one Prometheus sample (0 when absent)."""
    for line in text.splitlines():
        if not line.startswith(name):
            continue
        match = re.match(r"^([a-zA-Z_:]+)(?:\{(.*)\})? (\S+)$", line)
        if match is None or match.group(1) != name:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(2) or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(match.group(3))
    return 0.0


@pytest.fixture
def store() -> Store:
    return open_store()


@pytest.fixture
def models_dir(tmp_path: Path) -> Path:
    return tmp_path / "models"


@pytest.fixture
def keys(store: Store) -> dict[str, str]:
    client, _ = store.create_api_key("client", "app")
    admin, _ = store.create_api_key("admin", "alice")
    return {"client": client, "admin": admin}


@pytest.fixture
def serve(store: Store, models_dir: Path) -> Iterator[Callable[..., TestClient]]:
    """Start an app on the test store (one TF-IDF version registered unless told)."""
    running: list[TestClient] = []

    def start(register: bool = True, **options: Any) -> TestClient:
        if register and not store.list_model_versions():
            promote(store, FEATURE, register_tfidf(store, models_dir), actor="test")
        options.setdefault("reload_interval", 0.1)
        client = TestClient(create_app(ServeConfig(**options), store))
        client.__enter__()
        running.append(client)
        return client

    yield start
    for client in running:
        stop(client)


def stop(client: TestClient) -> None:
    """Run the app's shutdown (which flushes the prediction log); idempotent."""
    if not getattr(client, "_stopped", False):
        client._stopped = True  # type: ignore[attr-defined]
        client.__exit__(None, None, None)


# -- classify ---------------------------------------------------------------------------
def test_classify_one_text_and_a_batch(serve, keys) -> None:
    client = serve()
    answer = client.post(
        "/v1/classify", json={"text": "很好 great"}, headers=bearer(keys["client"])
    )
    assert answer.status_code == 200
    body = answer.json()
    assert body["feature"] == FEATURE and body["version"] == 1
    assert body["label"] == "positive" and len(body["prediction_id"]) == 32
    assert body["confidence"] == body["probabilities"]["positive"]
    assert abs(sum(body["probabilities"].values()) - 1) < 1e-4

    batch = client.post(
        "/v1/classify",
        json={"feature": FEATURE, "texts": ["很差 terrible 退货", "love it, excellent"]},
        headers=bearer(keys["client"]),
    ).json()
    assert batch["version"] == 1
    assert [p["label"] for p in batch["predictions"]] == ["negative", "positive"]
    assert len({p["prediction_id"] for p in batch["predictions"]}) == 2

    long_texts = [
        "很好 great " * 1000,
        "很差 terrible " * 1000,
        "love " * 2000,
    ]  # prepared off-loop
    big = client.post("/v1/classify", json={"texts": long_texts}, headers=bearer(keys["client"]))
    assert [p["label"] for p in big.json()["predictions"]] == ["positive", "negative", "positive"]


def test_feature_is_required_when_several_are_served(serve, store, models_dir, keys) -> None:
    for name in ("aaa", "bbb"):
        promote(store, name, register_tfidf(store, models_dir, feature=name), actor="test")
    client = serve()
    headers = bearer(keys["client"])
    missing = client.post("/v1/classify", json={"text": "great"}, headers=headers)
    assert missing.status_code == 422 and "aaa, bbb" in missing.json()["error"]["message"]
    unknown = client.post("/v1/classify", json={"feature": "zzz", "text": "x"}, headers=headers)
    assert unknown.status_code == 404
    assert unknown.json()["error"] == {
        "type": "NotFoundError",
        "message": "feature 'zzz' is not served here; served: aaa, bbb",
    }
    ok = client.post("/v1/classify", json={"feature": "bbb", "text": "great"}, headers=headers)
    assert ok.json()["feature"] == "bbb"


def test_only_named_features_are_served(serve, store, models_dir, keys) -> None:
    for name in ("aaa", "bbb"):
        promote(store, name, register_tfidf(store, models_dir, feature=name), actor="test")
    client = serve(features=("bbb",))
    names = [
        f["name"]
        for f in client.get("/v1/features", headers=bearer(keys["client"])).json()["features"]
    ]
    assert names == ["bbb"]


# -- auth -------------------------------------------------------------------------------
def test_auth_rejects_missing_invalid_and_revoked_keys(serve, store, keys) -> None:
    client = serve(auth_cache_seconds=0)
    body = {"text": "great"}
    assert client.post("/v1/classify", json=body).status_code == 401
    bad = client.post("/v1/classify", json=body, headers=bearer("fwk_nope_nope"))
    assert bad.status_code == 401 and bad.json()["error"]["type"] == "Unauthorized"
    assert bad.headers["www-authenticate"] == "Bearer"
    assert client.post("/v1/classify", json=body, headers=bearer(keys["client"])).status_code == 200
    store.revoke_api_key(keys["client"])
    assert client.post("/v1/classify", json=body, headers=bearer(keys["client"])).status_code == 401


def test_client_keys_cannot_promote(serve, store, models_dir, keys) -> None:
    register_tfidf(store, models_dir)  # a candidate: the admin's promotion makes it serve
    client = serve()
    denied = client.post(
        f"/v1/features/{FEATURE}/promote", json={"version": 1}, headers=bearer(keys["client"])
    )
    assert denied.status_code == 403 and "admin" in denied.json()["error"]["message"]
    allowed = client.post(
        f"/v1/features/{FEATURE}/promote", json={"version": 1}, headers=bearer(keys["admin"])
    )
    assert allowed.status_code == 200 and allowed.json()["serving_version"] == 1


def test_successful_authentications_are_cached(serve, store, keys, monkeypatch) -> None:
    client = serve(auth_cache_seconds=60)
    calls = []
    real = store.authenticate
    monkeypatch.setattr(store, "authenticate", lambda token: calls.append(1) or real(token))
    for _ in range(5):
        client.get("/v1/features", headers=bearer(keys["client"]))
    assert len(calls) == 1


def test_no_auth_serves_everyone_and_says_so(serve) -> None:
    client = serve(auth=False)
    assert client.post("/v1/classify", json={"text": "great"}).status_code == 200
    assert client.get("/healthz").json() == {"status": "ok", "auth": "off"}
    assert client.get("/v1/features").json()["auth"] == "off"


# -- feedback ---------------------------------------------------------------------------
def _predict(client: TestClient, key: str, text: str = "很好 great") -> str:
    return client.post("/v1/classify", json={"text": text}, headers=bearer(key)).json()[
        "prediction_id"
    ]


def test_feedback_is_idempotent(serve, store, keys) -> None:
    client = serve()
    headers = bearer(keys["client"])
    pid = _predict(client, keys["client"])
    body = {"prediction_id": pid, "corrected_label": "negative", "idempotency_key": "k-1"}
    first = client.post("/v1/feedback", json=body, headers=headers)
    assert first.status_code == 201 and first.json()["created"] is True
    again = client.post("/v1/feedback", json=body, headers=headers)
    assert again.status_code == 200 and again.json()["feedback_id"] == first.json()["feedback_id"]
    other = client.post(
        "/v1/feedback", json={**body, "corrected_label": "positive"}, headers=headers
    )
    assert other.status_code == 409 and other.json()["error"]["type"] == "ConflictError"

    by_header = {"prediction_id": pid, "thumb": "down", "comment": "wrong"}
    header_key = {**headers, "Idempotency-Key": "k-2"}
    assert client.post("/v1/feedback", json=by_header, headers=header_key).status_code == 201
    assert client.post("/v1/feedback", json=by_header, headers=header_key).status_code == 200
    clash = client.post(
        "/v1/feedback", json={**by_header, "idempotency_key": "k-3"}, headers=header_key
    )
    assert clash.status_code == 422
    assert store.feedback_counts(FEATURE)["pending"] == 2


def test_idempotency_keys_are_scoped_per_api_key(serve, store, keys) -> None:
    """Two API keys sending the same Idempotency-Key store two items; an admin replaying
    a client's key never gets the client's row."""
    client = serve()
    pid = _predict(client, keys["client"])
    body = {"prediction_id": pid, "thumb": "down", "comment": "slow", "idempotency_key": "k-9"}
    mine = client.post("/v1/feedback", json=body, headers=bearer(keys["client"]))
    assert mine.status_code == 201
    replayed = client.post("/v1/feedback", json=body, headers=bearer(keys["admin"]))
    assert replayed.status_code == 201 and replayed.json()["created"] is True
    assert replayed.json()["feedback_id"] != mine.json()["feedback_id"]
    # The admin's k-9 holds the admin's own row now: another payload under it conflicts.
    other = client.post(
        "/v1/feedback", json={**body, "comment": "fast"}, headers=bearer(keys["admin"])
    )
    assert other.status_code == 409  # the admin's own key k-9 now holds "slow"
    again = client.post("/v1/feedback", json=body, headers=bearer(keys["client"]))
    assert again.status_code == 200 and again.json()["feedback_id"] == mine.json()["feedback_id"]
    assert store.feedback_counts(FEATURE)["pending"] == 2


def test_a_second_correction_updates_the_pending_item(serve, store, keys) -> None:
    client = serve()
    headers = bearer(keys["client"])
    pid = _predict(client, keys["client"])
    body = {"prediction_id": pid, "corrected_label": "negative"}
    first = client.post("/v1/feedback", json=body, headers=headers).json()
    (before,) = store.list_feedback(FEATURE)
    second = client.post(
        "/v1/feedback", json={**body, "corrected_label": "positive"}, headers=headers
    )
    assert second.status_code == 200, second.text
    assert second.json()["feedback_id"] == first["feedback_id"]
    assert (second.json()["created"], second.json()["updated"]) == (False, True)
    (after,) = store.list_feedback(FEATURE)
    assert after.id == before.id and after.corrected_label == "positive"
    assert after.review_state == "pending" and after.created_at >= before.created_at
    assert store.feedback_counts(FEATURE)["pending"] == 1

    store.review_feedback(FEATURE, [(after.id, "accepted", None)], reviewer="ann")
    third = client.post("/v1/feedback", json=body, headers=headers)
    assert third.status_code == 409
    assert third.json()["error"]["message"] == (
        f"prediction {pid!r} already has a correction, feedback {after.id}, reviewed "
        "(accepted); a new correction cannot replace it"
    )
    assert store.list_feedback(FEATURE)[0].corrected_label == "positive"


def test_feedback_errors(serve, store, keys) -> None:
    client = serve()
    headers = bearer(keys["client"])
    pid = _predict(client, keys["client"])
    unknown = client.post(
        "/v1/feedback", json={"prediction_id": "f" * 32, "thumb": "up"}, headers=headers
    )
    assert unknown.status_code == 404 and "f" * 32 in unknown.json()["error"]["message"]
    label = client.post(
        "/v1/feedback", json={"prediction_id": pid, "corrected_label": "meh"}, headers=headers
    )
    assert label.status_code == 422
    assert label.json()["error"]["message"] == (
        f"corrected_label: not a label of feature '{FEATURE}' (labels: negative, positive), "
        "got 'meh'"
    )
    empty = client.post("/v1/feedback", json={"prediction_id": pid}, headers=headers)
    assert empty.status_code == 422 and "at least one of" in empty.json()["error"]["message"]
    thumb = client.post(
        "/v1/feedback", json={"prediction_id": pid, "thumb": "left"}, headers=headers
    )
    assert thumb.status_code == 422 and thumb.json()["error"]["message"].startswith("thumb:")
    # The payload is the task's: a field of the wrong shape or of another task is named.
    for payload, message in (
        ({"corrected_label": 5}, "corrected_label: Input should be a valid string, got 5"),
        ({"label": "negative"}, "unknown field 'label'"),
        ({"corrected_answer": "x"}, "corrected_answer: this feature is a classifier: send "),
    ):
        wrong = client.post("/v1/feedback", json={"prediction_id": pid, **payload}, headers=headers)
        assert wrong.status_code == 422, payload
        assert wrong.json()["error"]["message"].startswith(message), wrong.json()
    assert store.list_feedback(FEATURE) == []


def test_an_answered_prediction_is_already_stored(serve, store, keys) -> None:
    client = serve()
    headers = bearer(keys["client"])
    pid = _predict(client, keys["client"])
    assert store.get_prediction(pid) is not None  # no waiting: stored before the answer
    batch = client.post("/v1/classify", json={"texts": ["great", "awful"]}, headers=headers)
    for prediction in batch.json()["predictions"]:
        assert store.get_prediction(prediction["prediction_id"]) is not None
    answer = client.post(
        "/v1/feedback", json={"prediction_id": pid, "thumb": "up"}, headers=headers
    )
    assert answer.status_code == 201


# -- limits and error format ------------------------------------------------------------
def test_limits_and_bad_input(serve, keys) -> None:
    client = serve(max_body_bytes=4096, max_texts=3, max_text_chars=100)
    headers = bearer(keys["client"])

    def error(**kwargs: Any) -> tuple[int, str]:
        answer = client.post("/v1/classify", headers={**headers, **kwargs.pop("h", {})}, **kwargs)
        return answer.status_code, answer.json()["error"]["message"]

    assert error(json={"text": "x" * 5000}) == (413, "request body is larger than 4096 bytes")
    streamed = (chunk for chunk in [b'{"text": "', b"x" * 5000, b'"}'])
    assert error(content=streamed, h={"content-type": "application/json"})[0] == 413
    assert error(json={"texts": ["a", "b", "c", "d"]}) == (
        422,
        "texts: at most 3 texts per request, got 4",
    )
    assert error(json={"text": ""}) == (422, "text: empty or whitespace-only text")
    assert error(json={"texts": ["ok", " \n\t"]}) == (
        422,
        "texts[1]: empty or whitespace-only text",
    )
    assert error(json={"text": "y" * 101}) == (422, "text: at most 100 characters, got 101")
    assert error(json={"text": "<p> </p>"}) == (422, "text: nothing left after cleaning")
    assert error(json={"texts": []}) == (422, "texts: give at least one text")
    assert error(json={"text": "a", "texts": ["b"]})[0] == 422
    assert error(json={"text": 5}) == (422, "text: Input should be a valid string, got 5")
    assert error(json={"text": None}) == (422, "text must be a string, got null")
    assert error(json={"texts": None}) == (422, "texts must be a list of strings, got null")
    assert error(json={}) == (422, "give 'text' (one string) or 'texts' (a list of strings)")
    assert error(json={"text": "a", "texts": ["b"]}) == (
        422,
        "give either 'text' (one string) or 'texts' (a list), not both",
    )
    assert error(content=b"{nope", h={"content-type": "application/json"})[1].startswith(
        "the body is not valid JSON"
    )


def test_every_error_is_one_line_json(serve, keys) -> None:
    client = serve()
    for answer in (
        client.get("/v1/nothing"),
        client.put("/v1/classify"),
        client.post(
            "/v1/classify", json={"feature": "nope", "text": "x"}, headers=bearer(keys["client"])
        ),
        client.get("/v1/features/nope/versions", headers=bearer(keys["client"])),
    ):
        assert answer.status_code in (404, 405)
        error = answer.json()["error"]
        assert set(error) == {"type", "message"} and "\n" not in error["message"]
        assert "Traceback" not in answer.text


# -- micro-batching ---------------------------------------------------------------------
def test_concurrent_requests_share_model_calls(serve, keys) -> None:
    client = serve(max_wait_ms=200, max_batch=64)
    headers = bearer(keys["client"])
    client.get("/v1/features", headers=headers)  # the key is cached before the burst
    answers: list[int] = []
    barrier = threading.Barrier(32)

    def call(i: int) -> None:
        barrier.wait()
        r = client.post("/v1/classify", json={"text": f"great {i}"}, headers=headers)
        answers.append(r.status_code)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(32)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert answers == [200] * 32
    metrics = client.get("/metrics").text
    batches = metric_value(metrics, "flywheel_batch_requests_count", feature=FEATURE)
    requests = metric_value(metrics, "flywheel_batch_requests_sum", feature=FEATURE)
    assert requests == 32 and batches < 32  # some model call answered several requests


# -- prediction log ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("mode", "stored"),
    [
        ("redact", "call me at <PHONE> great"),
        ("drop_row", "call me at <PHONE> great"),
        ("mask", "call me at 138****5678 great"),
        # The recipe may keep PII in its own training data; the store's gate still redacts.
        ("off", "call me at <PHONE> great"),
    ],
)
def test_predictions_are_logged_as_training_sees_them(
    serve, store, models_dir, keys, mode: str, stored: str
) -> None:
    promote(store, FEATURE, register_tfidf(store, models_dir, pii=mode), actor="test")
    client = serve()
    pid = _predict(client, keys["client"], "  call me at <b>13812345678</b>   great ")
    stop(client)  # shutdown flushes the log
    row, feature = store.get_prediction(pid)
    assert feature == FEATURE and row.version == 1
    assert row.text == stored
    assert row.label in ("positive", "negative") and set(row.probabilities) == {
        "negative",
        "positive",
    }
    assert row.latency_ms >= 0


# -- hot swap, promote, rollback --------------------------------------------------------
def test_a_new_champion_is_served_without_restart(serve, store, models_dir, keys) -> None:
    register_tfidf(store, models_dir)
    promote(store, FEATURE, 1, actor="test")
    client = serve()
    headers = bearer(keys["client"])
    assert (
        client.post("/v1/classify", json={"text": "great"}, headers=headers).json()["version"] == 1
    )
    register_tfidf(store, models_dir, C=1.0)
    promote(store, FEATURE, 2, actor="test")

    def serves_v2() -> bool:
        answer = client.post("/v1/classify", json={"text": "great"}, headers=headers)
        assert answer.status_code == 200
        return answer.json()["version"] == 2

    wait_until(serves_v2, "v2 answers after the promotion")
    metrics = client.get("/metrics").text
    assert metric_value(metrics, "flywheel_serving_version", feature=FEATURE) == 2
    assert (
        metric_value(metrics, "flywheel_model_reloads_total", feature=FEATURE, outcome="swapped")
        == 1
    )
    stop(client)
    versions = {row.version for row in _all(store, PredictionLog)}
    assert versions == {1, 2}


def test_without_a_champion_classify_answers_409_naming_the_candidates(
    serve, store, models_dir, keys
) -> None:
    register_tfidf(store, models_dir)
    register_tfidf(store, models_dir, C=1.0)
    client = serve(register=False, reload_interval=3600)
    headers = bearer(keys["admin"])
    answer = client.post("/v1/classify", json={"text": "great"}, headers=headers)
    assert answer.status_code == 409
    assert answer.json()["error"] == {
        "type": "ConflictError",
        "message": f"feature {FEATURE!r} has no champion; candidates: v1, v2 \u2014 promote one "
        f"with `flywheel promote {FEATURE}:2` (or start the server with --serve-candidates)",
    }
    named = client.post("/v1/classify", json={"feature": FEATURE, "text": "x"}, headers=headers)
    assert named.status_code == 409
    promoted = client.post(f"/v1/features/{FEATURE}/promote", json={"version": 1}, headers=headers)
    assert promoted.status_code == 200 and promoted.json()["serving_version"] == 1
    assert (
        client.post("/v1/classify", json={"text": "great"}, headers=headers).json()["version"] == 1
    )


def test_serve_candidates_serves_the_newest_candidate(serve, store, models_dir, keys) -> None:
    register_tfidf(store, models_dir)
    register_tfidf(store, models_dir, C=1.0)
    client = serve(register=False, serve_candidates=True)
    answer = client.post("/v1/classify", json={"text": "great"}, headers=bearer(keys["client"]))
    assert answer.status_code == 200 and answer.json()["version"] == 2


def test_promote_and_rollback_endpoints(serve, store, models_dir, keys) -> None:
    register_tfidf(store, models_dir)
    promote(store, FEATURE, 1, actor="test")
    register_tfidf(store, models_dir, C=1.0)
    register_tfidf(store, models_dir, metrics={"gate": {"passed": False, "reason": "worse"}})
    client = serve(reload_interval=3600)  # only the endpoints switch versions here
    admin = bearer(keys["admin"])
    url = f"/v1/features/{FEATURE}"

    promoted = client.post(f"{url}/promote", json={"version": 2, "reason": "better"}, headers=admin)
    assert promoted.status_code == 200
    body = promoted.json()
    assert body["serving_version"] == 2
    assert body["event"]["actor"] == "alice" and body["event"]["reason"] == "better"
    assert (body["event"]["from_version"], body["event"]["to_version"]) == (1, 2)
    answer = client.post("/v1/classify", json={"text": "great"}, headers=admin).json()
    assert answer["version"] == 2

    refused = client.post(f"{url}/promote", json={"version": 3}, headers=admin)
    assert refused.status_code == 409 and "gate" in refused.json()["error"]["message"]
    missing = client.post(f"{url}/promote", json={"version": 9}, headers=admin)
    assert missing.status_code == 404

    rolled = client.post(f"{url}/rollback", json={"reason": "regression"}, headers=admin)
    assert rolled.status_code == 200 and rolled.json()["serving_version"] == 1
    assert rolled.json()["event"]["action"] == "rollback"
    assert client.post("/v1/classify", json={"text": "x y"}, headers=admin).json()["version"] == 1

    listed = client.get(f"{url}/versions", headers=admin).json()
    assert [(v["version"], v["status"], v["serving"]) for v in listed["versions"]] == [
        (1, "champion", True),
        (2, "archived", False),
        (3, "candidate", False),
    ]
    audit = client.get(f"{url}/audit", headers=bearer(keys["client"])).json()["events"]
    assert [(e["action"], e["actor"]) for e in audit][-2:] == [
        ("promote", "alice"),
        ("rollback", "alice"),
    ]


# -- shadow -----------------------------------------------------------------------------
def test_shadow_version_scores_live_traffic_in_the_background(
    serve, store, models_dir, keys
) -> None:
    register_tfidf(store, models_dir)
    promote(store, FEATURE, 1, actor="test")
    register_tfidf(store, models_dir, C=0.05)
    client = serve(shadows=(f"{FEATURE}:2",))
    headers = bearer(keys["client"])
    texts = [text for text, _ in sentiment_rows(40, seed=3)]
    answers = [
        client.post("/v1/classify", json={"texts": texts[i : i + 8]}, headers=headers).json()
        for i in range(0, 40, 8)
    ]
    assert {a["version"] for a in answers} == {1}

    def all_scored() -> bool:
        features = client.get("/v1/features", headers=headers).json()["features"]
        return (features[0]["shadow"] or {}).get("scored") == 40

    wait_until(all_scored, "40 shadow rows stored")
    shadow = client.get("/v1/features", headers=headers).json()["features"][0]["shadow"]
    assert shadow["version"] == 2 and 0 <= shadow["agreement"] <= 1
    champion = {p["prediction_id"]: p["label"] for a in answers for p in a["predictions"]}
    rows = _all(store, ShadowPrediction)
    assert {r.prediction_id for r in rows} == set(champion)
    assert all(r.agrees == (r.label == champion[r.prediction_id]) for r in rows)
    metrics = client.get("/metrics").text
    assert metric_value(metrics, "flywheel_shadow_scored_total", feature=FEATURE) == 40


def test_shadow_needs_a_served_feature(serve, store, models_dir) -> None:
    register_tfidf(store, models_dir)
    with pytest.raises(Exception, match="not served"):
        serve(shadows=("other:1",))


# -- health and metrics -----------------------------------------------------------------
def test_metrics_expose_requests_latency_feedback_versions_batches_backlog(serve, keys) -> None:
    client = serve()
    headers = bearer(keys["client"])
    pid = _predict(client, keys["client"])
    client.post("/v1/feedback", json={"prediction_id": pid, "thumb": "up"}, headers=headers)
    client.post("/v1/classify", json={"text": ""}, headers=headers)
    answer = client.get("/metrics")
    assert answer.headers["content-type"].startswith("text/plain")
    text = answer.text
    assert (
        metric_value(text, "flywheel_http_requests_total", route="/v1/classify", status="200") == 1
    )
    assert (
        metric_value(text, "flywheel_http_requests_total", route="/v1/classify", status="422") == 1
    )
    assert (
        metric_value(text, "flywheel_http_request_duration_seconds_count", route="/v1/feedback")
        == 1
    )
    assert metric_value(text, "flywheel_feedback_total", feature=FEATURE, kind="thumb_up") == 1
    assert metric_value(text, "flywheel_serving_version", feature=FEATURE) == 1
    assert metric_value(text, "flywheel_batch_size_count", feature=FEATURE) == 1
    assert "flywheel_prediction_log_backlog " in text
    assert metric_value(text, "flywheel_predictions_total", feature=FEATURE, version="1") == 1


def test_health_and_readiness(serve) -> None:
    client = serve()
    assert client.get("/healthz").json() == {"status": "ok", "auth": "on"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["serving"] == {FEATURE: 1}
    assert client.get("/docs").status_code == 200
    assert "/v1/classify" in client.get("/openapi.json").json()["paths"]


def test_a_dead_store_answers_503_and_never_an_unstored_200(serve, store, tmp_path, keys) -> None:
    client = serve(log_wait_seconds=0.5, auth_cache_seconds=600)
    headers = bearer(keys["client"])
    before = _predict(client, keys["client"])
    assert store.get_prediction(before) is not None

    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    working = store._sessions
    store._sessions = sessionmaker(create_engine(f"sqlite:///{blocker}/db.sqlite"))
    try:
        ready = client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["error"]["type"] == "StoreError"
        assert client.get("/v1/features", headers=headers).status_code == 503
        feedback = client.post(
            "/v1/feedback", json={"prediction_id": before, "thumb": "up"}, headers=headers
        )
        assert feedback.status_code == 503 and feedback.json()["error"]["type"] == "StoreError"
        started = time.monotonic()
        first = client.post("/v1/classify", json={"text": "great 0"}, headers=headers)
        assert first.status_code == 503 and time.monotonic() - started >= 0.5  # waited, then 503
        assert "not stored within 0.5 s" in first.json()["error"]["message"]
        started = time.monotonic()
        for i in range(1, 4):  # the store is known to fail: 503 at once
            answer = client.post("/v1/classify", json={"text": f"great {i}"}, headers=headers)
            assert answer.status_code == 503, answer.json()
            assert "cannot be written" in answer.json()["error"]["message"]
        assert time.monotonic() - started < 0.5
        assert client.get("/healthz").status_code == 200
    finally:
        store._sessions = working
    wait_until(lambda: client.get("/readyz").status_code == 200, "ready once the store is back")
    assert store.count_predictions(FEATURE) == 1  # nothing answered 503 was stored
    after = client.post("/v1/classify", json={"text": "great"}, headers=headers)
    assert after.status_code == 200
    assert store.get_prediction(after.json()["prediction_id"]) is not None


def test_startup_fails_without_any_trained_feature(store) -> None:
    with pytest.raises(Exception, match="no feature has a model version"):  # noqa: SIM117
        with TestClient(create_app(ServeConfig(), store)):
            pass


def _all(store: Store, table: type) -> list[Any]:
    with store.session() as session:
        return list(session.scalars(select(table)))
