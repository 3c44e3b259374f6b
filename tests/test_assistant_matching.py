"""Matching rules behind the help-center figures: BM25 tokens for mixed Chinese/English
and inflected English, relative score fusion, and the intent rules for "let a person
handle it" and "when can I reach someone"."""

from __future__ import annotations

import numpy as np
import pytest
from tests.assistant_parts import HashingEncoder

from aiflywheel.tasks.assistant.bm25 import Bm25Index, bm25_tokens
from aiflywheel.tasks.assistant.chunking import make_chunk
from aiflywheel.tasks.assistant.intents import asks_for_person
from aiflywheel.tasks.assistant.retrieval import (
    DEFAULT_FUSION,
    HybridRetriever,
    _top,
    relative_score_fusion,
)

# ------------------------------------------------------------------ tokens


def test_latin_words_are_cut_from_han_characters_they_touch() -> None:
    tokens = bm25_tokens("我的order什么时候ship？可以用PayPal付款吗")
    assert {"order", "ship", "paypal", "付款", "时候"} <= set(tokens)
    assert not [t for t in tokens if any(c.isascii() for c in t) and not t.isascii()]


def test_english_words_are_stemmed_and_contraction_pieces_dropped() -> None:
    assert bm25_tokens("Shipping REFUNDS boxes refunded") == ["ship", "refund", "box", "refund"]
    assert bm25_tokens("I don't know, it's what we've got; weren't they?") == ["know", "got"]
    assert bm25_tokens("ｏｒｄｅｒ　＃１２３") == ["order", "123"]  # full width, NFKC


def test_inflected_questions_match_their_answers() -> None:
    docs = [
        bm25_tokens("Orders ship within 24 hours."),
        bm25_tokens("Refunds reach your card in 5 days."),
    ]
    index = Bm25Index.build(docs)
    assert index.search(bm25_tokens("when is my order shipped"), 2)[0][0] == 0
    assert index.search(bm25_tokens("refunded to my card?"), 2)[0][0] == 1


# ------------------------------------------------------------------ fusion


def test_relative_score_fusion_math() -> None:
    dense = np.array([0.9, 0.5, 0.3, 0.7, 0.1], dtype=np.float32)
    bm25 = np.array([0.0, 6.0, 3.0, 0.0, 9.0], dtype=np.float32)
    fused = relative_score_fusion([0, 1, 2, 3, 1], dense, bm25, bm25_weight=0.3)
    # over items 0..3: dense min 0.3, max 0.9; best BM25 6.0
    want = {
        0: 0.7 * 1.0 + 0.3 * 0.0,
        1: 0.7 * (0.2 / 0.6) + 0.3 * 1.0,
        2: 0.7 * 0.0 + 0.3 * 0.5,
        3: 0.7 * (0.4 / 0.6) + 0.3 * 0.0,
    }
    assert [item for item, _ in fused] == [0, 1, 3, 2]
    for item, score in fused:
        assert score == pytest.approx(want[item], abs=1e-6)
    assert relative_score_fusion([], dense, bm25) == []
    # one item, or no BM25 match at all: no division by zero
    assert relative_score_fusion([2], dense, np.zeros(5)) == [(2, pytest.approx(0.7))]
    with pytest.raises(ValueError, match=r"bm25_weight must be in \[0, 1\], got 1.5"):
        relative_score_fusion([0], dense, bm25, bm25_weight=1.5)


def _retriever(fusion: str) -> HybridRetriever:
    """Chunk 0 is the dense retriever's clear first choice and shares no word with the
    query; chunks 1 and 2 match a few incidental words."""
    texts = [
        "Refunds reach the original card within five days.",
        "Open the order page to see the parcel.",
        "The parcel page lists every order.",
        "Gift cards cannot be returned.",
    ]
    chunks = [
        make_chunk(kind="doc", source="d.md", anchor=f"c{i}", text=t) for i, t in enumerate(texts)
    ]
    embeddings = np.array(
        [[1.0, 0.0, 0.0], [0.55, 0.835, 0.0], [0.5, 0.0, 0.866], [0.2, 0.98, 0.0]],
        dtype=np.float32,
    )
    bm25 = Bm25Index.build([bm25_tokens(t) for t in texts])
    return HybridRetriever(chunks, bm25, embeddings, HashingEncoder(dim=3), fusion=fusion)


def test_a_clear_dense_winner_is_not_buried_by_incidental_word_matches() -> None:
    query, vector = "my parcel order money back?", np.array([0.95, 0.2, 0.24], np.float32)
    rrf = _retriever("rrf").search(query, 4, query_vector=vector)
    relative = _retriever("relative").search(query, 4, query_vector=vector)
    assert rrf[0].chunk.anchor != "c0"  # rank fusion prefers chunks both lists rank
    assert relative[0].chunk.anchor == "c0" and relative[0].bm25_score == 0.0
    assert DEFAULT_FUSION == "relative"
    assert _retriever(DEFAULT_FUSION).search(query, 4, query_vector=vector) == relative
    # an exact term match still lifts a chunk over a slightly closer vector
    vector = np.array([0.5, 0.85, 0.0], np.float32)
    exact = _retriever("relative").search("gift cards", 4, query_vector=vector)
    assert exact[0].chunk.anchor == "c3" and exact[1].chunk.anchor == "c1"
    assert exact[1].dense_score > exact[0].dense_score


def test_retriever_rejects_unknown_fusion_and_weights() -> None:
    with pytest.raises(ValueError, match="fusion must be one of relative, rrf, got 'max'"):
        _retriever("max")
    with pytest.raises(ValueError, match=r"bm25_weight must be in \[0, 1\], got -0.1"):
        HybridRetriever([], Bm25Index.build([]), None, None, bm25_weight=-0.1)


def test_top_breaks_ties_by_index_also_at_the_cut() -> None:
    scores = np.array([0.5, 0.9, 0.5, 0.5, 0.1])
    assert _top(scores, 2).tolist() == [1, 0]
    assert _top(scores, 3).tolist() == [1, 0, 2]
    assert _top(scores, 10).tolist() == [1, 0, 2, 3, 4]
    assert _top(np.array([]), 3).tolist() == []


# ------------------------------------------------------------------ intents


@pytest.mark.parametrize(
    "message",
    [
        "能不能让客服人员来接一下",
        "我要投诉，给我接你们主管",
        "让人工来处理吧",
        "Let me talk to someone",
        "I want to speak to a human.",
    ],
)
def test_asking_for_a_person(message: str) -> None:
    assert asks_for_person(message)


@pytest.mark.parametrize(
    "message",
    [
        "Until what time in the evening can I still chat with someone from support?",
        "When can I talk to a human?",
        "What hours can I speak to an agent?",
        "我让快递员放门口了",
        "让我想想",
    ],
)
def test_not_asking_for_a_person(message: str) -> None:
    assert not asks_for_person(message)


def test_the_recipe_fusion_settings_reach_the_retriever(tmp_path) -> None:
    from aiflywheel.tasks.assistant.config import AssistantConfig
    from aiflywheel.tasks.assistant.knowledge_base import KnowledgeBase, KnowledgeBaseReport
    from aiflywheel.tasks.assistant.knowledge_index import KnowledgeIndex

    config = AssistantConfig(
        knowledge_base="kb",
        handoff_below=0.1,
        faq_at_least=0.9,
        fusion="rrf",
        bm25_weight=0.6,
        rrf_k=10,
    )
    chunks = [
        make_chunk(kind="faq", source="faq.jsonl", anchor="r", text="Refunds?", answer="5 days."),
        make_chunk(kind="faq", source="faq.jsonl", anchor="s", text="Shipping?", answer="2 days."),
    ]
    built = KnowledgeIndex.build(
        KnowledgeBase(chunks=chunks, report=KnowledgeBaseReport()),
        HashingEncoder(),
        tmp_path / "idx",
        fusion=config.fusion_settings(),
    )
    loaded = KnowledgeIndex.load(
        tmp_path / "idx", HashingEncoder(), fusion=config.fusion_settings()
    )
    for index in (built, loaded):
        retriever = index.retriever()
        assert (retriever.fusion, retriever.bm25_weight, retriever.rrf_k) == ("rrf", 0.6, 10)
    default = KnowledgeIndex.load(tmp_path / "idx", HashingEncoder()).retriever()
    assert (default.fusion, default.bm25_weight) == (DEFAULT_FUSION, 0.3)
