"""Insights and drift on an assistant: handoffs the help center does not cover become
ranked gaps with a draft answer; an edited draft goes to the review queue; drift uses the
version's own encoder. (The tiny assistant of the wheel tests: HashingEncoder, test KB.)"""

from __future__ import annotations

import pytest
from tests.test_assistant_wheel import (  # noqa: F401  (fixtures)
    FEATURE,
    GIFT_QUESTIONS,
    WEATHER_QUESTIONS,
    ask,
    encoder,
    keys,
    serving,
    trained,
    wide_console,
)

from aiflywheel.cli import main
from aiflywheel.errors import NotFoundError
from aiflywheel.insights.topics import mine_insights, send_gap_draft
from aiflywheel.monitoring.drift import drift_report
from aiflywheel.settings import get_settings
from aiflywheel.tasks.assistant.records import list_tickets

PERSON = ["I want to talk to a human agent", "Let me speak to a real person please"]


def test_gaps_rank_uncovered_questions_and_a_draft_reaches_review(request, capsys) -> None:
    store, auth = request.getfixturevalue("trained"), request.getfixturevalue("keys")
    with serving(store) as api:
        for question in GIFT_QUESTIONS + WEATHER_QUESTIONS + PERSON:
            ask(api, auth, question, session=question[:20])
    tickets = list_tickets(store, FEATURE, status=None)
    assert len(tickets) >= 8  # the weather questions, requests for a person, ...
    report = mine_insights(FEATURE, store=store, settings=get_settings(), embedder="tfidf")
    assert report.texts["handoff"] == len(tickets)
    assert any(t.source == "handoff" for t in report.topics)
    gap_questions = [q for g in report.gaps for q in [g.question, *g.examples]]
    assert not set(PERSON) & set(gap_questions)  # asking for a person is no knowledge gap
    assert sum(g.volume for g in report.gaps) == len(tickets) - len(PERSON)
    assert [g.volume for g in report.gaps] == sorted((g.volume for g in report.gaps), reverse=True)
    weather = report.gaps[0]  # the largest group: six ways to ask about Paris's weather
    assert weather.volume == len(WEATHER_QUESTIONS)
    assert set(weather.ticket_ids) == {t.id for t in tickets if t.question in WEATHER_QUESTIONS}
    assert weather.question in WEATHER_QUESTIONS and len(weather.examples) == 3
    gift = next(g for g in report.gaps if "gift" in g.question.lower())
    assert gift.draft_from == "knowledge" and gift.draft_answer  # the closest passage

    answer = "Yes: tick Gift wrapping at checkout; it costs 5 yuan per parcel."
    assert gift.open_ticket_ids == gift.ticket_ids  # nobody answered them yet
    done = send_gap_draft(FEATURE, gift.ticket_ids[0], answer, store=store, actor="pm")
    assert done["review_state"] == "pending"
    pending = store.list_feedback(FEATURE, state="pending")
    assert [f.corrected_answer for f in pending] == [answer]
    with pytest.raises(NotFoundError, match="no ticket 999"):
        send_gap_draft(FEATURE, 999, answer, store=store, actor="pm")

    again = mine_insights(FEATURE, store=store, settings=get_settings(), embedder="tfidf")
    assert next(g for g in again.gaps if "gift" in g.question.lower()).open_ticket_ids == []
    assert main(["insights", FEATURE, "--embedder", "tfidf"]) == 0
    out = capsys.readouterr().out
    assert "does not cover" in out and "gift" in out.lower()
    no_rain = "We only answer questions about your orders; see a weather service."
    code = main(["insights", FEATURE, "--send", str(weather.ticket_ids[0]), "--answer", no_rain])
    assert code == 0 and "pending in the review queue" in capsys.readouterr().out
    assert main(["insights", FEATURE, "--send", "3"]) == 2
    assert "--send TICKET and --answer TEXT go together" in capsys.readouterr().err

    drift = drift_report(FEATURE, store=store, settings=get_settings())
    assert drift.window_rows == len(GIFT_QUESTIONS + WEATHER_QUESTIONS + PERSON)
    assert not drift.alarm  # fewer rows than monitor.drift.min_rows
    embedding = next(c for c in drift.checks if c.name == "embedding")
    assert "test-hashing" in embedding.detail
    assert {"input_length", "language_mix", "oov_share", "prediction", "confidence"} <= {
        c.name for c in drift.checks
    }
