"""Training pairs for the answerability judge, built offline from the knowledge base.

A ``JudgeQuery`` is a question, the chunks that answer it (``positives``) and chunks
hidden from retrieval (``hidden``). ``training_rows`` retrieves each question as the
assistant would (hybrid, top ``k``, hidden chunks removed) and labels every hit: 1 when
it is a positive. The hard negatives are what the current retriever puts next to the
answer: neighbouring chunks of the same section or file, other sections of the same
document, FAQ entries on nearby topics.

``build_judge_pairs(index)`` makes, in both languages of the knowledge base:

* ``faq``: a FAQ question -> its own entry, the other-language entry of the same topic
  (ids ``<stem>-zh`` / ``<stem>-en``) and the document chunk that states it (the
  same-language document chunk closest to the entry, when close enough);
* ``faq_cross``: the same question with its own entry hidden: only the other-language
  entry and the document chunk answer it (a paraphrase-like pair);
* ``heading``: a document heading as a question -> its section's chunks (and the FAQ
  entries matched to them);
* ``first_sentence``: the first sentence of a document chunk -> that chunk;
* ``*_unanswerable``: each of those questions with every chunk that answers it hidden
  (its FAQ entries, its section): what retrieval returns then is near-domain text that
  does not answer it, the shape of an out-of-scope question;
* ``learned``: an entry learned from people (a staff answer or an accepted answer,
  ``source`` ``feedback`` or ``kb-added``) -> its entry, and the knowledge-base chunks
  that state its answer (``retrain.states_answer``); the same hidden and unanswerable
  variants. ``flywheel retrain`` puts accepted feedback into the index as such entries
  before the judge is retrained, so every turn of the wheel adds these pairs.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from aiflywheel.tasks.assistant.retrieval import relative_score_fusion
from aiflywheel.tasks.assistant.types import Chunk, RetrievalHit

if TYPE_CHECKING:
    from aiflywheel.tasks.assistant.knowledge_index import KnowledgeIndex

LEARNED_SOURCES = ("feedback", "kb-added")
DOC_MATCH_COSINE = 0.80  # a FAQ entry and a document chunk this close state the same thing
DOC_MATCH_MARGIN = 0.01  # ... and clearly closer than the runner-up
LEARNED_MATCH_SHARE = 0.6
MIN_SENTENCE_CHARS = 12
_LANGUAGE_SUFFIX = re.compile(r"-(zh|en)$")
_SENTENCE_END = re.compile(r"(?<=[.!?。！？])\s*")


@dataclass(frozen=True)
class JudgeQuery:
    """A training question for the judge (see the module doc)."""

    question: str
    positives: frozenset[str]
    origin: str
    hidden: frozenset[str] = field(default_factory=frozenset)


def _stem(chunk: Chunk) -> str:
    return f"{chunk.source}#{_LANGUAGE_SUFFIX.sub('', chunk.anchor)}"


def _first_sentence(text: str) -> str:
    for sentence in _SENTENCE_END.split(text.strip()):
        sentence = sentence.strip(" -*#\n")
        if len(sentence) >= MIN_SENTENCE_CHARS:
            return sentence
    return ""


def _doc_matches(index: KnowledgeIndex, chunks: list[Chunk]) -> dict[str, str]:
    """FAQ chunk id -> the id of the same-language document chunk that states it."""
    embeddings = index.embeddings
    if embeddings is None or not len(embeddings):
        return {}
    docs = [i for i, c in enumerate(chunks) if c.kind == "doc"]
    matches: dict[str, str] = {}
    for i, chunk in enumerate(chunks):
        if chunk.kind != "faq":
            continue
        same = [j for j in docs if chunks[j].language == chunk.language] or docs
        if not same:
            continue
        cosines = embeddings[same] @ embeddings[i]
        order = np.argsort(-cosines)
        best = float(cosines[order[0]])
        runner_up = float(cosines[order[1]]) if len(order) > 1 else -1.0
        if best >= DOC_MATCH_COSINE and best - runner_up >= DOC_MATCH_MARGIN:
            matches[chunk.id] = chunks[same[int(order[0])]].id
    return matches


def _variants(question: str, answers: set[str], own: str | None, origin: str) -> list[JudgeQuery]:
    """The pair itself, the one with its own chunk hidden (when something else answers
    too), and the unanswerable one with every answer hidden."""
    if not question.strip() or not answers:
        return []
    out = [JudgeQuery(question, frozenset(answers), origin)]
    if own is not None and len(answers) > 1:
        out.append(
            JudgeQuery(
                question,
                frozenset(answers - {own}),
                f"{origin}_cross",
                frozenset({own}),
            )
        )
    out.append(JudgeQuery(question, frozenset(), f"{origin}_unanswerable", frozenset(answers)))
    return out


def _sample(queries: list[JudgeQuery], limit: int | None) -> list[JudgeQuery]:
    """At most ``limit`` queries: every ``learned`` one (what people taught), then a
    stable share of the rest (by a hash of question and origin), in their order."""
    if limit is None or len(queries) <= limit:
        return queries
    learned = [q for q in queries if q.origin.startswith("learned")]
    rest = [q for q in queries if not q.origin.startswith("learned")]

    def key(q: JudgeQuery) -> bytes:
        return hashlib.sha256(f"{q.origin}:{q.question}".encode()).digest()

    keep = set(map(id, sorted(rest, key=key)[: max(limit - len(learned), 0)]))
    return learned + [q for q in rest if id(q) in keep]


def build_judge_pairs(
    index: KnowledgeIndex, *, max_questions: int | None = None
) -> list[JudgeQuery]:
    """Every training question the knowledge base in ``index`` gives (module doc); with
    ``max_questions``, every ``learned`` one and a stable sample of the others."""
    from aiflywheel.tasks.assistant.retrain import states_answer

    chunks = index.chunks
    by_stem: dict[str, set[str]] = {}
    by_section: dict[tuple[str, str], set[str]] = {}
    for chunk in chunks:
        if chunk.kind == "faq":
            by_stem.setdefault(_stem(chunk), set()).add(chunk.id)
        else:
            by_section.setdefault((chunk.source, chunk.anchor), set()).add(chunk.id)
    doc_of = _doc_matches(index, chunks)
    faq_of_doc: dict[str, set[str]] = {}
    for faq, doc in doc_of.items():
        faq_of_doc.setdefault(doc, set()).add(faq)
    knowledge = [c for c in chunks if c.source not in LEARNED_SOURCES]
    queries: list[JudgeQuery] = []
    titled: set[tuple[str, str]] = set()
    for chunk in chunks:
        if chunk.kind == "faq" and chunk.source in LEARNED_SOURCES:
            stating = {
                c.id
                for c in knowledge
                if states_answer(c.passage, chunk.answer, LEARNED_MATCH_SHARE)
            }
            queries += _variants(chunk.text, {chunk.id} | stating, chunk.id, "learned")
        elif chunk.kind == "faq":
            answers = set(by_stem[_stem(chunk)])
            if chunk.id in doc_of:
                answers.add(doc_of[chunk.id])
            queries += _variants(chunk.text, answers, chunk.id, "faq")
        else:
            section = by_section[(chunk.source, chunk.anchor)]
            related = set().union(*(faq_of_doc.get(c, set()) for c in section))
            if chunk.title and (chunk.source, chunk.anchor) not in titled:
                titled.add((chunk.source, chunk.anchor))
                queries += _variants(chunk.title, section | related, None, "heading")
            sentence = _first_sentence(chunk.text)
            if sentence:
                queries += _variants(sentence, {chunk.id} | related, None, "first_sentence")
    return _sample(queries, max_questions)


def _lookup(index: KnowledgeIndex) -> dict[str, int]:
    return {c.id: n for n, c in enumerate(index.retriever().chunks)}


def hits_for(question: str, chunks: list[Chunk], index: KnowledgeIndex) -> list[RetrievalHit]:
    """``chunks`` as a hit list for ``question``, in the given order, with the scores
    retrieval would give them (cosine with the stored embedding, BM25, and relative
    fusion over these chunks)."""
    from aiflywheel.tasks.assistant.bm25 import bm25_tokens

    retriever = index.retriever()
    numbers = _lookup(index)
    missing = [c.id for c in chunks if c.id not in numbers]
    if missing:
        from aiflywheel.errors import DataError

        raise DataError(f"chunks not in the knowledge index: {', '.join(missing[:3])}")
    items = [numbers[c.id] for c in chunks]
    bm25 = retriever.bm25.scores(bm25_tokens(question))
    if retriever.has_dense:
        dense = retriever.embeddings @ retriever.encode_query(question)
    else:
        dense = np.zeros(len(retriever.chunks), dtype=np.float32)
    fused = dict(relative_score_fusion(items, dense, bm25, bm25_weight=retriever.bm25_weight))
    return [
        RetrievalHit(
            chunk=retriever.chunks[n],
            score=float(fused.get(n, 0.0)),
            bm25_score=float(bm25[n]),
            dense_score=float(dense[n]) if retriever.has_dense else None,
        )
        for n in items
    ]


def query_hits(
    query: JudgeQuery, index: KnowledgeIndex, *, k: int = 5, candidates: int = 50
) -> list[RetrievalHit]:
    """What the judge sees for ``query``: the top ``k`` hybrid hits with the hidden
    chunks removed. (Adding the positives and the neighbouring chunks that retrieval did
    not return was measured and dropped: with them the answerable-vs-not AUC of an
    earlier 15-feature judge on the shipped evaluation set was 0.69, without them 0.84;
    at answer time the judge only sees what retrieval returned.)"""
    mode = "hybrid" if index.retriever().has_dense else "bm25"
    found = index.search(query.question, k + len(query.hidden), mode=mode, candidates=candidates)
    return [h for h in found if h.chunk.id not in query.hidden][:k]


def _token_owners(index: KnowledgeIndex) -> dict[str, set[str]]:
    """BM25 token -> ids of the chunks that contain it."""
    from aiflywheel.tasks.assistant.bm25 import bm25_tokens

    owners: dict[str, set[str]] = {}
    for chunk in index.chunks:
        for token in set(bm25_tokens(chunk.passage)):
            owners.setdefault(token, set()).add(chunk.id)
    return owners


def known_share(question: str, hidden: frozenset[str], owners: dict[str, set[str]]) -> float:
    """Share of the question's distinct tokens some chunk outside ``hidden`` contains."""
    from aiflywheel.tasks.assistant.bm25 import bm25_tokens

    tokens = set(bm25_tokens(question))
    if not tokens:
        return 0.0
    return sum(bool(owners.get(t, set()) - hidden) for t in tokens) / len(tokens)


def training_rows(
    queries: Iterable[JudgeQuery], index: KnowledgeIndex, *, k: int = 5
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(features, labels, origin per row) of every query's hits (``query_hits``); the
    knowledge base's share of known question words is counted without the hidden
    chunks, as if they had never been written."""
    from aiflywheel.tasks.assistant.judge import FEATURES, hit_features

    owners = _token_owners(index)
    blocks: list[np.ndarray] = []
    labels: list[float] = []
    origins: list[str] = []
    for query in queries:
        hits = query_hits(query, index, k=k)
        if not hits:
            continue
        known = known_share(query.question, query.hidden, owners)
        blocks.append(hit_features(query.question, hits, index, known_share=known))
        labels += [1.0 if h.chunk.id in query.positives else 0.0 for h in hits]
        origins += [query.origin] * len(hits)
    x = np.vstack(blocks) if blocks else np.zeros((0, len(FEATURES)))
    return x, np.asarray(labels), origins


def pair_counts(queries: Sequence[JudgeQuery]) -> dict[str, int]:
    """How many training questions of each origin."""
    counts: dict[str, int] = {}
    for q in queries:
        counts[q.origin] = counts.get(q.origin, 0) + 1
    return counts


__all__ = [
    "JudgeQuery",
    "build_judge_pairs",
    "hits_for",
    "pair_counts",
    "query_hits",
    "training_rows",
]
