"""text_to_text through the whole loop over HTTP: train -> serve v1 -> transform -> an
edited output as feedback -> retrain -> chrF gate -> the running server answers with v2
-> rollback returns v1 -> the audit shows all of it."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from aiflywheel.core.registry import get_task
from aiflywheel.core.versions import load
from aiflywheel.recipe import load_recipe
from aiflywheel.serve.app import create_app
from aiflywheel.serve.config import ServeConfig
from aiflywheel.settings import get_settings
from aiflywheel.store import Store, open_store

sys.path.insert(0, str(Path(__file__).parent))
from t2t_world import gloss, recipe_text, strings, write_pairs_csv  # noqa: E402

FEATURE = "numbers"
FIRST = {"version": 1, "force": True, "reason": "collect feedback"}


@pytest.fixture
def running(tmp_path: Path) -> Iterator[tuple[TestClient, Store, dict[str, dict[str, str]]]]:
    write_pairs_csv(tmp_path / "pairs.csv")
    # A tiny model's test chrF moves by a few points between two trainings; the gate
    # here judges the feedback slice, so the test-slice tolerance is wide.
    text = recipe_text("pairs.csv", gate="{max_slice_drop: 15}")
    (tmp_path / "recipe.yaml").write_text(text, encoding="utf-8")
    recipe = load_recipe(tmp_path / "recipe.yaml")
    store = open_store()
    built = get_task(recipe.task).train(recipe, store=store, settings=get_settings(), report=print)
    assert built.version == 1 and (built.run_dir / "report.html").is_file()
    client_key, _ = store.create_api_key("client", "shop app")
    admin_key, _ = store.create_api_key("admin", "pm alice")
    keys = {
        "client": {"Authorization": f"Bearer {client_key}"},
        "admin": {"Authorization": f"Bearer {admin_key}"},
    }
    with TestClient(create_app(ServeConfig(reload_interval=0.1), store)) as http:
        yield http, store, keys


def serving_version(http: TestClient, keys: dict, expected: int) -> int:
    deadline = time.monotonic() + 30
    while True:
        version = http.post("/v1/transform", json={"text": "ab"}, headers=keys["client"]).json()[
            "version"
        ]
        if version == expected or time.monotonic() > deadline:
            return version
        time.sleep(0.05)


def test_edited_outputs_promote_v2_and_rollback_returns_v1(running) -> None:
    http, store, keys = running
    v1 = store.get_model_version(FEATURE, 1).metrics
    assert v1["baseline_name"] in ("copy", "dictionary") and v1["chrf"] > 0
    promoted = http.post(f"/v1/features/{FEATURE}/promote", json=FIRST, headers=keys["admin"])
    assert promoted.status_code == 200, promoted.text

    one = http.post("/v1/transform", json={"text": "abc"}, headers=keys["client"])
    assert one.status_code == 200, one.text
    body = one.json()
    assert body["version"] == 1 and isinstance(body["output"], str)
    assert len(body["alternatives"]) <= 2 and all("score" in a for a in body["alternatives"])

    # A batch file's rows go through the same predictor (`flywheel predict --input`).
    task = get_task("text_to_text")
    predictor = load(FEATURE, 1, store=store).predictor
    rows = task.predict_batch(predictor, ["abc", "a" * 201], recipe={})
    assert rows[0].output["output"] == body["output"] and rows[0].error is None
    assert rows[1].output is None and "max_source_chars 200" in rows[1].error

    # Bad requests answer 422 in one line.
    cases = [
        ({"text": "   "}, "text: empty"),
        ({"text": "a" * 201}, "max_source_chars 200"),
        ({"texts": ["ab"] * 33}, "at most 32"),
        ({"text": "ab", "texts": ["ab"]}, "give either"),
        ({"text": "ab", "beam_size": 9}, "beam_size: at most 3"),
    ]
    for request, words in cases:
        answer = http.post("/v1/transform", json=request, headers=keys["client"])
        assert answer.status_code == 422, (words, answer.text)
        message = answer.json()["error"]["message"]
        assert words in message and "\n" not in message, message
    classify = http.post("/v1/classify", json={"text": "hello"}, headers=keys["client"])
    assert classify.status_code == 422 and "/v1/transform" in classify.text

    # Users send strings with letters v1 never saw (g, h) and correct every output.
    users = strings("ghab", 60, seed=5, longest=3)
    users = [s for s in users if set(s) & set("gh")][:40]
    predictions = []
    for part in (users[:20], users[20:]):
        batch = http.post(
            "/v1/transform", json={"feature": FEATURE, "texts": part}, headers=keys["client"]
        )
        assert batch.status_code == 200, batch.text
        predictions += batch.json()["predictions"]
    wrong = 0
    for prediction, source in zip(predictions, users, strict=True):
        answer = {"prediction_id": prediction["prediction_id"]}
        if prediction["output"] == gloss(source):
            answer["thumb"] = "up"
        else:
            answer.update(thumb="down", corrected_target=gloss(source))
            wrong += 1
        sent = http.post("/v1/feedback", json=answer, headers=keys["client"])
        assert sent.status_code == 201, sent.text
    assert wrong > len(users) // 2  # v1 cannot say seven or eight
    misplaced = http.post(
        "/v1/feedback",
        json={"prediction_id": predictions[0]["prediction_id"], "corrected_label": "x"},
        headers=keys["client"],
    )
    assert misplaced.status_code == 422 and "corrected_target" in misplaced.text

    pending = store.list_feedback(FEATURE, state="pending")
    store.review_feedback(FEATURE, [(i.id, "accepted", None) for i in pending], reviewer="ann")
    result = get_task("text_to_text").retrain(
        FEATURE, store=store, settings=get_settings(), actor="ann", report=print
    )
    print(result.gate.reason)
    assert result.decision == "promoted", result.gate.reason
    assert result.data["held_out"] > 0 and result.data["used_for_training"] > 0
    assert result.gate.candidate["feedback"] > result.gate.champion["feedback"]

    assert serving_version(http, keys, 2) == 2  # hot swap, no restart
    back = http.post(
        f"/v1/features/{FEATURE}/rollback", json={"reason": "complaints"}, headers=keys["admin"]
    )
    assert back.status_code == 200, back.text
    assert serving_version(http, keys, 1) == 1
    events = http.get(f"/v1/features/{FEATURE}/audit", headers=keys["client"]).json()["events"]
    assert [(e["action"], e["from_version"], e["to_version"], e["decision"]) for e in events] == [
        ("promote", None, 1, "promoted"),
        ("retrain", 1, 2, "promoted"),
        ("rollback", 2, 1, "rolled back"),
    ]
