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


@pytest.mark.packaged  # e5-small: TF-IDF does not group zh paraphrases by topic
def test_the_demo_help_centers_uncovered_questions_become_topic_gaps(request) -> None:
    """The shipped demo's questions its help center does not cover (8 topics, zh and en,
    ``help_center/eval_uncovered.jsonl``), asked of an assistant that cannot answer them,
    come back as gaps that each hold one topic, ranked by volume. Measured: 8 gaps, 7 of
    them one topic, 7 of the 8 topic-language groups found."""
    import json
    from collections import Counter
    from pathlib import Path

    import aiflywheel.tasks.assistant as assistant_package

    shipped = Path(assistant_package.__file__).parent / "help_center" / "eval_uncovered.jsonl"
    topic_of: dict[str, str] = {}
    for line in shipped.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        for question in row["asked"]:
            topic_of[question] = f"{row['topic']}/{row['language']}"
    store, auth = request.getfixturevalue("trained"), request.getfixturevalue("keys")
    with serving(store) as api:
        for question in topic_of:
            ask(api, auth, question, session=question[:24])
    handed = {t.question for t in list_tickets(store, FEATURE, status=None)}
    assert len(handed) >= 0.9 * len(topic_of)  # the tiny KB covers none of them

    report = mine_insights(FEATURE, store=store, settings=get_settings(), embedder="e5-small")
    assert [g.volume for g in report.gaps] == sorted((g.volume for g in report.gaps), reverse=True)
    pure, found = 0, set()
    for gap in report.gaps:
        questions = [q for q in [gap.question, *gap.examples] if q in topic_of]
        if not questions:
            continue
        top, count = Counter(topic_of[q] for q in questions).most_common(1)[0]
        pure += count == len(questions)
        found.add(top)
    assert pure >= 0.75 * len(report.gaps)  # a gap is one topic, not a mix
    assert len(found) >= 6  # of the 8 topic-language groups asked (4 topics, zh and en)
