"""The assistant's wheel over HTTP: ask -> handoff ticket -> staff answer (API) -> review
(CLI) -> retrain -> gate -> the running server hot-swaps and answers; rollback; and a
bad staff answer that the gate refuses.

The encoder is the deterministic ``HashingEncoder`` (similarities follow shared words),
patched in for the name ``test-hashing``; the server is the real app in process
(``TestClient``), polling the store for a new champion every 0.1 s.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from tests.assistant_parts import HashingEncoder
from tests.test_assistant_cli import EVAL_SET, KB, _recipe, _run, _write_eval
from tests.test_serve import bearer

from aiflywheel import cli as cli_module
from aiflywheel.serve.app import create_app
from aiflywheel.serve.config import ServeConfig
from aiflywheel.store import Store, open_store
from aiflywheel.tasks.assistant import cli as commands_module
from aiflywheel.tasks.assistant import encoders as encoders_module
from aiflywheel.tasks.assistant.records import list_tickets
from aiflywheel.tasks.assistant.retrain import states_answer

FEATURE = "helpdesk"
CHAT = "/v1/chat/completions"
# Questions the test help center does not cover; customers ask them, staff answer.
GIFT_QUESTIONS = [
    "Do you offer gift wrapping for presents?",
    "Can you gift wrap a present for me?",
    "Is gift wrapping available?",
    "Could my present come gift wrapped?",
    "Can I add gift wrapping and a card to a present?",
    "Do you gift wrap presents?",
]
GIFT_ANSWER = "Yes: tick Gift wrapping at checkout; wrapping costs 5 yuan per parcel with a card."
NEW_GIFT_QUESTION = "Can I have my present gift wrapped?"
# Off-topic questions, rightly handed off; an agent answered them anyway.
WEATHER_QUESTIONS = [
    "What will the weather be in Paris tomorrow?",
    "Is it going to rain in Paris tomorrow?",
    "Tell me the weather forecast for Paris tomorrow.",
    "How warm will Paris be tomorrow?",
    "What's the weather like in Paris?",
    "Will Paris be sunny tomorrow?",
]
WEATHER_ANSWER = "Tomorrow Paris will be sunny and around 25 degrees."


@pytest.fixture(autouse=True)
def wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(commands_module.console, "width", 200)
    monkeypatch.setattr(cli_module.console, "width", 200)


@pytest.fixture(autouse=True)
def encoder(monkeypatch: pytest.MonkeyPatch) -> HashingEncoder:
    shared = HashingEncoder(name="test-hashing", dim=256)
    real = encoders_module.encoder_from_name

    def from_name(name: str = "e5-small", settings=None, **kw):
        return shared if name == "test-hashing" else real(name, settings, **kw)

    monkeypatch.setattr(encoders_module, "encoder_from_name", from_name)
    return shared


@pytest.fixture
def trained(tmp_path: Path, capsys) -> Store:
    """v1 of the helpdesk assistant (champion), thresholds calibrated on EVAL_SET."""
    project = tmp_path / "project"
    recipe = _recipe(project, knowledge_base=str(KB), extra="  gate:\n    feedback_holdout: 0.4\n")
    _write_eval(project / "eval.jsonl", EVAL_SET)
    code, _, err = _run(["train", str(recipe)], capsys)
    assert code == 0, err
    return open_store()


@pytest.fixture
def keys(trained: Store) -> dict[str, dict[str, str]]:
    client, _ = trained.create_api_key("client", "web-shop")
    admin, _ = trained.create_api_key("admin", "support desk")
    return {"client": bearer(client), "admin": bearer(admin)}


@contextmanager
def serving(store: Store) -> Iterator[TestClient]:
    with TestClient(create_app(ServeConfig(reload_interval=0.1), store)) as api:
        yield api


def ask(api: TestClient, keys: dict, question: str, session: str = "s") -> dict[str, Any]:
    body = {"model": FEATURE, "messages": [{"role": "user", "content": question}]}
    response = api.post(CHAT, json={**body, "session_id": session}, headers=keys["client"])
    assert response.status_code == 200, response.text
    data = response.json()
    return {"text": data["choices"][0]["message"]["content"], **data["flywheel"]}


def answer_by(api: TestClient, keys: dict, question: str, version: int) -> dict[str, Any]:
    """The reply once the running server answers with ``version`` (it polls the store)."""
    deadline = time.monotonic() + 30
    while True:
        reply = ask(api, keys, question, session=f"probe-{time.monotonic()}")
        if reply["version"] == version or time.monotonic() > deadline:
            assert reply["version"] == version, reply
            return reply
        time.sleep(0.1)


def staff_answer(
    api: TestClient, keys: dict, questions: list[str], answer: str
) -> tuple[list[int], list[int]]:
    """Customers ask; a handoff's ticket is answered by staff (tickets API), a wrong
    answer is corrected by staff (thumbs down with the corrected answer, /v1/feedback).
    Returns (ticket ids, feedback ids), everything pending review."""
    tickets, feedback = [], []
    for n, question in enumerate(questions):
        reply = ask(api, keys, question, session=f"customer-{n}")
        if reply["handoff"]:
            tickets.append(reply["ticket_id"])
            path = f"/v1/features/{FEATURE}/tickets/{reply['ticket_id']}/answer"
            response = api.post(path, json={"answer": answer}, headers=keys["admin"])
            assert response.status_code == 201, response.text
            assert response.json()["status"] == "answered"
        else:
            assert not states_answer(reply["text"], answer), reply
            body = {"prediction_id": reply["prediction_id"], "thumb": "down"}
            response = api.post(
                "/v1/feedback", json={**body, "corrected_answer": answer}, headers=keys["client"]
            )
            assert response.status_code == 201, response.text
        assert response.json()["review_state"] == "pending"
        feedback.append(response.json()["feedback_id"])
    return tickets, feedback


def test_staff_answers_are_reviewed_learned_gated_and_served_then_rolled_back(
    trained: Store, keys: dict, capsys
) -> None:
    store = trained
    with serving(store) as api:
        before = ask(api, keys, NEW_GIFT_QUESTION)
        assert before["version"] == 1 and not states_answer(before["text"], GIFT_ANSWER)
        person = ask(api, keys, "I want to speak to a human.")
        tickets, feedback = staff_answer(api, keys, GIFT_QUESTIONS, GIFT_ANSWER)
        # The help center half-matches "gift": some are answered wrongly, some handed off.
        assert 0 < len(tickets) < len(GIFT_QUESTIONS), tickets
        # Answering needs an admin key, a known ticket of this feature and an answer.
        path = f"/v1/features/{FEATURE}/tickets/{person['ticket_id']}/answer"
        assert api.post(path, json={"answer": "x"}, headers=keys["client"]).status_code == 403
        missing = api.post(
            f"/v1/features/{FEATURE}/tickets/999/answer",
            json={"answer": "x"},
            headers=keys["admin"],
        )
        assert missing.status_code == 404 and "no ticket 999" in missing.json()["error"]["message"]
        assert api.post(path, json={"answer": ""}, headers=keys["admin"]).status_code == 422
        # Answered tickets are closed; every answer waits in the one review queue.
        assert [t.id for t in list_tickets(store, FEATURE)] == [person["ticket_id"]]
        pending = store.list_feedback(FEATURE, state="pending")
        assert [f.id for f in pending] == feedback
        assert all(f.corrected_answer == GIFT_ANSWER for f in pending)

        code, out, err = _run(["feedback", "list", FEATURE], capsys)
        assert code == 0 and GIFT_ANSWER[:30] in out, err
        code, out, err = _run(
            ["feedback", "review", FEATURE, "--accept", "--all-pending", "--actor", "lead"], capsys
        )
        assert code == 0 and f"accepted {len(feedback)}" in out, err

        code, out, err = _run(["retrain", FEATURE, "--actor", "lead"], capsys)
        assert code == 0, err
        flat = " ".join(out.split())
        assert f"{FEATURE} v2 promoted" in flat, flat
        for row in ("frozen evaluation set", "held-out feedback", "handoff recall"):
            assert row in flat, row

        after = answer_by(api, keys, NEW_GIFT_QUESTION, 2)
        assert after["handoff"] is False
        assert states_answer(after["text"], GIFT_ANSWER), after
        assert any(c["source"] == "feedback" for c in after["citations"])

        run_dir = Path(store.get_model_version(FEATURE, 2).model_path).parent
        gate = json.loads((run_dir / "gate.json").read_text(encoding="utf-8"))
        data = json.loads((run_dir / "retrain_data.json").read_text(encoding="utf-8"))
        assert gate["passed"] is True
        assert data["learned"] + data["held_out"] == len(GIFT_QUESTIONS)
        assert data["learned"] >= 1 and data["held_out"] >= 1, data
        assert gate["comparison"]["feedback_questions"] == data["held_out"]
        assert gate["champion"]["feedback"] == 0.0 and gate["candidate"]["feedback"] == 1.0
        assert gate["comparison"]["accuracy_gain"] > 0
        lo, hi = gate["comparison"]["accuracy_gain_ci"]
        assert lo <= gate["comparison"]["accuracy_gain"] <= hi
        for key in ("handoff_precision_ci", "handoff_recall_ci", "all_ci"):
            assert len(gate["candidate"][key]) == 2
        [event] = [e for e in store.list_audit(FEATURE) if e.action == "retrain"]
        assert (event.decision, event.actor, event.from_version, event.to_version) == (
            "promoted",
            "lead",
            1,
            2,
        )
        assert event.details["checks"] == gate["checks"]
        assert event.details["data"]["learned"] == data["learned"]

        # Nothing new to learn: a second retrain says so and changes nothing.
        code, _, err = _run(["retrain", FEATURE], capsys)
        assert code == 2 and "0 new accepted answer(s)" in " ".join(err.split())

        code, out, err = _run(["rollback", FEATURE, "--reason", "check v1 again"], capsys)
        assert code == 0 and "champion v1" in out, err
        rolled = answer_by(api, keys, NEW_GIFT_QUESTION, 1)
        assert rolled["text"] == before["text"]
    assert store.champion(FEATURE).version == 1


def test_a_bad_staff_answer_is_refused_by_the_gate(trained: Store, keys: dict, capsys) -> None:
    store = trained
    with serving(store) as api:
        tickets, _ = staff_answer(api, keys, WEATHER_QUESTIONS, WEATHER_ANSWER)
        assert len(tickets) == len(WEATHER_QUESTIONS)  # off-topic: every one handed off
        code, _, err = _run(["feedback", "review", FEATURE, "--accept", "--all-pending"], capsys)
        assert code == 0, err
        code, out, err = _run(["retrain", FEATURE], capsys)
        assert code == 0, err
        flat = " ".join(out.split())
        assert f"{FEATURE} v2 kept out" in flat, flat
        assert "answer-accuracy drop on the frozen evaluation set failed" in flat, flat
        # The server keeps answering with v1, which hands the eval's weather question off.
        reply = answer_by(api, keys, "What's the weather in Paris tomorrow?", 1)
        assert reply["handoff"] is True
    v2 = store.get_model_version(FEATURE, 2)
    assert v2.status == "rejected" and v2.metrics["gate"]["passed"] is False
    gate = json.loads((Path(v2.model_path).parent / "gate.json").read_text(encoding="utf-8"))
    failed = {c["check"] for c in gate["checks"] if not c["passed"]}
    # The off-topic entries make weather questions look answerable: recalibrated to keep
    # handing them off, the candidate hands off (or misanswers) what v1 answered.
    assert {"answer-accuracy gain", "answer-accuracy drop on the frozen evaluation set"} <= failed
    assert gate["candidate"]["test"] < gate["champion"]["test"]
    [event] = [e for e in store.list_audit(FEATURE) if e.action == "retrain"]
    assert event.decision == "kept" and event.to_version == 2
    # A refused version is promoted only by force, with a reason.
    code, _, err = _run(["promote", f"{FEATURE}:2"], capsys)
    assert code == 2 and "did not pass the promotion gate" in " ".join(err.split())


def test_tickets_answer_from_the_cli_and_the_old_list_form(
    trained: Store, keys: dict, capsys
) -> None:
    with serving(trained) as api:
        reply = ask(api, keys, "I want to speak to a human.")
    ticket = reply["ticket_id"]
    code, out, err = _run(["tickets", FEATURE], capsys)  # round-1 form: a feature lists
    assert code == 0 and str(ticket) in out and "open" in out, err
    code, out, err = _run(["tickets", "answer", str(ticket), "--answer", GIFT_ANSWER], capsys)
    assert code == 0, err
    assert f"ticket {ticket} of {FEATURE} answered" in " ".join(out.split())
    code, out, err = _run(["tickets", "answer", str(ticket), "--answer", "Better answer."], capsys)
    assert code == 0 and "replaced the pending answer" in " ".join(out.split()), err
    [item] = trained.list_feedback(FEATURE)
    assert item.corrected_answer == "Better answer." and item.review_state == "pending"
    code, out, err = _run(["tickets", "list", FEATURE], capsys)
    assert code == 0 and "speak to a human" not in out
    code, out, err = _run(["tickets", "list", FEATURE, "--all"], capsys)
    assert code == 0 and "answered" in out
    code, _, err = _run(["tickets", "answer", "999", "--answer", "x"], capsys)
    assert code == 2 and "no ticket 999" in err


def test_states_answer_ignores_markers_case_and_needs_most_words() -> None:
    answer = "Wrapping costs 5 yuan per parcel."
    assert states_answer("wrapping COSTS 5 yuan per parcel [1]", answer)
    assert states_answer("Gift wrapping: it costs 5 yuan per parcel, card included. [2]", answer)
    assert not states_answer("Wrapping is free.", answer)
    assert states_answer("包装费每件5元。[1]", "包装费每件5元")


def test_the_shipped_uncovered_topics_are_not_knowledge_nor_evaluation_questions() -> None:
    from aiflywheel.data.text_normalize import near_duplicate_key
    from aiflywheel.tasks.assistant.build import help_center_dir
    from aiflywheel.tasks.assistant.demo_turn import load_topics
    from aiflywheel.tasks.assistant.evaluation import load_eval_set
    from aiflywheel.tasks.assistant.knowledge_base import load_knowledge_base

    topics = load_topics()
    assert {t.language for t in topics} == {"zh", "en"}
    assert all(len(t.asked) >= 3 and len(t.check) >= 2 and t.answer for t in topics)
    asked = {near_duplicate_key(q) for t in topics for q in (*t.asked, *t.check)}
    assert len(asked) == sum(len(t.asked) + len(t.check) for t in topics)
    evaluation = {
        near_duplicate_key(q.question) for q in load_eval_set(help_center_dir() / "eval.jsonl")
    }
    assert not asked & evaluation
    kb = load_knowledge_base(help_center_dir())
    assert not any("eval_uncovered" in c.source for c in kb.chunks)
    assert not any(t.answer in c.passage for t in topics for c in kb.chunks)
