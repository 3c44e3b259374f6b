"""A generator through the whole loop over HTTP: train -> serve v1 -> completions with n
candidates and chat -> feedback (a choice among n; an edit) -> retrain (DPO + SFT) ->
gate -> the running server answers with v2 -> rollback returns v1 -> audit."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from aiflywheel.core.registry import get_task
from aiflywheel.recipe import load_recipe
from aiflywheel.serve.app import create_app
from aiflywheel.serve.config import ServeConfig
from aiflywheel.settings import get_settings
from aiflywheel.store import Store, open_store

sys.path.insert(0, str(Path(__file__).parent))
from gen_world import build_model, recipe_text, rows, write_data  # noqa: E402

FEATURE = "replies"
FIRST = {"version": 1, "force": True, "reason": "collect feedback"}


@pytest.fixture
def running(tmp_path: Path) -> Iterator[tuple[TestClient, Store, dict[str, dict[str, str]]]]:
    write_data(tmp_path)
    build_model(tmp_path / "tiny-lm")
    (tmp_path / "recipe.yaml").write_text(recipe_text("replies.jsonl", "tiny-lm"), encoding="utf-8")
    recipe = load_recipe(tmp_path / "recipe.yaml")
    store = open_store()
    built = get_task(recipe.task).train(recipe, store=store, settings=get_settings(), report=print)
    assert built.version == 1 and built.report_html.exists()
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
        answer = http.post(
            "/v1/completions",
            json={"prompt": "where is my order", "max_tokens": 4, "temperature": 0},
            headers=keys["client"],
        )
        version = answer.json()["flywheel"]["version"]
        if version == expected or time.monotonic() > deadline:
            return version
        time.sleep(0.05)


def test_choices_and_edits_retrain_promote_v2_and_rollback_returns_v1(running) -> None:
    http, store, keys = running
    metrics = store.get_model_version(FEATURE, 1).metrics
    assert metrics["baseline_name"] == "nearest-neighbour" and "verdict" in metrics
    promoted = http.post(f"/v1/features/{FEATURE}/promote", json=FIRST, headers=keys["admin"])
    assert promoted.status_code == 200, promoted.text
    prompts = [r for r in rows() if r["prompt"].endswith(" 1") or r["prompt"].endswith(" 2")]
    for i, row in enumerate(prompts):
        body = {
            "model": FEATURE,
            "n": 3,
            "max_tokens": 8,
            "temperature": 1.0,
            "top_p": 0.95,
            "seed": i,
        }
        if i % 2:
            answer = http.post(
                "/v1/chat/completions",
                json={**body, "messages": [{"role": "user", "content": row["prompt"]}]},
                headers=keys["client"],
            )
            assert answer.status_code == 200, answer.text
            assert answer.json()["object"] == "chat.completion"
            texts = [c["message"]["content"] for c in answer.json()["choices"]]
        else:
            answer = http.post(
                "/v1/completions", json={**body, "prompt": row["prompt"]}, headers=keys["client"]
            )
            assert answer.status_code == 200, answer.text
            assert answer.json()["object"] == "text_completion"
            texts = [c["text"] for c in answer.json()["choices"]]
        assert len(texts) == 3 and answer.json()["usage"]["completion_tokens"] > 0
        pid = answer.json()["flywheel"]["prediction_id"]
        # Half the users pick a candidate, the other half edit the answer.
        feedback = (
            {"prediction_id": pid, "chosen": 1, "thumb": "up"}
            if i % 4 < 2
            else {"prediction_id": pid, "corrected_response": row["response"]}
        )
        sent = http.post("/v1/feedback", json=feedback, headers=keys["client"])
        assert sent.status_code == 201, sent.text
    bad = http.post(
        "/v1/feedback", json={"prediction_id": pid, "chosen": 7}, headers=keys["client"]
    )
    assert bad.status_code == 422 and "one of the 3 candidates" in bad.text

    pending = store.list_feedback(FEATURE, state="pending")
    store.review_feedback(FEATURE, [(i.id, "accepted", None) for i in pending], reviewer="ann")
    result = get_task("text_generation").retrain(
        FEATURE, store=store, settings=get_settings(), actor="ann", report=print
    )
    assert result.decision == "promoted", result.gate.reason
    assert result.data["preference_pairs"] > 0 and result.data["sft_rows"] > 0
    assert result.data["held_out_pairs"] > 0
    assert result.gate.champion["preference"] is not None
    train_log = json.loads((result.run_dir / "train_log.json").read_text())
    assert train_log["sft"]["steps"] > 0 and train_log["dpo"]["steps"] > 0
    assert serving_version(http, keys, 2) == 2  # hot swap, no restart

    back = http.post(
        f"/v1/features/{FEATURE}/rollback", json={"reason": "tone"}, headers=keys["admin"]
    )
    assert back.status_code == 200, back.text
    assert serving_version(http, keys, 1) == 1
    events = http.get(f"/v1/features/{FEATURE}/audit", headers=keys["client"]).json()["events"]
    assert [(e["action"], e["from_version"], e["to_version"], e["decision"]) for e in events] == [
        ("promote", None, 1, "promoted"),
        ("retrain", 1, 2, "promoted"),
        ("rollback", 2, 1, "rolled back"),
    ]


def test_limits_answer_422_naming_them_and_streams_end_with_done(running) -> None:
    http, store, keys = running
    http.post(f"/v1/features/{FEATURE}/promote", json=FIRST, headers=keys["admin"])
    cases = [
        ({"prompt": "hi", "n": 4, "max_tokens": 32}, "n x max_tokens = 4 x 32 = 128"),
        ({"prompt": "hi", "n": 5, "max_tokens": 1}, "n: at most 4"),
        ({"prompt": "hi", "max_tokens": 33}, "max_tokens: at most 32"),
        ({"prompt": "hi", "n": 2, "stream": True}, "stream: takes n 1"),
        ({"prompt": ""}, "prompt"),
    ]
    for body, words in cases:
        answer = http.post("/v1/completions", json=body, headers=keys["client"])
        assert answer.status_code == 422, (body, answer.text)
        message = answer.json()["error"]["message"]
        assert words in message and "\n" not in message, message
    chat = http.post(
        "/v1/chat/completions",
        json={"model": FEATURE, "messages": [{"role": "assistant", "content": "hi"}]},
        headers=keys["client"],
    )
    assert chat.status_code == 422 and "last message must have role 'user'" in chat.text
    greedy = {"prompt": "where is my order 1", "max_tokens": 6, "temperature": 0}
    whole = http.post("/v1/completions", json=greedy, headers=keys["client"]).json()
    with http.stream(
        "POST", "/v1/completions", json={**greedy, "stream": True}, headers=keys["client"]
    ) as streamed:
        lines = [line for line in streamed.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    events = [json.loads(line[6:]) for line in lines[:-1]]
    text = "".join(e["choices"][0]["text"] for e in events)
    assert text == whole["choices"][0]["text"]
    assert events[-1]["flywheel"]["prediction_id"]
    # The prediction log keeps the prompt with PII redacted, as the recipe's pii says.
    private = http.post(
        "/v1/completions",
        json={"prompt": "call me at 13812345678 about my order", "max_tokens": 2},
        headers=keys["client"],
    ).json()
    logged, _feature = store.get_prediction(private["flywheel"]["prediction_id"])
    assert "13812345678" not in logged.text and "<PHONE>" in logged.output["prompt"]
