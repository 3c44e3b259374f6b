"""Images through the whole loop over HTTP: train -> serve v1 -> upload (multipart and
base64) -> corrections -> retrain -> gate -> the running server answers with v2 ->
rollback returns v1 -> the audit shows all of it."""

from __future__ import annotations

import base64
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from aiflywheel.core.registry import get_task
from aiflywheel.recipe import load_recipe
from aiflywheel.serve.app import create_app
from aiflywheel.serve.config import ServeConfig
from aiflywheel.settings import get_settings
from aiflywheel.store import Store, open_store

sys.path.insert(0, str(Path(__file__).parent))
from image_world import make_folder, picture, png, recipe_text  # noqa: E402

FEATURE = "shapes"
FIRST = {"version": 1, "force": True, "reason": "collect feedback"}


@pytest.fixture
def running(tmp_path: Path) -> Iterator[tuple[TestClient, Store, dict[str, dict[str, str]]]]:
    make_folder(tmp_path / "images")
    (tmp_path / "recipe.yaml").write_text(recipe_text("images"), encoding="utf-8")
    recipe = load_recipe(tmp_path / "recipe.yaml")
    store = open_store()
    get_task(recipe.task).train(recipe, store=store, settings=get_settings(), report=print)
    client_key, _ = store.create_api_key("client", "shop app")
    admin_key, _ = store.create_api_key("admin", "pm alice")
    keys = {
        "client": {"Authorization": f"Bearer {client_key}"},
        "admin": {"Authorization": f"Bearer {admin_key}"},
    }
    with TestClient(create_app(ServeConfig(reload_interval=0.1), store)) as http:
        yield http, store, keys


def serving_version(http: TestClient, keys: dict, image: bytes, expected: int) -> int:
    deadline = time.monotonic() + 30
    while True:
        answer = http.post(
            "/v1/predict", files={"file": ("x.png", image, "image/png")}, headers=keys["client"]
        )
        version = answer.json()["version"]
        if version == expected or time.monotonic() > deadline:
            return version
        time.sleep(0.05)


def test_corrected_images_promote_v2_and_rollback_returns_v1(running) -> None:
    http, store, keys = running
    assert (
        http.post(f"/v1/features/{FEATURE}/promote", json=FIRST, headers=keys["admin"]).status_code
        == 200
    )
    rng = np.random.default_rng(7)
    # Users upload pictures in a style v1 never saw (turned by 90 degrees), one by multipart, the
    # rest as base64 JSON batches, and correct every wrong answer.
    users = [(label, png(picture(label, rng, turned=True))) for label in ("top", "bottom") * 24]
    one = http.post(
        "/v1/predict",
        files={"file": ("a.png", users[0][1], "image/png")},
        data={"feature": FEATURE},
        headers=keys["client"],
    )
    assert one.status_code == 200, one.text
    assert one.json()["version"] == 1 and set(one.json()["probabilities"]) == {"bottom", "top"}
    batch = http.post(
        "/v1/predict",
        json={"feature": FEATURE, "images": [base64.b64encode(b).decode() for _, b in users[1:]]},
        headers=keys["client"],
    )
    assert batch.status_code == 200, batch.text
    predictions = [one.json(), *batch.json()["predictions"]]
    wrong = 0
    for prediction, (label, _) in zip(predictions, users, strict=True):
        body = {"prediction_id": prediction["prediction_id"]}
        if prediction["label"] == label:
            body["thumb"] = "up"
        else:
            body.update(thumb="down", corrected_label=label)
            wrong += 1
        answer = http.post("/v1/feedback", json=body, headers=keys["client"])
        assert answer.status_code == 201, answer.text
    assert wrong > 0  # v1 gets some of the new style wrong
    # The prediction log keeps a reference with a thumbnail, not the upload.
    logged = store.list_feedback(FEATURE)[0].text
    assert logged.startswith("image sha256:") and ".thumb64.png" in logged
    bad = http.post(
        "/v1/feedback",
        json={"prediction_id": predictions[0]["prediction_id"], "corrected_label": "circle"},
        headers=keys["client"],
    )
    assert bad.status_code == 422 and "not a label" in bad.text

    pending = store.list_feedback(FEATURE, state="pending")
    store.review_feedback(FEATURE, [(i.id, "accepted", None) for i in pending], reviewer="ann")
    result = get_task("image_classification").retrain(
        FEATURE, store=store, settings=get_settings(), actor="ann", report=print
    )
    assert result.decision == "promoted", result.gate.reason
    assert result.data["held_out"] > 0 and result.data["used_for_training"] > 0

    probe = users[0][1]
    assert serving_version(http, keys, probe, 2) == 2  # hot swap, no restart
    answer = http.post(
        "/v1/predict", json={"image": base64.b64encode(probe).decode()}, headers=keys["client"]
    )
    assert answer.json()["label"] == users[0][0]

    back = http.post(
        f"/v1/features/{FEATURE}/rollback",
        json={"reason": "support tickets"},
        headers=keys["admin"],
    )
    assert back.status_code == 200, back.text
    assert serving_version(http, keys, probe, 1) == 1
    events = http.get(f"/v1/features/{FEATURE}/audit", headers=keys["client"]).json()["events"]
    assert [(e["action"], e["from_version"], e["to_version"], e["decision"]) for e in events] == [
        ("promote", None, 1, "promoted"),
        ("retrain", 1, 2, "promoted"),
        ("rollback", 2, 1, "rolled back"),
    ]


def test_request_limits_answer_413_and_422_in_one_line(running) -> None:
    http, _store, keys = running
    http.post(f"/v1/features/{FEATURE}/promote", json=FIRST, headers=keys["admin"])
    cases = [
        ({"files": {"file": ("a.png", b"hello, not an image", "image/png")}}, 422, "not an image"),
        ({"files": {"file": ("a.png", b"", "image/png")}}, 422, "zero-byte"),
        (
            {"files": {"file": ("a.png", png(np.zeros((1, 1), np.uint8)), "image/png")}},
            422,
            "smaller than min_side",
        ),
        ({"json": {"image": "%%%"}}, 422, "image: not valid base64"),
        ({"json": {"image": "", "images": []}}, 422, "give either"),
        (
            {"content": b"x" * (2 << 20), "headers_extra": {"content-type": "image/png"}},
            413,
            "larger than",
        ),
        (
            {"content": b"abc", "headers_extra": {"content-type": "text/plain"}},
            415,
            "multipart/form-data",
        ),
    ]
    for kwargs, status, words in cases:
        headers = {**keys["client"], **kwargs.pop("headers_extra", {})}
        answer = http.post("/v1/predict", headers=headers, **kwargs)
        assert answer.status_code == status, (words, answer.text)
        message = answer.json()["error"]["message"]
        assert words in message and "\n" not in message
    classify = http.post("/v1/classify", json={"text": "hello"}, headers=keys["client"])
    assert classify.status_code == 422 and "/v1/predict" in classify.text


def test_an_answered_image_prediction_is_already_stored(running, monkeypatch) -> None:
    """A 2xx means durable: with a slow store the answer waits for the commit."""
    http, store, keys = running
    http.post(f"/v1/features/{FEATURE}/promote", json=FIRST, headers=keys["admin"])
    original = store.log_predictions

    def slow(rows):
        time.sleep(0.3)
        original(rows)

    monkeypatch.setattr(store, "log_predictions", slow)
    image = png(picture("top", np.random.default_rng(3), turned=False))
    answer = http.post(
        "/v1/predict", files={"file": ("a.png", image, "image/png")}, headers=keys["client"]
    )
    assert answer.status_code == 200, answer.text
    assert store.get_prediction(answer.json()["prediction_id"]) is not None
