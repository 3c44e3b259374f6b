"""The extractive generator: answers by quoting passage sentences, no language model.

For each candidate sentence it measures how much of the question it covers: the
question's content tokens (stop words dropped) weighted by inverse sentence frequency
among the candidates, summed over those the sentence contains, divided by the sum over
all of them. A FAQ answer sentence also scores as well as its FAQ question matches
(the curated answer answers that question even when it shares no words with it), and
a document sentence gets a quarter of its heading's coverage on top. Earlier passages
(better retrieval ranks, in the answer's language) weigh more: the score is multiplied by
``1 - rank_prior * position`` (``RANK_PRIOR`` 0.4, at least ``MIN_PRIOR``), so a later
passage is quoted only when it covers the question clearly better than the first; the
retrieval ranks paraphrases better than word overlap does.

When the best sentence's passage is short (its body at most ``whole_passage_chars``: a
curated FAQ answer, a short document section), the answer is that whole passage: it keeps
the rule together with the exceptions, limits, amounts and time windows the passage
attaches to it, which a lone sentence drops. Otherwise the answer is the best sentences
(at most ``max_sentences``, each scoring at least half the best score, together at most
``max_chars``), quoted verbatim, each followed by its passage number ([n]), grouped by
passage in order of their best sentence and in reading order inside a passage. When no
sentence reaches ``MIN_SCORE`` (read under a mild prior, ``GATE_PRIOR``) the answer is
``prompts.DONT_KNOW`` for the language, citing nothing. When passages in the question's
language exist only those are used, so the answer comes in the customer's language.
Deterministic: ties break by position.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from aiflywheel.tasks.assistant.generators import TextStream, answer_generation
from aiflywheel.tasks.assistant.grounding import (
    EN_STOPWORDS,
    ZH_STOP_CHARS,
    Tokenizer,
    light_stem,
    simple_tokens,
    split_sentences,
)
from aiflywheel.tasks.assistant.prompts import DONT_KNOW, prompt_language
from aiflywheel.tasks.assistant.types import Chunk, Generation

# A sentence must cover at least this weighted share of the question to be quoted.
MIN_SCORE = 0.2
# Each retrieval rank below the first multiplies a passage's sentence scores by
# 1 - RANK_PRIOR * rank (at least MIN_PRIOR): word overlap alone picked a passage other
# than the retrieval's best far too often (benchmarks/assistant_answers.py).
RANK_PRIOR = 0.4
MIN_PRIOR = 0.05
# Whether any sentence answers at all ("I don't know" below MIN_SCORE) is read under a
# mild prior, 1 - GATE_PRIOR * rank (at least GATE_MIN_PRIOR), so the strong one above
# changes which passage is quoted, not how often the assistant hands off.
GATE_PRIOR = 0.05
GATE_MIN_PRIOR = 0.75
# Verbs that carry no topic in help-center questions ("how long does it take"), on top of
# the grounding stop words; forms as the tokenizers produce them (bm25 stems).
QUESTION_VERBS = frozenset(
    [
        "take",
        "takes",
        "taking",
        "took",
        "make",
        "makes",
        "making",
        "made",
        "go",
        "goes",
        "going",
        "went",
        "come",
        "comes",
        "happen",
        "happens",
    ]
)
_LIST_MARKER_RE = re.compile(r"^(?:[-*•·]\s+|\d{1,2}[.)、]\s*|#+\s*)")
_CJK_RE = re.compile(r"[\u3400-\u9fff]")
# A sentence and the spaces after it: the pieces a whole passage streams in.
_SENTENCE_PIECE_RE = re.compile(r"[^。！？!?.]*(?:[。！？!?]+|\.(?=\s|$)|\.)?\s*")


def default_tokenizer() -> Tokenizer:
    """The retrieval tokenizer ``assistant.bm25.bm25_tokens`` (jieba for Chinese) when
    it is importable, else ``grounding.simple_tokens`` (words and character bigrams)."""
    try:
        from aiflywheel.tasks.assistant.bm25 import bm25_tokens
    except ImportError:
        return simple_tokens
    return bm25_tokens


def text_language(text: str) -> str:
    """``"zh"`` when at least a fifth of the letters are Chinese characters, else ``"en"``."""
    letters = [ch for ch in text if ch.isalpha()]
    if not letters:
        return "en"
    chinese = sum(1 for ch in letters if _CJK_RE.match(ch))
    return "zh" if chinese * 5 >= len(letters) else "en"


@dataclass(frozen=True)
class Candidate:
    """A sentence that may be quoted: its text, passage number (1-based), position in
    the passage and score."""

    text: str
    passage: int
    position: int
    score: float
    gate_score: float = 0.0  # the score under the mild prior that decides "I don't know"


class ExtractiveGenerator:
    """Quotes the passage sentences that best answer the question; see the module docstring."""

    def __init__(
        self,
        *,
        tokenizer: Callable[[str], list[str]] | None = None,
        max_sentences: int = 3,
        max_chars: int = 600,
        whole_passage_chars: int = 600,
        rank_prior: float = RANK_PRIOR,
    ) -> None:
        self.name = "extractive"
        self.rank_prior = rank_prior
        self.whole_passage_chars = whole_passage_chars
        self.max_sentences = max_sentences
        self.max_chars = max_chars
        self._tokenizer = tokenizer

    @property
    def tokenizer(self) -> Tokenizer:
        if self._tokenizer is None:
            self._tokenizer = default_tokenizer()
        return self._tokenizer

    def warm(self) -> ExtractiveGenerator:
        """Load the tokenizer's dictionary (jieba's takes about a second) now."""
        self.tokenizer("预热 warm up")
        return self

    def _terms(self, text: str) -> set[str]:
        terms = set()
        for token in self.tokenizer(text):
            token = token.strip().lower()
            if not token or not any(ch.isalnum() for ch in token):
                continue
            if token in EN_STOPWORDS or token in QUESTION_VERBS:
                continue
            if all(ch in ZH_STOP_CHARS for ch in token):
                continue
            terms.add(light_stem(token))
        return terms

    def candidates(
        self, question: str, passages: Sequence[Chunk], language: str
    ) -> list[Candidate]:
        """Every quotable sentence of the passages in the answer's language, scored."""
        lang = prompt_language(language)
        numbered = list(enumerate(passages, start=1))
        same = [(n, c) for n, c in numbered if _chunk_language(c) == lang]
        pool = same or numbered
        raw: list[tuple[int, int, str, float]] = []  # passage, position, sentence, prior
        question_terms = self._terms(question)
        for number, chunk in pool:
            body = chunk.answer if chunk.kind == "faq" else chunk.text
            heading = chunk.text if chunk.kind == "faq" else chunk.title
            heading_cov = _coverage(question_terms, self._terms(heading), {}) if heading else 0.0
            for position, sentence in enumerate(_quotable_sentences(body)):
                raw.append((number, position, sentence, heading_cov))
        weights = self._weights(question_terms, [self._terms(s) for _, _, s, _ in raw])
        positions = {number: i for i, (number, _) in enumerate(pool)}
        scored = []
        for number, position, sentence, heading_cov in raw:
            chunk = passages[number - 1]
            own = _coverage(question_terms, self._terms(sentence), weights)
            if chunk.kind == "faq":
                score = max(own, heading_cov)
            else:
                score = min(1.0, own + 0.25 * heading_cov)
            prior = max(MIN_PRIOR, 1.0 - self.rank_prior * positions[number])
            gate = max(GATE_MIN_PRIOR, 1.0 - GATE_PRIOR * positions[number])
            scored.append(
                Candidate(sentence, number, position, round(score * prior, 6), score * gate)
            )
        return scored

    @staticmethod
    def _weights(question_terms: set[str], sentence_terms: list[set[str]]) -> dict[str, float]:
        total = len(sentence_terms)
        return {
            term: math.log(1.0 + (total + 1) / (sum(term in s for s in sentence_terms) + 1))
            for term in question_terms
        }

    def select(self, candidates: list[Candidate]) -> list[Candidate]:
        """The sentences to quote, in answer order."""
        ranked = sorted(candidates, key=lambda c: (-c.score, c.passage, c.position))
        if not ranked or max(c.gate_score for c in ranked) < MIN_SCORE:
            return []
        floor = ranked[0].score / 2
        chosen: list[Candidate] = []
        length = 0
        for cand in ranked:
            if cand.score < floor or len(chosen) >= self.max_sentences:
                break
            if chosen and length + len(cand.text) > self.max_chars:
                continue
            chosen.append(cand)
            length += len(cand.text)
        first: dict[int, int] = {}
        for i, cand in enumerate(chosen):
            first.setdefault(cand.passage, i)
        return sorted(chosen, key=lambda c: (first[c.passage], c.position))

    def first_passage(self, passages: Sequence[Chunk], language: str) -> Generation:
        """The first passage in the answer's language (the retrieval's best) quoted
        whole, or its first ``max_chars``, whatever the question's words: what the policy
        answers when a judge says the passages answer although no sentence shares enough
        words with the question."""
        start = time.perf_counter()
        lang = prompt_language(language)
        same = [n for n, c in enumerate(passages, start=1) if _chunk_language(c) == lang]
        number = (same or [1])[0]
        pieces = self._whole(passages, number, limit=self.max_chars)
        return answer_generation("".join(pieces), len(passages), generator=self.name, started=start)

    def _whole(self, passages: Sequence[Chunk], number: int, *, limit: int) -> list[str]:
        """Passage ``number``'s body in sentence pieces (up to ``limit`` characters, whole
        sentences, at least one), its citation after the last."""
        chunk = passages[number - 1]
        body = " ".join((chunk.answer if chunk.kind == "faq" else chunk.text).split())
        zh = text_language(body) == "zh"
        pieces: list[str] = []
        for piece in (p for p in _SENTENCE_PIECE_RE.findall(body) if p):
            if pieces and sum(map(len, pieces)) + len(piece) > limit:
                break
            pieces.append(piece)
        if not pieces:
            return []
        pieces[-1] = pieces[-1].rstrip() + (f"[{number}]" if zh else f" [{number}]")
        return pieces

    def _pieces(self, question: str, passages: Sequence[Chunk], language: str) -> list[str]:
        lang = prompt_language(language)
        chosen = self.select(self.candidates(question, passages, language))
        if not chosen:
            return [DONT_KNOW[lang]]
        number = max(chosen, key=lambda c: c.score).passage
        chunk = passages[number - 1]
        body = " ".join((chunk.answer if chunk.kind == "faq" else chunk.text).split())
        if body and len(body) <= self.whole_passage_chars:
            zh = text_language(body) == "zh"
            pieces = [p for p in _SENTENCE_PIECE_RE.findall(body) if p]
            pieces[-1] += f"[{number}]" if zh else f" [{number}]"
            return pieces
        pieces = []
        for i, cand in enumerate(chosen):
            zh = text_language(cand.text) == "zh"
            separator = "" if i == 0 or zh else " "
            cite = f"[{cand.passage}]" if zh else f" [{cand.passage}]"
            pieces.append(f"{separator}{cand.text}{cite}")
        return pieces

    def generate(
        self,
        question: str,
        passages: Sequence[Chunk],
        *,
        language: str,
        history: Sequence[dict] = (),
    ) -> Generation:
        """The quoted answer; ``history`` is not used (each answer stands on its passages)."""
        start = time.perf_counter()
        text = "".join(self._pieces(question, passages, language))
        return answer_generation(text, len(passages), generator=self.name, started=start)

    def stream(
        self,
        question: str,
        passages: Sequence[Chunk],
        *,
        language: str,
        history: Sequence[dict] = (),
    ) -> Iterator[str]:
        """The same answer as ``generate``, in pieces of a clause or a few words
        (``streaming.stream_pieces``), like a generated answer's tokens."""
        from aiflywheel.tasks.assistant.streaming import stream_pieces

        start = time.perf_counter()
        pieces = [
            piece
            for sentence in self._pieces(question, passages, language)
            for piece in stream_pieces(sentence)
        ]

        def finish(text: str) -> Generation:
            return answer_generation(text, len(passages), generator=self.name, started=start)

        return TextStream(iter(pieces), finish)


def _chunk_language(chunk: Chunk) -> str:
    if chunk.language:
        return prompt_language(chunk.language)
    return text_language(chunk.passage)


def _quotable_sentences(text: str) -> list[str]:
    """Sentences worth quoting: list markers and heading marks removed, questions and
    fragments without a letter dropped."""
    found = []
    for sentence in split_sentences(text):
        sentence = _LIST_MARKER_RE.sub("", sentence).strip()
        if not any(ch.isalpha() for ch in sentence):
            continue
        if sentence.endswith(("?", "？")):
            continue
        found.append(sentence)
    return found


def _coverage(question_terms: set[str], terms: set[str], weights: dict[str, float]) -> float:
    if not question_terms:
        return 0.0
    total = sum(weights.get(t, 1.0) for t in question_terms)
    hit = sum(weights.get(t, 1.0) for t in question_terms & terms)
    return hit / total if total else 0.0
