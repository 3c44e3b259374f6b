"""The assistant's surfaces tell the truth: ``flywheel ask`` (tickets only when opened,
one conversation per question unless ``--conversation``, ``--json`` one object per
question), extractive answers streamed in pieces over SSE, and the public Python API
``aiflywheel.load(FEATURE).ask(...)``.

The encoder is the deterministic ``HashingEncoder`` (patched in for ``test-hashing``);
the assistant is built once per test from the tiny fixture help center.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from tests.assistant_parts import HashingEncoder

import aiflywheel
from aiflywheel.cli import main
from aiflywheel.core.versions import LoadedModel
from aiflywheel.errors import ModelError, NotFoundError
from aiflywheel.recipe import parse_recipe
from aiflywheel.serve.app import create_app
from aiflywheel.serve.config import ServeConfig
from aiflywheel.settings import get_settings
from aiflywheel.store import open_store
from aiflywheel.tasks.assistant import encoders as encoders_module
from aiflywheel.tasks.assistant import policy as policy_module
from aiflywheel.tasks.assistant.build import build_assistant
from aiflywheel.tasks.assistant.cli import NO_TICKET_TEXT
from aiflywheel.tasks.assistant.policy import HANDOFF_TEXT
from aiflywheel.tasks.assistant.records import get_turn, list_tickets
from aiflywheel.tasks.assistant.service import AssistantAnswer
from aiflywheel.tasks.assistant.streaming import stream_pieces

KB = Path(__file__).parent / "fixtures" / "assistant" / "kb"
FEATURE = "helpdesk"
PERSON = "I want to speak to a human."
REFUND = "How can I get my money back for an order?"


@pytest.fixture
def built(monkeypatch: pytest.MonkeyPatch) -> int:
    """The fixture help center as assistant ``helpdesk`` v1 (champion), hashing encoder,
    extractive answers; thresholds that answer whatever retrieval finds."""
    shared = HashingEncoder(name="test-hashing", dim=256)
    real = encoders_module.encoder_from_name

    def from_name(name: str = "e5-small", settings=None, **kw):
        return shared if name == "test-hashing" else real(name, settings, **kw)

    monkeypatch.setattr(encoders_module, "encoder_from_name", from_name)
    recipe = parse_recipe(
        {
            "feature": FEATURE,
            "task": "assistant",
            "assistant": {
                "knowledge_base": str(KB),
                "encoder": "test-hashing",
                "handoff_below": 0.0,
                "faq_at_least": 1.01,
            },
        }
    )
    return build_assistant(recipe, store=open_store(), settings=get_settings()).version


def _ask(argv: list[str], capsys) -> list[dict]:
    code = main(["ask", FEATURE, "--json", *argv])
    out, err = capsys.readouterr()
    assert code == 0, err
    return [json.loads(line) for line in out.splitlines() if line.strip()]


# ------------------------------------------------------------------ flywheel ask


def test_ask_says_a_ticket_exists_only_when_it_opened_one(built: int, capsys) -> None:
    store = open_store()
    [plain] = _ask([PERSON], capsys)
    assert plain["handoff"] is True and plain["ticket_id"] is None
    assert plain["answer"] == NO_TICKET_TEXT["en"] and "--ticket" in plain["answer"]
    assert "opened a ticket" not in plain["answer"]
    assert list_tickets(store, FEATURE, None) == []

    [opened] = _ask(["--ticket", PERSON], capsys)
    assert isinstance(opened["ticket_id"], int)
    assert opened["answer"] == HANDOFF_TEXT["en"]  # "... opened a ticket": now true
    [ticket] = list_tickets(store, FEATURE, "open")
    assert ticket.id == opened["ticket_id"] and ticket.question == PERSON
    assert get_turn(store, ticket.prediction_id).handoff is True

    # an answered question opens nothing, even with --ticket
    [answered] = _ask(["--ticket", REFUND], capsys)
    assert answered["handoff"] is False and answered["ticket_id"] is None
    assert len(list_tickets(store, FEATURE, None)) == 1

    code = main(["ask", FEATURE, "--ticket", "转人工"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert f"ticket {ticket.id + 1} opened" in " ".join(out.split())


def test_ask_json_prints_one_object_per_question(built: int, capsys) -> None:
    rows = _ask([REFUND, PERSON], capsys)
    assert [r["question"] for r in rows] == [REFUND, PERSON]
    for row in rows:
        assert set(row) >= {"answer", "citations", "handoff", "reason", "ticket_id", "answer_type"}
    assert rows[0]["answer_type"] in ("faq", "generated") and rows[0]["citations"]
    assert "5 working days" in rows[0]["answer"]
    assert rows[1]["answer_type"] == "handoff" and rows[1]["reason"] == "asked for a person"


def test_questions_are_separate_unless_conversation(
    built: int, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[list[dict]] = []
    real = policy_module.Assistant.answer

    def spy(self, message, history=()):
        seen.append([dict(m) for m in history])
        return real(self, message, history)

    monkeypatch.setattr(policy_module.Assistant, "answer", spy)
    _ask([REFUND, "And for a gift card?"], capsys)
    assert seen == [[], []]

    seen.clear()
    rows = _ask(["--conversation", REFUND, "And for a gift card?"], capsys)
    assert seen[0] == []
    assert seen[1] == [
        {"role": "user", "content": REFUND},
        {"role": "assistant", "content": rows[0]["answer"]},
    ]
    assert rows[0]["session_id"] == rows[1]["session_id"]


# ------------------------------------------------------------------ streaming


def test_stream_pieces_are_lossless_and_small() -> None:
    texts = [
        "Refunds reach your card within 5 to 7 working days [1]. Gift cards cannot be "
        "returned, sorry. [2]",
        "退款会在5到7个工作日内原路返还[1]。礼品卡不能退货，也不能换货[2]",
        "Yes.",
        "",
        "  mixed 中文和English一起说的很长很长很长很长的句子没有标点",
    ]
    for text in texts:
        pieces = stream_pieces(text)
        assert "".join(pieces) == text
        assert all(pieces)
    assert len(stream_pieces(texts[0])) >= 4
    assert len(stream_pieces(texts[1])) >= 3
    assert all(len(p.split()) <= 4 for p in stream_pieces(texts[0]))
    with pytest.raises(ValueError, match="at least 1"):
        stream_pieces("x", words=0)


def _sse(text: str) -> list:
    events = []
    for block in text.split("\n\n"):
        if block.startswith("data: "):
            data = block[len("data: ") :]
            events.append(data if data == "[DONE]" else json.loads(data))
    return events


def test_extractive_answers_stream_in_pieces_over_sse(built: int) -> None:
    store = open_store()
    key, _ = store.create_api_key("client", "web-shop")
    headers = {"Authorization": f"Bearer {key}"}
    with TestClient(create_app(ServeConfig(), store)) as api:
        for question in (REFUND, PERSON):
            body = {
                "model": FEATURE,
                "messages": [{"role": "user", "content": question}],
                "stream": True,
            }
            response = api.post("/v1/chat/completions", json=body, headers=headers)
            assert response.status_code == 200, response.text
            events = _sse(response.text)
            assert events[-1] == "[DONE]"
            content = [
                e["choices"][0]["delta"]["content"]
                for e in events[:-1]
                if e["choices"][0]["delta"].get("content")
            ]
            extension = events[-2]["flywheel"]
            final = get_turn(store, extension["prediction_id"]).answer
            assert len(content) > 1, content
            assert "".join(content) == final
            assert not extension.get("replaced_streamed_text")


# ------------------------------------------------------------------ the Python API


def test_load_ask_returns_a_typed_answer(built: int) -> None:
    assistant = aiflywheel.load(FEATURE)
    assert assistant.task == "assistant" and assistant.version == built
    reply = assistant.ask(REFUND)
    assert isinstance(reply, AssistantAnswer)
    assert reply.handoff is False and reply.reason is None
    assert "5 working days" in reply.answer
    assert "faq.jsonl#refund-en" in reply.sources
    handed = assistant.ask(PERSON, history=[{"role": "user", "content": REFUND}])
    assert handed.handoff is True and handed.reason == "asked for a person"
    assert handed.answer_type == "handoff" and handed.citations == []
    assert list_tickets(open_store(), FEATURE, None) == []  # the Python API stores nothing


def test_load_names_what_it_supports(built: int) -> None:
    with pytest.raises(NotFoundError, match="unknown feature 'nope'"):
        aiflywheel.load("nope")

    class Classifier:
        labels = ["neg", "pos"]

        def predict(self, texts):
            return [("pos", {"pos": 1.0, "neg": 0.0}) for _ in texts]

    loaded = LoadedModel("reviews", 1, "champion", "text_classification", Classifier())
    with pytest.raises(ModelError, match=r"no \.ask\(\).*\.predict\(\) for classifiers"):
        loaded.ask("hello?")
    assert loaded.predict(["great"])[0][0] == "pos"
