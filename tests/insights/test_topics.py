"""Insights on a classifier: comments and corrections become topics with trend, languages,
examples and titles; bad input is one line."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1]))

from aiflywheel.errors import ConflictError, DataError, NotFoundError  # noqa: E402
from aiflywheel.insights.topics import (  # noqa: E402
    cluster,
    mine_insights,
    send_gap_draft,
    terms,
    tfidf_embed,
    titles,
)
from aiflywheel.settings import get_settings  # noqa: E402
from aiflywheel.store import Store, open_store  # noqa: E402
from analytics_world import FEATURE, build_champion, english, log_traffic  # noqa: E402

SHIPPING = [
    "shipping was slow, the parcel took two weeks",
    "slow shipping again, parcel late",
    "parcel arrived late, shipping too slow",
    "the shipping is slow and the parcel late",
]
PRICE = [
    "price too high for this quality",
    "the price is high, too expensive",
    "expensive price, not worth it",
    "too expensive, the price should be lower",
]
ZH = ["物流太慢了，包裹晚到", "包裹物流很慢", "物流慢，包裹两周才到"]


@pytest.fixture
def store() -> Store:
    return open_store()  # the test's own FLYWHEEL_HOME (conftest)


def test_clusters_follow_the_silhouette_and_titles_name_the_topic() -> None:
    texts = SHIPPING + PRICE
    labels = cluster(tfidf_embed(texts), 6, seed=0)
    assert len(set(labels[:4])) == 1 and len(set(labels[4:])) == 1 and labels[0] != labels[4]
    assert (
        cluster(tfidf_embed(["same words", "same words", "same words", "same words"]), 4, 0).max()
        == 0
    )
    first, second = titles([SHIPPING, PRICE])
    assert {"shipping", "parcel", "slow"} & set(first.split(" / "))
    assert {"price", "expensive"} & set(second.split(" / "))
    assert "物流" in terms("物流太慢了")


def test_feedback_and_corrections_become_topics(store: Store, tmp_path: Path) -> None:
    model, version, _ = build_champion(store, tmp_path)
    rng = random.Random(5)
    texts = [english(rng, i)[0] for i in range(len(SHIPPING + PRICE + ZH) + 6)]
    ids = log_traffic(store, model, version, texts, days=3)
    comments = SHIPPING + PRICE + ZH
    for pid, comment in zip(ids, comments, strict=False):
        store.add_feedback(pid, thumb="down", comment=comment)
    for pid in ids[len(comments) :]:
        store.add_feedback(pid, corrected_label="positive", comment="note on a correction")
    report = mine_insights(FEATURE, store=store, settings=get_settings(), embedder="tfidf")
    assert report.texts == {"feedback": len(comments), "correction": 6}
    assert report.gaps == []  # a classifier hands nothing to a person
    feedback = [t for t in report.topics if t.source == "feedback"]
    assert sum(t.size for t in feedback) == len(comments) and len(feedback) >= 2
    zh_topic = next(t for t in feedback if t.languages.get("zh"))
    assert zh_topic.languages == {"zh": 3} and "物流" in zh_topic.title
    assert all(t.examples and len(t.examples) <= 3 for t in report.topics)
    assert all(sum(d.count for d in t.trend) == t.size for t in report.topics)
    assert [t.topic_id for t in report.topics] == list(range(1, len(report.topics) + 1))
    assert {"correction"} == {t.source for t in report.topics} - {"feedback"}
    dumped = report.model_dump(mode="json")
    assert {"feature", "topics", "gaps"} <= set(dumped)
    assert set(dumped["topics"][0]) == {
        "topic_id",
        "title",
        "size",
        "trend",
        "languages",
        "examples",
        "source",
    }
    assert (
        len(
            mine_insights(
                FEATURE, store=store, settings=get_settings(), max_topics=1, embedder="tfidf"
            ).topics
        )
        == 1
    )


def test_bad_input_is_one_line(store: Store, tmp_path: Path) -> None:
    build_champion(store, tmp_path)
    with pytest.raises(DataError, match="max_topics must be a whole number of at least 1, got 0"):
        mine_insights(FEATURE, store=store, settings=get_settings(), max_topics=0)
    with pytest.raises(NotFoundError, match="unknown feature 'nope'"):
        mine_insights("nope", store=store, settings=get_settings())
    with pytest.raises(ConflictError, match="is a classifier"):
        send_gap_draft(FEATURE, 1, "an answer", store=store, actor="pm")
    with pytest.raises(DataError, match="answer: empty"):
        send_gap_draft(FEATURE, 1, "  ", store=store, actor="pm")
    empty = mine_insights(FEATURE, store=store, settings=get_settings())
    assert empty.topics == [] and empty.gaps == []
