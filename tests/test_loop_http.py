"""The whole loop over HTTP: serve v1 -> predictions -> corrections -> retrain -> gate ->
the running server answers with v2 -> rollback returns v1 -> the audit shows all of it."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from aiflywheel.recipe import load_recipe
from aiflywheel.serve.app import create_app
from aiflywheel.serve.config import ServeConfig
from aiflywheel.settings import get_settings
from aiflywheel.store import Store, open_store
from aiflywheel.tasks.text_classification.retrain import retrain_feature
from aiflywheel.tasks.text_classification.train import train_feature

sys.path.insert(0, str(Path(__file__).parent))
from loop_world import make_world  # noqa: E402

FEATURE = "shop-sentiment"


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    return make_world(tmp_path_factory.mktemp("http-loop-world"))


@pytest.fixture
def running(world: Path) -> Iterator[tuple[TestClient, Store, dict[str, dict[str, str]]]]:
    store = open_store()
    train_feature(load_recipe(world / "recipe.yaml"), store=store, settings=get_settings())
    client_key, _ = store.create_api_key("client", "shop app")
    admin_key, _ = store.create_api_key("admin", "pm alice")
    keys = {
        "client": {"Authorization": f"Bearer {client_key}"},
        "admin": {"Authorization": f"Bearer {admin_key}"},
    }
    with TestClient(create_app(ServeConfig(reload_interval=0.1), store)) as http:
        yield http, store, keys


# The tiny v1 does not beat its baseline: its promotion is an override, with a reason.
FIRST = {"version": 1, "force": True, "reason": "collect feedback"}


def users_answer(
    http: TestClient, keys: dict, world: Path, users_file: str, *, flip: bool
) -> tuple[int, int]:
    """Users send their texts, then answer every prediction (a thumb or the right label)."""
    users = json.loads((world / users_file).read_text(encoding="utf-8"))
    predictions = []
    for i in range(0, len(users), 16):
        chunk = users[i : i + 16]
        answer = http.post(
            "/v1/classify",
            json={"feature": FEATURE, "texts": [t for t, _ in chunk]},
            headers=keys["client"],
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["version"] == 1
        predictions += answer.json()["predictions"]
    corrections = 0
    for prediction, (_, label) in zip(predictions, users, strict=True):
        truth = {"positive": "negative", "negative": "positive"}[label] if flip else label
        body = {"prediction_id": prediction["prediction_id"]}
        if prediction["label"] == truth:
            body["thumb"] = "up"
        else:
            body.update(thumb="down", corrected_label=truth)
            corrections += 1
        answer = http.post("/v1/feedback", json=body, headers=keys["client"])
        assert answer.status_code == 201, answer.text
    return len(predictions), corrections


def serving_version(http: TestClient, keys: dict, expected: int) -> int:
    deadline = time.monotonic() + 30
    while True:
        answer = http.post(
            "/v1/classify",
            json={"feature": FEATURE, "text": "很好 product"},
            headers=keys["client"],
        )
        version = answer.json()["version"]
        if version == expected or time.monotonic() > deadline:
            return version
        time.sleep(0.05)


def accept_everything(store: Store) -> None:
    pending = store.list_feedback(FEATURE, state="pending")
    store.review_feedback(FEATURE, [(i.id, "accepted", None) for i in pending], reviewer="ann")


def test_feedback_promotes_v2_and_rollback_returns_v1(running, world: Path) -> None:
    http, store, keys = running
    denied = http.post(
        f"/v1/features/{FEATURE}/promote", json={"version": 1}, headers=keys["client"]
    )
    assert denied.status_code == 403
    first = http.post(f"/v1/features/{FEATURE}/promote", json=FIRST, headers=keys["admin"])
    assert first.status_code == 200, first.text

    sent, corrections = users_answer(http, keys, world, "users.json", flip=False)
    assert sent == 240 and corrections > 0
    accept_everything(store)
    result = retrain_feature(FEATURE, store=store, settings=get_settings(), actor="ann")
    assert result.decision == "promoted", result.gate.reason

    assert serving_version(http, keys, 2) == 2  # picked up without a restart
    versions = http.get(f"/v1/features/{FEATURE}/versions", headers=keys["client"]).json()
    statuses = {v["version"]: v["status"] for v in versions["versions"]}
    assert statuses == {1: "archived", 2: "champion"}

    back = http.post(
        f"/v1/features/{FEATURE}/rollback",
        json={"reason": "support tickets"},
        headers=keys["admin"],
    )
    assert back.status_code == 200, back.text
    assert serving_version(http, keys, 1) == 1

    audit = http.get(f"/v1/features/{FEATURE}/audit", headers=keys["client"])
    assert audit.status_code == 200, audit.text
    events = audit.json()["events"]
    assert [(e["action"], e["from_version"], e["to_version"], e["decision"]) for e in events] == [
        ("promote", None, 1, "promoted"),
        ("retrain", 1, 2, "promoted"),
        ("rollback", 2, 1, "rolled back"),
    ]
    assert [e["actor"] for e in events] == ["pm alice", "ann", "pm alice"]
    retrain = events[1]["details"]
    assert retrain["candidate"]["gate_scores"]["all"] > retrain["champion"]["gate_scores"]["all"]
    assert events[2]["reason"] == "support tickets"


def test_the_gate_refuses_and_the_server_keeps_v1(running, world: Path) -> None:
    http, store, keys = running
    assert (
        http.post(f"/v1/features/{FEATURE}/promote", json=FIRST, headers=keys["admin"]).status_code
        == 200
    )
    users_answer(http, keys, world, "en_users.json", flip=True)
    accept_everything(store)
    result = retrain_feature(FEATURE, store=store, settings=get_settings(), actor="ann")
    assert result.decision == "kept"
    time.sleep(0.5)  # several reload intervals: nothing may change
    assert serving_version(http, keys, 1) == 1
    refused = http.post(
        f"/v1/features/{FEATURE}/promote", json={"version": 2}, headers=keys["admin"]
    )
    assert refused.status_code == 409 and "did not pass the promotion gate" in refused.text
    events = http.get(f"/v1/features/{FEATURE}/audit", headers=keys["admin"]).json()["events"]
    assert events[-1]["decision"] == "kept" and events[-1]["reason"].startswith("kept the champion")
