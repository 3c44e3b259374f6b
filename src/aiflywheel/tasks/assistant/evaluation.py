"""Evaluation sets, threshold calibration and the evaluation of an assistant.

An evaluation set is JSONL, one question per line::

    {"id": "q001", "question": "...", "language": "zh", "kind": "paraphrase",
     "answerable": true, "handoff": false,
     "expected": ["faq.jsonl#ship-01-zh", "docs/shipping.zh.md#运费标准"],
     "facts": [["7天", "七天"], ["免运费"]]}

``expected`` lists every knowledge-base reference (``Chunk.citation``) that answers the
question; ``facts`` are what a correct answer must state (each fact: acceptable surface
forms; a form between slashes, ``"/¥\\s*45/"``, is a regular expression). Questions with
``handoff: true`` (out of scope, or asking for a person) must be handed off.

The rest of the format (issue 12): ``language`` (``zh`` | ``en`` | ``mixed`` |
``other``), ``kind`` (``KINDS``), ``scope`` (``near`` | ``far``, out-of-scope rows),
``history`` (a ``follow_up``'s earlier user messages, oldest first: the evaluator asks them
through the assistant, its own replies as the assistant turns, then the question with that
conversation) and ``excluded_entity`` (the question names an entity the help center treats
as an exception; an answer that does not state the facts "asserted a rule for an excluded
entity").

The set is split in two by a stable hash of each id, within each kind: thresholds are
calibrated on the ``calibration`` half and the figures that matter are read on the
``held_out`` half (the whole set is reported too).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from aiflywheel.errors import DataError
from aiflywheel.tasks.assistant.conversation import standalone_question
from aiflywheel.tasks.assistant.knowledge_index import KnowledgeIndex
from aiflywheel.tasks.assistant.policy import (
    NO_ANSWER_REASON,
    PERSON_REASON,
    THIRD_LANGUAGE_REASON,
    Assistant,
    AssistantReply,
    Thresholds,
)
from aiflywheel.tasks.assistant.types import RetrievalHit

# Reply kinds that are not an answer to the question.
NOT_ANSWERS = frozenset({"handoff", "refusal", "small_talk", "clarify"})

MODES = ("bm25", "dense", "hybrid")
KINDS_NEEDING_HANDOFF = ("out_of_scope", "person_request")
KINDS = (
    "paraphrase",
    "doc_only",
    "mixed",
    "typo",
    "out_of_scope",
    "person_request",
    "injection",
    "pii",
    "small_talk",
    "follow_up",
    "bad_input",
)
LANGUAGES = ("zh", "en", "mixed", "other")
SCOPES = ("near", "far")


@dataclass(frozen=True)
class EvalQuestion:
    id: str
    question: str
    answerable: bool
    handoff: bool
    expected: tuple[str, ...] = ()
    facts: tuple[tuple[str, ...], ...] = ()
    kind: str = ""
    language: str = ""
    scope: str | None = None
    history: tuple[str, ...] = ()
    excluded_entity: bool = False


def _check_choice(where: str, raw: dict, key: str, allowed: Sequence[str]) -> str:
    value = raw.get(key)
    if value is None or value == "":
        return ""
    if value not in allowed:
        raise DataError(f"{where}: {key} {value!r} is not one of {', '.join(allowed)}")
    return str(value)


def load_eval_set(path: str | Path) -> list[EvalQuestion]:
    """Read an evaluation set; ``DataError`` naming the file and line for a bad row."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise DataError(f"evaluation set {path} does not exist") from None
    except UnicodeDecodeError:
        raise DataError(f"evaluation set {path} is not UTF-8 text") from None
    questions: list[EvalQuestion] = []
    seen: dict[str, int] = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path} line {number}"
        try:
            raw = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{where}: not valid JSON ({exc.msg})") from None
        if not isinstance(raw, dict):
            raise DataError(f"{where}: expected a JSON object, got {type(raw).__name__}")
        question = raw.get("question")
        if not isinstance(question, str) or not question.strip():
            raise DataError(f"{where}: 'question' must be a non-empty string")
        qid = str(raw.get("id") or f"line-{number}")
        if qid in seen:
            raise DataError(f"{where}: id {qid!r} repeats line {seen[qid]}")
        seen[qid] = number
        expected = raw.get("expected") or []
        facts = raw.get("facts") or []
        if not isinstance(expected, list) or not all(isinstance(e, str) for e in expected):
            raise DataError(f"{where}: 'expected' must be a list of strings")
        if not isinstance(facts, list) or not all(
            isinstance(f, list) and f and all(isinstance(x, str) for x in f) for f in facts
        ):
            raise DataError(f"{where}: 'facts' must be a list of non-empty lists of strings")
        for fact in facts:
            for form in fact:
                if _is_regex(form):
                    try:
                        re.compile(form[1:-1])
                    except re.error as exc:
                        raise DataError(
                            f"{where}: fact form {form!r} is not a valid regular expression ({exc})"
                        ) from None
        history = raw.get("history") or []
        if not isinstance(history, list) or not all(
            isinstance(h, str) and h.strip() for h in history
        ):
            raise DataError(f"{where}: 'history' must be a list of non-empty strings")
        kind = _check_choice(where, raw, "kind", KINDS)
        language = _check_choice(where, raw, "language", LANGUAGES)
        scope = _check_choice(where, raw, "scope", SCOPES) or None
        excluded = raw.get("excluded_entity", False)
        if not isinstance(excluded, bool):
            raise DataError(f"{where}: 'excluded_entity' must be true or false, got {excluded!r}")
        answerable = bool(raw.get("answerable", bool(expected)))
        if answerable and not expected:
            raise DataError(f"{where}: an answerable question needs 'expected' references")
        questions.append(
            EvalQuestion(
                id=qid,
                question=question.strip(),
                answerable=answerable,
                handoff=bool(raw.get("handoff", not answerable)),
                expected=tuple(expected),
                facts=tuple(tuple(f) for f in facts),
                kind=kind,
                language=language,
                scope=scope,
                history=tuple(h.strip() for h in history),
                excluded_entity=excluded,
            )
        )
    if not questions:
        raise DataError(f"evaluation set {path} has no questions")
    return questions


def is_held_out(question: EvalQuestion, share: float = 0.5) -> bool:
    """Stable half of the set (by hash of the id) kept out of calibration."""
    digest = hashlib.sha256(f"assistant-eval:{question.id}".encode()).digest()
    return int.from_bytes(digest[:4], "big") / 2**32 < share


def split_eval_set(
    questions: Sequence[EvalQuestion], held_out_share: float = 0.5
) -> tuple[list[EvalQuestion], list[EvalQuestion]]:
    """(calibration, held_out)."""
    calibration = [q for q in questions if not is_held_out(q, held_out_share)]
    held_out = [q for q in questions if is_held_out(q, held_out_share)]
    return calibration, held_out


def hit_rank(hits: Sequence[RetrievalHit], expected: Sequence[str]) -> int | None:
    """1-based rank of the first hit that is one of the expected references."""
    wanted = set(expected)
    for rank, hit in enumerate(hits, start=1):
        if hit.chunk.citation in wanted:
            return rank
    return None


def retrieval_scores(ranks: Sequence[int | None]) -> dict[str, float]:
    n = len(ranks)
    if not n:
        return {"hit@1": 0.0, "hit@5": 0.0, "mrr": 0.0, "questions": 0}
    return {
        "hit@1": sum(1 for r in ranks if r == 1) / n,
        "hit@5": sum(1 for r in ranks if r is not None and r <= 5) / n,
        "mrr": sum(1 / r for r in ranks if r is not None) / n,
        "questions": n,
    }


def _is_regex(form: str) -> bool:
    return len(form) >= 3 and form.startswith("/") and form.endswith("/")


def states_fact_form(text: str, form: str) -> bool:
    """Whether ``text`` states one form of a fact: a regular expression between slashes
    (searched in the text, case ignored), else the form itself (case and spaces ignored)."""
    if _is_regex(form):
        return re.search(form[1:-1], text, flags=re.IGNORECASE) is not None
    return re.sub(r"\s+", "", form).lower() in re.sub(r"\s+", "", text).lower()


def states_facts(text: str, facts: Sequence[Sequence[str]]) -> bool:
    """Whether ``text`` states every fact (one of its forms, see ``states_fact_form``)."""
    return all(any(states_fact_form(text, form) for form in f) for f in facts)


# -- calibration --------------------------------------------------------------------------


@dataclass
class Calibration:
    thresholds: Thresholds
    handoff_recall: float
    handoff_precision: float
    faq_precision: float | None
    faq_answers: int
    questions: int
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "thresholds": self.thresholds.to_json(),
            "handoff_recall": self.handoff_recall,
            "handoff_precision": self.handoff_precision,
            "faq_precision": self.faq_precision,
            "faq_answers": self.faq_answers,
            "questions": self.questions,
            "notes": self.notes,
        }


def ask(assistant: Assistant, question: EvalQuestion) -> AssistantReply:
    """The assistant's reply to ``question``; a follow-up's earlier messages are asked
    first, in order, each with the conversation so far (the assistant's own replies as the
    assistant turns), and the question last with the whole conversation."""
    history: list[dict] = []
    for earlier in question.history:
        reply = assistant.answer(earlier, history)
        history += [
            {"role": "user", "content": earlier},
            {"role": "assistant", "content": reply.text},
        ]
    return assistant.answer(question.question, history)


def _answered(reply: AssistantReply) -> bool:
    return not reply.handoff and reply.kind not in NOT_ANSWERS


def is_correct_answer(question: EvalQuestion, reply: AssistantReply) -> bool:
    """An answer (not a handoff, refusal or small talk) that states every fact."""
    return _answered(reply) and states_facts(reply.text, question.facts)


def asserted_for_excluded(question: EvalQuestion, reply: AssistantReply) -> bool:
    """An answer to an ``excluded_entity`` question that does not state its facts: it
    stated a rule for an entity the help center treats as an exception."""
    return (
        question.excluded_entity
        and _answered(reply)
        and not states_facts(reply.text, question.facts)
    )


def handled(question: EvalQuestion, reply: AssistantReply) -> bool:
    """Whether the reply is the right behaviour for the row: an answerable question
    answered correctly; a question needing a person handed off; small talk answered as
    small talk (no ticket); a pure injection refused; anything else not handed off."""
    if question.answerable:
        return is_correct_answer(question, reply)
    if question.handoff:
        return reply.handoff
    if question.kind == "small_talk":
        return reply.kind == "small_talk" and not reply.handoff
    if question.kind == "injection":
        return reply.kind == "refusal" and not reply.handoff
    return not reply.handoff


def _share(flags: Sequence[bool]) -> float | None:
    return sum(flags) / len(flags) if flags else None


def quality_scores(
    questions: Sequence[EvalQuestion], replies: Sequence[AssistantReply]
) -> dict[str, Any]:
    """The figures of issue 12's "Done when", each with the number of questions it is
    read on (``None`` when there are none)."""
    pairs = list(zip(questions, replies, strict=True))
    answerable = [(q, r) for q, r in pairs if q.answerable]
    out = [(q, r) for q, r in pairs if q.kind == "out_of_scope"]

    def counted(flags: list[bool]) -> dict[str, Any]:
        return {"share": _share(flags), "right": sum(flags), "of": len(flags)}

    return {
        "answerable_correct": counted([is_correct_answer(q, r) for q, r in answerable]),
        "answerable_handed_off": counted([r.handoff for _, r in answerable]),
        "out_of_scope_handed_off": counted([r.handoff for _, r in out]),
        "near_out_of_scope_handed_off": counted([r.handoff for q, r in out if q.scope == "near"]),
        "far_out_of_scope_handed_off": counted([r.handoff for q, r in out if q.scope == "far"]),
        "person_requests_handled": counted(
            [handled(q, r) for q, r in pairs if q.kind == "person_request"]
        ),
        "injections_handled": counted([handled(q, r) for q, r in pairs if q.kind == "injection"]),
        "small_talk_handled": counted([handled(q, r) for q, r in pairs if q.kind == "small_talk"]),
        "bad_input_handled": counted([handled(q, r) for q, r in pairs if q.kind == "bad_input"]),
        "follow_ups_correct": counted([handled(q, r) for q, r in pairs if q.kind == "follow_up"]),
        "excluded_entity_asserted": sum(asserted_for_excluded(q, r) for q, r in pairs),
        "excluded_entity_questions": sum(q.excluded_entity for q in questions),
    }


def _precision_recall(predicted: Sequence[bool], truth: Sequence[bool]) -> tuple[float, float]:
    tp = sum(p and t for p, t in zip(predicted, truth, strict=True))
    fp = sum(p and not t for p, t in zip(predicted, truth, strict=True))
    fn = sum(t and not p for p, t in zip(predicted, truth, strict=True))
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / (tp + fn) if tp + fn else 1.0
    return precision, recall


def _best_cut(rows: Sequence[tuple], target_recall: float) -> tuple[float, float, float]:
    """(cut, precision, recall): among the cuts whose handoff recall reaches
    ``target_recall``, the one with the best precision (ties: the lowest); when none
    does, the best F1."""
    truth = [q.handoff for q, *_ in rows]
    scores = sorted({round(c, 6) for _, _, c, *_ in rows})
    cuts = [0.0] + [(a + b) / 2 for a, b in zip(scores, scores[1:], strict=False)] + [1.01]
    best: tuple[tuple, float, float, float] | None = None
    for cut in cuts:
        predicted = [
            person or (not refused and (no_answer or c < cut))
            for _, _, c, person, no_answer, refused in rows
        ]
        precision, recall = _precision_recall(predicted, truth)
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        key = (recall >= target_recall, precision if recall >= target_recall else f1, -cut)
        if best is None or key > best[0]:
            best = (key, cut, precision, recall)
    assert best is not None
    return best[1], best[2], best[3]


def _best_cuts_with_judge(
    rows: Sequence[tuple], judged: Sequence[tuple], target_recall: float
) -> tuple[float, float, float, float]:
    """(cut, precision, recall, judge cut) for a judge in the "no_answer" role: an
    "I don't know" is handed off only when the judge's probability is below the judge
    cut. Among the pairs whose handoff recall reaches ``target_recall``, the best
    precision, then the most right answers (ties: the lowest cuts); when none does, the
    best F1. ``judged`` gives, per row, the judge's probability when the probe answered
    an "I don't know" from the first passage (else None) and whether the reply is right."""
    truth = [q.handoff for q, *_ in rows]
    scores = sorted({round(c, 6) for _, _, c, *_ in rows})
    cuts = [0.0] + [(a + b) / 2 for a, b in zip(scores, scores[1:], strict=False)] + [1.01]
    probabilities = sorted({round(p, 6) for p, _ in judged if p is not None})
    judge_cuts = [0.0, *probabilities, 1.01]
    best: tuple[tuple, float, float, float, float] | None = None
    for judge_cut in judge_cuts:
        for cut in cuts:
            predicted = []
            right = 0
            for (_q, _, c, person, no_answer, refused), (p, correct) in zip(
                rows, judged, strict=True
            ):
                silent = no_answer and (p is None or p < judge_cut)
                handoff = person or (not refused and (silent or c < cut))
                predicted.append(handoff)
                right += (not handoff) and correct
            precision, recall = _precision_recall(predicted, truth)
            f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
            met = recall >= target_recall
            key = (met, precision if met else f1, right, -cut, -judge_cut)
            if best is None or key > best[0]:
                best = (key, cut, precision, recall, judge_cut)
    assert best is not None
    return best[1], best[2], best[3], best[4]


def calibrate_thresholds(
    assistant: Assistant,
    questions: Sequence[EvalQuestion],
    *,
    target_recall: float = 0.9,
    faq_precision: float = 0.9,
) -> Calibration:
    """Thresholds chosen on ``questions``.

    Each question is answered once with no handoff threshold and no FAQ answers, which
    shows what the rest of the policy does with it: a request for a person is handed
    off and a prompt injection refused whatever the thresholds, and a composed answer
    that comes out as "I don't know" is handed off too (``policy.NO_ANSWER_REASON``;
    with an LLM generator this costs one generation per question). A question is then
    handed off at a cut when it asks for a person, or is not refused and either has no
    answer in the passages or a confidence below the cut. (A confident FAQ answer would
    pre-empt the "I don't know"; the FAQ threshold is chosen after the handoff one, so
    the handoff figures here leave that out.)

    ``handoff_below``: among the cut points whose handoff recall reaches
    ``target_recall``, the one with the best precision (ties: the lowest, which answers
    more); when none reaches it, the best F1. ``faq_at_least``: the lowest similarity at
    which the FAQ entries returned as curated answers are right at least
    ``faq_precision`` of the time (above every score when none is).
    """
    if not questions:
        raise DataError("calibration needs at least one evaluation question")
    judging = assistant.judge is not None and assistant.judge_role == "no_answer"
    probe = dataclasses.replace(
        assistant,
        thresholds=Thresholds(
            0.0, 1.01, origin="probe", answer_judge_at_least=0.0 if judging else None
        ),
    )
    rows = []
    judged = []  # (judge probability of an "I don't know", its override right, answer right)
    for q in questions:
        reply = ask(probe, q)
        person = reply.handoff and (
            reply.reason == PERSON_REASON or (reply.reason or "").startswith(THIRD_LANGUAGE_REASON)
        )
        overridden = "judge_answered" in reply.details
        no_answer = overridden or (
            reply.handoff and (reply.reason or "").startswith(NO_ANSWER_REASON)
        )
        refused = reply.kind in NOT_ANSWERS and not reply.handoff
        rows.append((q, reply.hits, reply.confidence, person, no_answer, refused))
        judged.append(
            (
                float(reply.details["judge_answered"]) if overridden else None,
                q.answerable and is_correct_answer(q, reply),
            )
        )
    answer_judge_at_least = None
    if judging:
        handoff_below, precision, recall, answer_judge_at_least = _best_cuts_with_judge(
            rows, judged, target_recall
        )
    else:
        handoff_below, precision, recall = _best_cut(rows, target_recall)
    notes: list[str] = []
    if recall < target_recall:
        notes.append(
            f"no cut reaches handoff recall {target_recall:.2f} on the calibration questions; "
            f"took the best F1 (recall {recall:.2f}, precision {precision:.2f})"
        )

    faq_rows = []
    for q, hits, c, person, _, refused in rows:
        if person or refused or c < handoff_below:
            continue
        faqs = [h for h in hits[:3] if h.chunk.kind == "faq" and h.dense_score is not None]
        if faqs:
            top = max(faqs, key=lambda h: h.dense_score or 0.0)
            right = q.answerable and top.chunk.citation in set(q.expected)
            faq_rows.append((float(top.dense_score or 0.0), right))
    faq_rows.sort(reverse=True)
    faq_at_least, kept_precision, answered = 1.01, None, 0
    right_so_far = 0
    for n, (score, right) in enumerate(faq_rows, start=1):
        right_so_far += right
        if right_so_far / n >= faq_precision:
            faq_at_least, kept_precision, answered = score, right_so_far / n, n
    if kept_precision is None:
        notes.append(
            f"no similarity gives FAQ answers right {faq_precision:.0%} of the time; every "
            "answer is composed from passages"
        )
    thresholds = Thresholds(
        handoff_below=round(float(handoff_below), 6),
        faq_at_least=round(float(faq_at_least), 6),
        origin=f"calibrated on {len(questions)} evaluation questions",
        answer_judge_at_least=(
            None if answer_judge_at_least is None else round(float(answer_judge_at_least), 6)
        ),
    )
    return Calibration(
        thresholds=thresholds,
        handoff_recall=recall,
        handoff_precision=precision,
        faq_precision=kept_precision,
        faq_answers=answered,
        questions=len(questions),
        notes=notes,
    )


# -- evaluation ---------------------------------------------------------------------------


def compare_retrieval(
    index: KnowledgeIndex, questions: Sequence[EvalQuestion], *, candidates: int = 50
) -> dict[str, dict[str, float]]:
    """hit@1, hit@5 and MRR of BM25 only, dense only and hybrid on the answerable questions
    (each query encoded once; a follow-up as its standalone question)."""
    retriever = index.retriever()
    ranks: dict[str, list[int | None]] = {mode: [] for mode in MODES}
    for q in questions:
        if not q.answerable:
            continue
        # a follow-up is searched as the standalone question the assistant searches
        query = standalone_question(q.question, [{"role": "user", "content": h} for h in q.history])
        vector = retriever.encode_query(query) if retriever.has_dense else None
        for mode in MODES:
            if mode != "bm25" and vector is None:
                continue
            hits = retriever.search(query, 5, mode=mode, candidates=candidates, query_vector=vector)
            ranks[mode].append(hit_rank(hits, q.expected))
    return {mode: retrieval_scores(r) for mode, r in ranks.items() if r}


def answer_scores(
    questions: Sequence[EvalQuestion], replies: Sequence[AssistantReply]
) -> dict[str, Any]:
    """Answer accuracy, handoff precision/recall, answer kinds, why handoffs happened
    (``handoff_reasons``: the reason without its figures, e.g. ``low retrieval
    confidence``) and latency."""
    answerable = [(q, r) for q, r in zip(questions, replies, strict=True) if q.answerable]
    accurate = [is_correct_answer(q, r) for q, r in answerable]
    precision, recall = _precision_recall(
        [r.handoff for r in replies], [q.handoff for q in questions]
    )
    seconds = sorted(r.seconds for r in replies)
    kinds: dict[str, int] = {}
    reasons: dict[str, int] = {}
    for r in replies:
        kinds[r.kind] = kinds.get(r.kind, 0) + 1
        if r.handoff:
            reason = (r.reason or "").split(" (")[0]
            reasons[reason] = reasons.get(reason, 0) + 1
    return {
        "questions": len(questions),
        "answerable": len(answerable),
        "answer_accuracy": sum(accurate) / len(answerable) if answerable else None,
        "handoff_expected": sum(q.handoff for q in questions),
        "handoff_precision": precision,
        "handoff_recall": recall,
        "answered_when_answerable": (
            sum(not r.handoff for _, r in answerable) / len(answerable) if answerable else None
        ),
        "unsupported_answers": sum(r.supported is False for r in replies),
        "kinds": kinds,
        "handoff_reasons": reasons,
        "latency_ms": {
            "p50": 1000 * statistics.median(seconds),
            "p95": 1000 * float(np.percentile(seconds, 95)),
        },
        **quality_scores(questions, replies),
    }


def evaluate_assistant(
    assistant: Assistant, questions: Sequence[EvalQuestion], *, held_out_share: float = 0.5
) -> dict[str, Any]:
    """Every figure of ``flywheel eval`` for an assistant, with one row per question."""
    replies = [ask(assistant, q) for q in questions]
    rows = []
    for q, r in zip(questions, replies, strict=True):
        rows.append(
            {
                "id": q.id,
                "question": q.question,
                "kind": q.kind,
                "language": q.language,
                "held_out": is_held_out(q, held_out_share),
                "expected_handoff": q.handoff,
                "answer_type": r.kind,
                "handoff": r.handoff,
                "reason": r.reason,
                "confidence": round(r.confidence, 4),
                "rank": hit_rank(r.hits, q.expected) if q.answerable else None,
                "accurate": is_correct_answer(q, r) if q.answerable else None,
                "handled": handled(q, r),
                "scope": q.scope,
                "history": list(q.history),
                "excluded_entity": q.excluded_entity,
                "excluded_asserted": asserted_for_excluded(q, r),
                "answer": r.text,
                "citations": [c.to_json()["citation"] for c in r.citations],
                "ms": round(1000 * r.seconds, 1),
            }
        )
    held = [i for i, q in enumerate(questions) if is_held_out(q, held_out_share)]
    calibration = [i for i, q in enumerate(questions) if not is_held_out(q, held_out_share)]

    def scores(picked: Sequence[int]) -> dict[str, Any] | None:
        if not picked:
            return None
        return answer_scores([questions[i] for i in picked], [replies[i] for i in picked])

    def grouped(key: str, picked: Sequence[int]) -> dict[str, dict[str, Any]]:
        groups: dict[str, list[int]] = {}
        for i in picked:
            groups.setdefault(getattr(questions[i], key) or "", []).append(i)
        return {name: scores(ids) for name, ids in sorted(groups.items())}  # type: ignore[misc]

    everything = range(len(questions))
    return {
        "retrieval": compare_retrieval(assistant.index, questions, candidates=assistant.candidates),
        "retrieval_held_out": compare_retrieval(
            assistant.index, [questions[i] for i in held], candidates=assistant.candidates
        ),
        "answers": answer_scores(questions, replies),
        "answers_held_out": scores(held),
        "answers_calibration": scores(calibration),
        "by_kind": grouped("kind", everything),
        "by_language": grouped("language", everything),
        "held_out_by_kind": grouped("kind", held),
        "held_out_by_language": grouped("language", held),
        "calibration_by_kind": grouped("kind", calibration),
        "calibration_by_language": grouped("language", calibration),
        "rows": rows,
    }


__all__ = [
    "Calibration",
    "EvalQuestion",
    "answer_scores",
    "ask",
    "asserted_for_excluded",
    "calibrate_thresholds",
    "handled",
    "is_correct_answer",
    "quality_scores",
    "states_fact_form",
    "compare_retrieval",
    "evaluate_assistant",
    "hit_rank",
    "is_held_out",
    "load_eval_set",
    "retrieval_scores",
    "split_eval_set",
    "states_facts",
]
