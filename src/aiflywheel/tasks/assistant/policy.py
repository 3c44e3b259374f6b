"""The answer policy: a curated FAQ answer, a cited generated answer, or an honest handoff.

For each user message, in order:

1. An empty message, or one longer than ``max_message_chars``: ``DataError`` (the API
   answers 422 naming the limit). A history longer than ``max_history_chars`` is trimmed
   from the oldest turn (said in ``details["history_trimmed"]`` and in ``reason``).
   Then (``conversation``): a Japanese or Korean message is handed off (the help center
   answers in Chinese and English); a message with nothing to answer (only emoji or
   punctuation, only a phone number or e-mail) gets a ``clarify`` reply asking for the
   question; small talk (greetings, thanks, "are you a bot?") a short ``small_talk`` reply.
   Neither is a handoff, so neither opens a ticket.
2. A request for a person (``intents.asks_for_person``): handoff, reason
   ``asked for a person``.
3. A message that tries to override the assistant's instructions
   (``intents.prompt_injection``): a refusal in the user's language, nothing retrieved
   or generated, flagged in the answer's details. It is not a handoff: nothing a person
   needs to do. When the message also asks a real question
   (``conversation.question_after_injection``), that question is answered and the
   instruction ignored (``details["ignored_injection"]``).
4. Hybrid retrieval of the standalone question (``conversation.standalone_question``: a
   follow-up such as "新疆也可以吗？" is put after the previous user message, so it keeps
   the conversation's topic; recorded in ``details["standalone_question"]``), with the
   translations of its other-language words appended when it mixes zh and en
   (``glossary``, learned from the knowledge base's aligned pairs;
   ``details["normalized_question"]``). The confidence is the best cosine similarity
   between the message and a retrieved chunk; with a learned ``judge``
   (``judge.FeatureJudge``) the hits are reordered by the judge's probability that they
   answer the message, and the confidence is the best probability.
5. Confidence below ``thresholds.handoff_below``: handoff, reason ``low retrieval
   confidence``.
6. A FAQ entry among the top hits whose similarity reaches ``thresholds.faq_at_least``
   (in the user's language when one is there): its curated answer, cited as [1].
7. Otherwise the generator composes an answer from the top passages (the user's language
   first), citing them as [n]. The grounding post-check marks sentences that the cited
   passages do not support; an LLM answer with unsupported sentences is replaced by the
   extractive answer (recorded in the details), so what reaches the user is always
   supported by retrieved text. When the question names an entity the knowledge base
   treats specially (``conditions``: a place, tier or payment method) and the answer does
   not mention it while a retrieved passage does, the answer comes from that passage
   (``details["entity_passage"]``), so it never states the general rule for it; so it does
   when the answer's passage names the entity only in passing and a retrieved passage is
   about it (names it in its heading or FAQ question).
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
from aiflywheel.tasks.assistant.conditions import (
    EntityLexicon,
    entity_passage,
    missing_entities,
    titled_passage,
)
from aiflywheel.tasks.assistant.conversation import (
    NOTHING_TO_ANSWER_TEXT,
    nothing_to_answer,
    question_after_injection,
    small_talk,
    small_talk_reply,
    standalone_question,
    third_language,
    trim_history,
)
from aiflywheel.tasks.assistant.extractive import ExtractiveGenerator
from aiflywheel.tasks.assistant.generators import AnswerGenerator, answer_generation, cited_passages
from aiflywheel.tasks.assistant.glossary import Glossary
from aiflywheel.tasks.assistant.grounding import check_support, strip_citations
from aiflywheel.tasks.assistant.intents import asks_for_person, prompt_injection
from aiflywheel.tasks.assistant.knowledge_index import KnowledgeIndex
from aiflywheel.tasks.assistant.prompts import DONT_KNOW
from aiflywheel.tasks.assistant.types import Chunk, Generation, RetrievalHit

HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff]")
NO_ANSWER_REASON = "the retrieved passages do not answer the question"
PERSON_REASON = "asked for a person"
THIRD_LANGUAGE_REASON = "written in a language the help center does not answer in"
LANGUAGE_NAMES = {"ja": "Japanese", "ko": "Korean"}

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
    # with a judge in the "no_answer" role: its best probability at or above which an
    # extractive "I don't know" becomes the first passage quoted (None: always hand off)
    answer_judge_at_least: float | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "handoff_below": self.handoff_below,
            "faq_at_least": self.faq_at_least,
            "origin": self.origin,
        }
        if self.answer_judge_at_least is not None:
            out["answer_judge_at_least"] = self.answer_judge_at_least
        return out


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
    kind: str  # faq | generated | handoff | refusal | small_talk | clarify
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
    judge_role: str = "confidence"  # or "no_answer": see config.JudgeConfig.role
    max_history_chars: int = 4000
    _lexicon: EntityLexicon | None = field(default=None, init=False, repr=False, compare=False)
    _lexicon_size: int = field(default=-1, init=False, repr=False, compare=False)
    _glossary: Glossary | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def lexicon(self) -> EntityLexicon:
        """The knowledge base's entity lexicon (``conditions``), rebuilt when the index
        changes size (the glossary with it)."""
        if self._lexicon is None or self._lexicon_size != len(self.index.chunks):
            self._lexicon = EntityLexicon.from_chunks(self.index.chunks)
            self._glossary = Glossary.from_chunks(self.index.chunks)
            self._lexicon_size = len(self.index.chunks)
        return self._lexicon

    @property
    def glossary(self) -> Glossary:
        """The zh/en glossary learned from the knowledge base's aligned pairs (``glossary``)."""
        if self._glossary is None or self._lexicon_size != len(self.index.chunks):
            _ = self.lexicon
        assert self._glossary is not None
        return self._glossary

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
        """The message made standalone (``conversation.standalone_question``): after the
        previous user message when it is a follow-up, so retrieval keeps the topic."""
        return standalone_question(text, history)

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
        history, dropped = trim_history(history, self.max_history_chars)
        notes: dict[str, Any] = {}
        if dropped:
            notes["history_trimmed"] = (
                f"history trimmed: the {dropped} oldest turn(s) dropped to fit "
                f"{self.max_history_chars} characters"
            )
        reply = self._before_retrieval(text, notes)
        if reply is not None:
            return reply
        language = reply_language(text)
        injection = prompt_injection(text)
        if injection is not None:
            rest = question_after_injection(text, prompt_injection)
            if rest is None:
                return self._with_notes(
                    AssistantReply(
                        text=REFUSAL_TEXT[language],
                        kind="refusal",
                        language=language,
                        confidence=0.0,
                        reason=f"prompt injection: {injection}",
                        details={"flagged": "prompt_injection"},
                    ),
                    notes,
                )
            notes["ignored_injection"] = injection
            text = rest
        if asks_for_person(text):
            return self._with_notes(self._handoff(language, PERSON_REASON, 1.0, []), notes)
        standalone = self.retrieval_query(text, history)
        if standalone != text:
            notes["standalone_question"] = standalone
        text = standalone
        normalized = self.glossary.normalize(text)
        if normalized != text:
            notes["normalized_question"] = normalized
        text = normalized
        decided = self._retrieve_and_decide(text, language)
        if isinstance(decided, AssistantReply):
            return self._with_notes(decided, notes)
        decided.notes = notes
        return decided

    def _before_retrieval(self, text: str, notes: dict[str, Any]) -> AssistantReply | None:
        """A third language, nothing to answer, small talk (see ``conversation``)."""
        foreign = third_language(text)
        if foreign is not None:
            name = LANGUAGE_NAMES[foreign]
            reply = self._handoff("en", f"{THIRD_LANGUAGE_REASON} ({name})", 0.0, [])
            reply.text = f"{HANDOFF_TEXT['zh']}\n{HANDOFF_TEXT['en']}"
            return self._with_notes(reply, notes)
        language = reply_language(text)
        empty = nothing_to_answer(text)
        if empty is not None:
            return self._with_notes(
                AssistantReply(
                    text=NOTHING_TO_ANSWER_TEXT[empty][language],
                    kind="clarify",
                    language=language,
                    confidence=0.0,
                    reason="only personal data" if empty == "pii" else "no question in the message",
                ),
                notes,
            )
        chat = small_talk(text)
        if chat is not None:
            return self._with_notes(
                AssistantReply(
                    text=small_talk_reply(chat, language),
                    kind="small_talk",
                    language=language,
                    confidence=1.0,
                    reason=f"small talk ({chat})",
                ),
                notes,
            )
        return None

    @staticmethod
    def _with_notes(reply: AssistantReply, notes: dict[str, Any]) -> AssistantReply:
        reply.details = {**notes, **reply.details}
        trimmed = notes.get("history_trimmed")
        if trimmed:
            reply.reason = f"{reply.reason}; {trimmed}" if reply.reason else trimmed
        return reply

    def _retrieve_and_decide(self, text: str, language: str) -> AssistantReply | _Compose:
        hits = self.search(text)
        judged = None
        if self.judge is not None and hits and self.judge_role == "no_answer":
            judged = float(self.judge.score_hits(text, hits).max())
            confidence = self.confidence(hits)
        elif self.judge is not None and hits:
            hits, probabilities = self.judge.rerank(text, hits)
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
        if faq is not None and not missing_entities(self.lexicon, text, faq.chunk.answer):
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
        return _Compose(text, language, confidence, hits, passages, judged=judged)

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
        if decided.judged is not None:
            details["judge_probability"] = round(decided.judged, 4)
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
        if (
            is_dont_know(used.text)
            and decided.judged is not None
            and self.thresholds.answer_judge_at_least is not None
            and decided.judged >= self.thresholds.answer_judge_at_least
            and passages
        ):
            details["judge_answered"] = round(decided.judged, 4)
            used = ExtractiveGenerator().first_passage(passages, decided.language)
            used_cited = used.cited
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
            return self._with_notes(reply, decided.notes)
        text = used.text
        missing = missing_entities(self.lexicon, decided.question, strip_citations(text))
        candidates = [h.chunk for h in decided.hits]
        found = entity_passage(missing, candidates, language=decided.language)
        if found is None:
            named = self.lexicon.find(decided.question)
            cited_chunks = [passages[n - 1] for n in used_cited if 0 < n <= len(passages)]
            found = titled_passage(named, candidates, cited_chunks, language=decided.language)
            missing = named if found is not None else missing
        if found is not None:
            if found.chunk not in passages:
                passages = [*passages, found.chunk]
            n = passages.index(found.chunk) + 1
            zh = decided.language == "zh"
            text = f"{found.text}[{n}]" if zh else f"{found.text} [{n}]"
            used_cited = [n]
            check = check_support(text, passages, used_cited)
            details["entity_passage"] = {"entities": missing, "citation": found.chunk.citation}
        details = {**decided.notes, **details}
        shown = sorted(set(used_cited)) or list(range(1, len(passages) + 1))
        reply = AssistantReply(
            text=text,
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
        trimmed = decided.notes.get("history_trimmed")
        if trimmed:
            reply.reason = trimmed
        return reply

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
    notes: dict[str, Any] = field(default_factory=dict)
    judged: float | None = None  # the judge's best probability, in the "no_answer" role


__all__ = [
    "Assistant",
    "AssistantReply",
    "Citation",
    "HANDOFF_TEXT",
    "REFUSAL_TEXT",
    "NO_ANSWER_REASON",
    "PERSON_REASON",
    "THIRD_LANGUAGE_REASON",
    "Thresholds",
    "is_dont_know",
    "reply_language",
]
