"""The answer policy: a curated FAQ answer, a cited generated answer, or an honest handoff.

For each user message, in order:

1. An empty message, or one longer than ``max_message_chars``: ``DataError`` (the API
   answers 422 naming the limit).
2. A request for a person (``intents.asks_for_person``): handoff, reason
   ``asked for a person``.
3. A message that tries to override the assistant's instructions
   (``intents.prompt_injection``): a refusal in the user's language, nothing retrieved
   or generated, flagged in the answer's details. It is not a handoff: nothing a person
   needs to do.
4. Hybrid retrieval of the message (with the previous user message when the new one is
   short, so "and to Taiwan?" keeps its context). The confidence is the best cosine
   similarity between the message and a retrieved chunk; with a learned ``judge``
   (``judge.FeatureJudge``) the hits are reordered by the judge's probability that
   they answer the message, and the confidence is the best probability.
5. Confidence below ``thresholds.handoff_below``: handoff, reason ``low retrieval
   confidence``.
6. A FAQ entry among the top hits whose similarity reaches ``thresholds.faq_at_least``
   (in the user's language when one is there): its curated answer, cited as [1].
7. Otherwise the generator composes an answer from the top passages (the user's language
   first), citing them as [n]. The grounding post-check marks sentences that the cited
   passages do not support; an LLM answer with unsupported sentences is replaced by the
   extractive answer (recorded in the details), so what reaches the user is always
   supported by retrieved text.
8. When the answer that would be sent (after the post-check and any fallback) is the
   generator's "I don't know" sentence (``prompts.DONT_KNOW``, what the extractive
   generator says when no passage sentence answers the question), the reply is a
   handoff, reason ``the retrieved passages do not answer the question``: the customer
   gets a person, not an answer that only says it has none. ``answer`` and ``stream``
   both decide this in ``finish``.

The two thresholds come from ``calibrate_thresholds`` on an evaluation set (see
``aiflywheel.tasks.assistant.evaluation``), or from the recipe when it sets them.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiflywheel.errors import DataError
from aiflywheel.tasks.assistant.generators import AnswerGenerator, answer_generation, cited_passages
from aiflywheel.tasks.assistant.grounding import check_support, strip_citations
from aiflywheel.tasks.assistant.intents import asks_for_person, prompt_injection
from aiflywheel.tasks.assistant.knowledge_index import KnowledgeIndex
from aiflywheel.tasks.assistant.prompts import DONT_KNOW
from aiflywheel.tasks.assistant.types import Chunk, Generation, RetrievalHit

HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff]")
SHORT_FOLLOW_UP_CHARS = 12
NO_ANSWER_REASON = "the retrieved passages do not answer the question"
PERSON_REASON = "asked for a person"

HANDOFF_TEXT = {
    "zh": "这个问题我需要请人工客服来处理。我已为您转接并创建了工单，客服同事会尽快回复您。",
    "en": "I'd like a member of our support team to help with this. I've passed your "
    "question on and opened a ticket; a person will get back to you shortly.",
}
REFUSAL_TEXT = {
    "zh": "抱歉，我只能根据本店帮助中心的内容回答购物、配送、退换货、支付、账户和会员等问题，"
    "无法更改我的工作方式。请问有什么可以帮您？",
    "en": "Sorry, I can only answer questions about shopping, shipping, returns, payments, "
    "accounts and membership from our help center, and I can't change how I work. "
    "What can I help you with?",
}


def _squashed(text: str) -> str:
    return re.sub(r"\s+", "", strip_citations(text)).lower()


_DONT_KNOW_SQUASHED = frozenset(_squashed(text) for text in DONT_KNOW.values())


def is_dont_know(text: str) -> bool:
    """Whether ``text`` is the generators' "I don't know" sentence (``prompts.DONT_KNOW``,
    in either language; spacing, case, width and citation markers ignored)."""
    return _squashed(text) in _DONT_KNOW_SQUASHED


def reply_language(text: str) -> str:
    """``zh`` when the message has any Chinese characters (mixed zh/en questions come
    from Chinese-speaking users), else ``en``."""
    return "zh" if HAN.search(text) else "en"


@dataclass(frozen=True)
class Thresholds:
    """When to hand off and when a FAQ answer is confident enough to return as is."""

    handoff_below: float
    faq_at_least: float
    origin: str = "recipe"

    def to_json(self) -> dict[str, Any]:
        return {
            "handoff_below": self.handoff_below,
            "faq_at_least": self.faq_at_least,
            "origin": self.origin,
        }


@dataclass
class Citation:
    """A passage an answer cites as [n]."""

    n: int
    chunk_id: str
    kind: str
    source: str
    anchor: str
    title: str
    text: str

    @classmethod
    def of(cls, n: int, chunk: Chunk) -> Citation:
        title = chunk.title or (chunk.text if chunk.kind == "faq" else "")
        body = chunk.answer if chunk.kind == "faq" else chunk.text
        return cls(n, chunk.id, chunk.kind, chunk.source, chunk.anchor, title, body)

    def to_json(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "id": self.chunk_id,
            "kind": self.kind,
            "source": self.source,
            "anchor": self.anchor,
            "citation": f"{self.source}#{self.anchor}" if self.anchor else self.source,
            "title": self.title,
            "text": self.text,
        }


@dataclass
class AssistantReply:
    """One answer and everything the API, the log and the evaluation need about it."""

    text: str
    kind: str  # faq | generated | handoff | refusal
    language: str
    confidence: float
    handoff: bool = False
    reason: str | None = None
    citations: list[Citation] = field(default_factory=list)
    hits: list[RetrievalHit] = field(default_factory=list)
    supported: bool | None = None
    unsupported_sentences: list[str] = field(default_factory=list)
    generator: str | None = None
    generation: Generation | None = None
    details: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def extension(self) -> dict[str, Any]:
        """The documented ``flywheel`` field of a chat completion. When a streamed text
        was replaced after the post-check (``replaced_streamed_text``), ``final_text`` is
        the answer to show instead of the streamed deltas."""
        final = {"final_text": self.text} if self.details.get("replaced_streamed_text") else {}
        return {
            "answer_type": self.kind,
            "handoff": self.handoff,
            "reason": self.reason,
            "confidence": round(self.confidence, 4),
            "language": self.language,
            "citations": [c.to_json() for c in self.citations],
            "supported": self.supported,
            "unsupported_sentences": self.unsupported_sentences,
            "generator": self.generator,
            **self.details,
            **final,
        }


@dataclass
class Assistant:
    """A knowledge index, a generator and the thresholds, answering one message at a time."""

    index: KnowledgeIndex
    generator: AnswerGenerator
    thresholds: Thresholds
    top_k: int = 5
    candidates: int = 50
    passages: int = 4
    max_message_chars: int = 4000
    mode: str = "hybrid"
    fallback: AnswerGenerator | None = None
    judge: Any = None  # judge.FeatureJudge: reorders the hits; its best probability = confidence

    # -- the decision -----------------------------------------------------------------
    def check_message(self, message: str) -> str:
        text = (message or "").strip()
        if not text:
            raise DataError("message: empty or whitespace-only; ask a question")
        if len(text) > self.max_message_chars:
            raise DataError(
                f"message: at most {self.max_message_chars} characters, got {len(text)}"
            )
        return text

    def retrieval_query(self, text: str, history: Sequence[dict]) -> str:
        """The message, with the previous user message in front when it is a short
        follow-up (few words), so retrieval keeps the conversation's topic."""
        previous = [m["content"] for m in history if m.get("role") == "user" and m.get("content")]
        if previous and len(text) <= SHORT_FOLLOW_UP_CHARS:
            return f"{previous[-1]} {text}"
        return text

    def search(self, query: str) -> list[RetrievalHit]:
        return self.index.search(query, self.top_k, mode=self.mode, candidates=self.candidates)

    @staticmethod
    def confidence(hits: Sequence[RetrievalHit]) -> float:
        """The best cosine similarity of a retrieved chunk (the BM25 score when the
        index has no dense vectors)."""
        if not hits:
            return 0.0
        dense = [h.dense_score for h in hits if h.dense_score is not None]
        if dense:
            return float(max(dense))
        return float(max(h.bm25_score or 0.0 for h in hits))

    def decide(self, message: str, history: Sequence[dict] = ()) -> AssistantReply | _Compose:
        """Everything up to generation: a finished reply (handoff, refusal, FAQ) or what
        to compose from."""
        text = self.check_message(message)
        language = reply_language(text)
        if asks_for_person(text):
            return self._handoff(language, PERSON_REASON, 1.0, [])
        injection = prompt_injection(text)
        if injection is not None:
            return AssistantReply(
                text=REFUSAL_TEXT[language],
                kind="refusal",
                language=language,
                confidence=0.0,
                reason=f"prompt injection: {injection}",
                details={"flagged": "prompt_injection"},
            )
        query = self.retrieval_query(text, history)
        hits = self.search(query)
        if self.judge is not None and hits:
            hits, probabilities = self.judge.rerank(query, hits)
            confidence = float(probabilities.max())
        else:
            confidence = self.confidence(hits)
        if not hits or confidence < self.thresholds.handoff_below:
            return self._handoff(
                language,
                f"low retrieval confidence ({confidence:.3f} < "
                f"{self.thresholds.handoff_below:.3f})",
                confidence,
                hits,
            )
        faq = self._confident_faq(hits, language)
        if faq is not None:
            chunk = faq.chunk
            return AssistantReply(
                text=f"{chunk.answer} [1]",
                kind="faq",
                language=language,
                confidence=confidence,
                citations=[Citation.of(1, chunk)],
                hits=hits,
                supported=True,
                details={"faq_id": chunk.anchor, "faq_score": round(faq.dense_score or 0, 4)},
            )
        passages = self._passages(hits, language)
        return _Compose(text, language, confidence, hits, passages)

    def answer(self, message: str, history: Sequence[dict] = ()) -> AssistantReply:
        started = time.perf_counter()
        decided = self.decide(message, history)
        if isinstance(decided, AssistantReply):
            decided.seconds = time.perf_counter() - started
            return decided
        generation = self.generator.generate(
            decided.question, decided.passages, language=decided.language, history=history
        )
        reply = self.finish(decided, generation)
        reply.seconds = time.perf_counter() - started
        return reply

    def stream(self, message: str, history: Sequence[dict] = ()) -> Iterator[str | AssistantReply]:
        """Text deltas as they are generated, then the finished reply (whose text may
        differ from the streamed one when the post-check replaced it: the reply's
        ``details["replaced_streamed_text"]`` says so)."""
        started = time.perf_counter()
        decided = self.decide(message, history)
        if isinstance(decided, AssistantReply):
            yield decided.text
            decided.seconds = time.perf_counter() - started
            yield decided
            return
        pieces: list[str] = []
        for piece in self.generator.stream(
            decided.question, decided.passages, language=decided.language, history=history
        ):
            pieces.append(piece)
            yield piece
        streamed = "".join(pieces)
        generation = answer_generation(
            streamed, len(decided.passages), generator=self.generator.name
        )
        reply = self.finish(decided, generation)
        if reply.text != streamed:
            reply.details["replaced_streamed_text"] = True
        reply.seconds = time.perf_counter() - started
        yield reply

    def finish(self, decided: _Compose, generation: Generation) -> AssistantReply:
        """Post-check a generated answer; fall back to the extractive one when an LLM's
        answer is not supported by the passages it was given; hand off when what is left
        is empty or only says "I don't know" (``is_dont_know``)."""
        passages = decided.passages
        cited = generation.cited or cited_passages(generation.text, len(passages))
        check = check_support(generation.text, passages, cited)
        details: dict[str, Any] = {}
        used, used_cited = generation, cited
        if not check.supported and self.fallback is not None and generation.text.strip():
            details["replaced"] = {
                "generator": self.generator.name,
                "text": generation.text,
                "unsupported_sentences": check.unsupported_sentences,
            }
            used = self.fallback.generate(
                decided.question, passages, language=decided.language, history=()
            )
            used_cited = used.cited or cited_passages(used.text, len(passages))
            check = check_support(used.text, passages, used_cited)
        if not used.text.strip() or is_dont_know(used.text):
            reason = (
                NO_ANSWER_REASON
                if used.text.strip()
                else "the generator produced no answer from the passages"
            )
            reply = self._handoff(decided.language, reason, decided.confidence, decided.hits)
            reply.generator = used.generator or self.generator.name
            reply.generation = used
            reply.details = {**details, "generated_text": used.text}
            return reply
        shown = sorted(set(used_cited)) or list(range(1, len(passages) + 1))
        return AssistantReply(
            text=used.text,
            kind="generated",
            language=decided.language,
            confidence=decided.confidence,
            citations=[Citation.of(n, passages[n - 1]) for n in shown if 0 < n <= len(passages)],
            hits=decided.hits,
            supported=check.supported,
            unsupported_sentences=list(check.unsupported_sentences),
            generator=used.generator or self.generator.name,
            generation=used,
            details=details,
        )

    # -- pieces -----------------------------------------------------------------------
    def _handoff(
        self, language: str, reason: str, confidence: float, hits: list[RetrievalHit]
    ) -> AssistantReply:
        return AssistantReply(
            text=HANDOFF_TEXT[language],
            kind="handoff",
            language=language,
            confidence=confidence,
            handoff=True,
            reason=reason,
            hits=hits,
        )

    def _confident_faq(self, hits: Sequence[RetrievalHit], language: str) -> RetrievalHit | None:
        confident = [
            h
            for h in hits[:3]
            if h.chunk.kind == "faq" and (h.dense_score or 0.0) >= self.thresholds.faq_at_least
        ]
        if not confident:
            return None
        same = [h for h in confident if h.chunk.language == language]
        return (same or confident)[0]

    def _passages(self, hits: Sequence[RetrievalHit], language: str) -> list[Chunk]:
        ordered = [h.chunk for h in hits if h.chunk.language == language] + [
            h.chunk for h in hits if h.chunk.language != language
        ]
        return ordered[: self.passages]


@dataclass
class _Compose:
    """What the generator is asked to answer from."""

    question: str
    language: str
    confidence: float
    hits: list[RetrievalHit]
    passages: list[Chunk]


__all__ = [
    "Assistant",
    "AssistantReply",
    "Citation",
    "HANDOFF_TEXT",
    "REFUSAL_TEXT",
    "NO_ANSWER_REASON",
    "PERSON_REASON",
    "Thresholds",
    "is_dont_know",
    "reply_language",
]
