"""Retrain an assistant: the champion's knowledge base plus accepted answers as FAQ
entries -> a candidate (thresholds recalibrated) -> the gate on the frozen evaluation set
and held-out feedback -> promoted or kept out, audited.

What an accepted feedback item teaches (``accepted_answers``): a staff answer to a ticket
or a corrected answer (``corrected_answer``), or, on a thumbs up, the answer the
assistant gave (citation markers removed), each as a FAQ entry whose question is the
customer's question (``feedback#feedback-<id>``). Left out: a thumbs down without an
answer, requests for a person and prompt injections (their "question" is not a topic),
feedback already turned into a live entry (``flywheel kb add --from-feedback``), and,
from the knowledge base only, questions of the evaluation set (so the comparison stays
fair). A stable share (``assistant.gate.feedback_holdout``, a hash of the feedback id)
is held out: those questions judge both versions, their accepted answer being the
expected one.

The gate (``compare_assistants``) answers every question with both versions:

* answer accuracy: an answerable evaluation question is right when the reply is not a
  handoff or refusal and states its facts (as ``flywheel eval``); a held-out feedback
  question when the reply is not a handoff or refusal and states the accepted answer
  (``states_answer``: its text, or ``answer_match`` of its distinct words);
* handoff precision/recall on every question (held-out feedback questions expect an
  answer, not a handoff);
* 95% CIs by bootstrap over questions (paired for the differences).

With ``assistant.judge.kind: features`` the candidate's answerability judge is trained
again (``build.train_judge``) on the knowledge base's pairs plus the accepted answers in
its index (``judge_pairs``, origin ``learned``: the customer's question -> its entry and
the knowledge-base chunks that state the answer), and its thresholds are calibrated on
the judge's score; the same gate decides.

Promotion and rollback themselves are task-independent (``aiflywheel.core.versions``).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from aiflywheel.core.gate import (
    Gate,
    GateResult,
    RetrainResult,
    above,
    at_least,
    at_most,
    holds_out,
)
from aiflywheel.core.versions import conclude_retrain
from aiflywheel.data.text_normalize import near_duplicate_key
from aiflywheel.errors import ConflictError, NotFoundError
from aiflywheel.files import write_json_atomic, write_text_atomic
from aiflywheel.recipe import Recipe, parse_recipe
from aiflywheel.settings import Settings
from aiflywheel.store import Store
from aiflywheel.tasks.assistant.config import AssistantGateConfig
from aiflywheel.tasks.assistant.types import Chunk

Report = Callable[[str], None]
FEEDBACK_SOURCE = "feedback"
ANSWERED_KINDS = ("faq", "generated")


@dataclass(frozen=True)
class AcceptedAnswer:
    """An accepted feedback item as a FAQ entry: the customer's question, the answer."""

    feedback_id: int
    question: str
    answer: str
    origin: str  # corrected_answer | thumbs_up

    @property
    def entry_id(self) -> str:
        return f"feedback-{self.feedback_id}"

    def chunk(self) -> Chunk:
        from aiflywheel.tasks.assistant.knowledge_base import faq_entry_chunk

        return faq_entry_chunk(
            self.question, self.answer, source=FEEDBACK_SOURCE, entry_id=self.entry_id
        )


@dataclass
class FeedbackAnswers:
    """What a retrain learns (``learned``) and what judges it (``holdout``)."""

    learned: list[AcceptedAnswer]
    holdout: list[AcceptedAnswer]
    counts: dict[str, int]


def accepted_answers(
    store: Store, feature: str, gate: AssistantGateConfig, eval_questions: Sequence[str]
) -> FeedbackAnswers:
    """Accepted feedback of ``feature`` split into FAQ entries to learn and held-out ones
    (see the module doc for what is left out)."""
    from aiflywheel.tasks.assistant.grounding import strip_citations
    from aiflywheel.tasks.assistant.intents import asks_for_person, prompt_injection
    from aiflywheel.tasks.assistant.records import get_turn, kb_entries

    frozen = {near_duplicate_key(q) for q in eval_questions}
    live = {row.feedback_id for row in kb_entries(store, feature) if row.feedback_id}
    counts: Counter[str] = Counter()
    learned: dict[str, AcceptedAnswer] = {}
    held: dict[str, AcceptedAnswer] = {}
    for item in store.list_feedback(feature, state="accepted"):
        counts["accepted"] += 1
        if item.id in live:
            counts["already_live_entries"] += 1
            continue
        answer, origin = (item.corrected_answer or "").strip(), "corrected_answer"
        if not answer and item.thumb == "up" and item.predicted in ANSWERED_KINDS:
            answer, origin = (
                strip_citations(get_turn(store, item.prediction_id).answer),
                "thumbs_up",
            )
            answer = " ".join(answer.split())
        if not answer:
            counts["no_answer"] += 1
            continue
        question = " ".join(item.text.split())
        if asks_for_person(question) or prompt_injection(question):
            counts["person_request_or_injection"] += 1
            continue
        key = near_duplicate_key(question)
        entry = AcceptedAnswer(item.id, question, answer, origin)
        if holds_out(feature, item.id, gate.feedback_holdout):
            held[key] = entry
        elif key in frozen:
            counts["in_eval_set"] += 1
        else:
            learned[key] = entry  # the newest accepted answer to a question wins
    # Held-out questions judge both versions: none may be one the candidate learned.
    holdout = [e for key, e in held.items() if key not in learned and key not in frozen]
    counts["learned"] = len(learned)
    counts["held_out"] = len(holdout)
    return FeedbackAnswers(list(learned.values()), holdout, {k: int(v) for k, v in counts.items()})


_MARKERS = re.compile(r"\[\d+\]")
_NOT_WORD = re.compile(r"[\W_]+", re.UNICODE)


def _squash(text: str) -> str:
    return _NOT_WORD.sub("", _MARKERS.sub("", text)).lower()


def states_answer(reply_text: str, expected: str, share: float = 0.8) -> bool:
    """Whether ``reply_text`` states ``expected``: contains it (case, spaces, punctuation
    and [n] markers ignored), or at least ``share`` of its distinct words (BM25 tokens,
    so Chinese counts by characters and bigrams)."""
    from aiflywheel.tasks.assistant.bm25 import bm25_tokens

    wanted, said = _squash(expected), _squash(reply_text)
    if wanted and wanted in said:
        return True
    words = set(bm25_tokens(expected))
    if not words:
        return False
    return len(words & set(bm25_tokens(_MARKERS.sub("", reply_text)))) / len(words) >= share


# -- the gate -------------------------------------------------------------------------------


@dataclass
class Judged:
    """One version's replies to the gate's questions."""

    right: np.ndarray  # per answerable question: stated the facts / the accepted answer
    handoff: np.ndarray  # per question: handed off
    rows: list[dict[str, Any]] = field(default_factory=list)


def _judge(assistant, questions, holdout: Sequence[AcceptedAnswer], match: float) -> Judged:
    from aiflywheel.tasks.assistant.evaluation import states_facts

    right, handoff, rows = [], [], []
    for q in questions:
        reply = assistant.answer(q.question)
        answered = not reply.handoff and reply.kind != "refusal"
        handoff.append(reply.handoff)
        ok = answered and states_facts(reply.text, q.facts) if q.answerable else None
        if q.answerable:
            right.append(ok)
        rows.append({"id": q.id, "source": "eval", "handoff": reply.handoff, "right": ok})
    for entry in holdout:
        reply = assistant.answer(entry.question)
        answered = not reply.handoff and reply.kind != "refusal"
        ok = answered and states_answer(reply.text, entry.answer, match)
        handoff.append(reply.handoff)
        right.append(ok)
        rows.append(
            {
                "id": entry.entry_id,
                "source": "feedback",
                "question": entry.question,
                "handoff": reply.handoff,
                "right": ok,
                "answer": reply.text,
            }
        )
    return Judged(np.array(right, dtype=bool), np.array(handoff, dtype=bool), rows)


def _precision_recall(pred: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Handoff precision and recall along the last axis (1.0 where undefined, like
    ``flywheel eval``)."""
    tp = (pred & truth).sum(-1)
    predicted, needed = pred.sum(-1), truth.sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(predicted > 0, tp / np.maximum(predicted, 1), 1.0)
        recall = np.where(needed > 0, tp / np.maximum(needed, 1), 1.0)
    return precision, recall


def _ci(samples: np.ndarray) -> list[float]:
    return [
        round(float(np.percentile(samples, 2.5)), 6),
        round(float(np.percentile(samples, 97.5)), 6),
    ]


def compare_assistants(
    champion,
    candidate,
    questions,
    holdout: Sequence[AcceptedAnswer],
    gate: AssistantGateConfig,
    *,
    seed: int = 0,
    resamples: int = 1000,
) -> tuple[GateResult, dict[str, list[dict[str, Any]]]]:
    """Both assistants on the evaluation questions plus the held-out feedback; the gate.
    Returns the result and the per-question rows of each version."""
    champ = _judge(champion, questions, holdout, gate.answer_match)
    cand = _judge(candidate, questions, holdout, gate.answer_match)
    truth = np.array([q.handoff for q in questions] + [False] * len(holdout), dtype=bool)
    n_eval_answerable = sum(q.answerable for q in questions)
    n_right, n_all = len(champ.right), len(truth)
    if n_all == 0:
        raise ConflictError(
            "the gate has no question to judge: no evaluation set and no held-out feedback"
        )
    rng = np.random.default_rng(seed)
    right_idx = rng.integers(0, max(n_right, 1), size=(resamples, max(n_right, 1)))
    all_idx = rng.integers(0, n_all, size=(resamples, n_all))

    def accuracy(j: Judged, part: slice = slice(None)) -> float | None:
        values = j.right[part]
        return float(values.mean()) if len(values) else None

    def scores(j: Judged) -> dict[str, Any]:
        precision, recall = _precision_recall(j.handoff, truth)
        boot_p, boot_r = _precision_recall(j.handoff[all_idx], truth[all_idx])
        out: dict[str, Any] = {
            "all": accuracy(j),
            "test": accuracy(j, slice(0, n_eval_answerable)),
            "handoff_precision": float(precision),
            "handoff_recall": float(recall),
            "handoff_precision_ci": _ci(boot_p),
            "handoff_recall_ci": _ci(boot_r),
        }
        if n_right:
            out["all_ci"] = _ci(j.right[right_idx].mean(1))
        if holdout:
            out["feedback"] = accuracy(j, slice(n_eval_answerable, None))
        return out

    champion_scores, candidate_scores = scores(champ), scores(cand)
    comparison: dict[str, Any] = {
        "questions": n_all,
        "eval_questions": len(questions),
        "answerable": n_right,
        "feedback_questions": len(holdout),
    }
    gain = lo = hi = None
    if n_right:
        diff = cand.right[right_idx].mean(1) - champ.right[right_idx].mean(1)
        gain = 100 * (accuracy(cand) - accuracy(champ))  # type: ignore[operator]
        lo, hi = (100 * x for x in _ci(diff))
        comparison.update(accuracy_gain=gain / 100, accuracy_gain_ci=[lo / 100, hi / 100])
    cp, cr = _precision_recall(cand.handoff[all_idx], truth[all_idx])
    hp, hr = _precision_recall(champ.handoff[all_idx], truth[all_idx])
    comparison["handoff_precision_diff_ci"] = _ci(cp - hp)
    comparison["handoff_recall_diff_ci"] = _ci(cr - hr)

    def points(key: str, j_from: dict, j_to: dict) -> float | None:
        a, b = j_from.get(key), j_to.get(key)
        return None if a is None or b is None else round(100 * (a - b), 2)

    checks = [
        at_least(
            "answer-accuracy gain",
            None if gain is None else round(gain, 2),
            gate.min_accuracy_gain,
            unit="points",
            note="" if lo is None else f"95% CI {lo:+.2f} to {hi:+.2f}",
        )
    ]
    if gate.require_significance:
        checks.append(
            above("significance (lower bound of the gain's 95% CI)", lo, 0.0, unit="points")
        )
    checks += [
        at_most(
            "answer-accuracy drop on the frozen evaluation set",
            points("test", champion_scores, candidate_scores),
            gate.max_eval_accuracy_drop,
            unit="points",
        ),
        at_most(
            "handoff-precision drop",
            points("handoff_precision", champion_scores, candidate_scores),
            gate.max_handoff_precision_drop,
            unit="points",
        ),
        at_most(
            "handoff-recall drop",
            points("handoff_recall", champion_scores, candidate_scores),
            gate.max_handoff_recall_drop,
            unit="points",
        ),
    ]
    if gain is None:  # nothing answerable: the gain cannot be measured, so it is not shown
        checks[0] = at_least("answerable questions judged", 0, 1)
    result = Gate(checks)
    rows_note = f"{len(questions)} evaluation questions + {len(holdout)} held-out feedback"
    reason = result.reason(
        f"candidate is better: {gain or 0:+.2f} answer-accuracy points (95% CI "
        f"{lo or 0:+.2f} to {hi or 0:+.2f}) on {rows_note}, handoffs held"
    )
    return (
        GateResult(
            passed=result.passed,
            reason=reason,
            checks=result.to_json(),
            champion=champion_scores,
            candidate=candidate_scores,
            comparison=comparison,
        ),
        {"champion": champ.rows, "candidate": cand.rows},
    )


# -- one turn -------------------------------------------------------------------------------


ASSISTANT_SCORE_ROWS = (
    ("test", "frozen evaluation set"),
    ("feedback", "held-out feedback"),
    ("all", "both"),
    ("handoff_precision", "handoff precision"),
    ("handoff_recall", "handoff recall"),
)


def _summary(row) -> dict[str, Any]:
    m = row.metrics
    return {
        "version": row.version,
        "model": f"{row.base_model}/{row.method}",
        "answer_accuracy": m.get("answer_accuracy"),
        "handoff_precision": m.get("handoff_precision"),
        "handoff_recall": m.get("handoff_recall"),
        "chunks": m.get("chunks"),
    }


def retrain_assistant(
    feature: str,
    *,
    store: Store,
    settings: Settings,
    actor: str,
    recipe: Recipe | None = None,
    report: Report = lambda _: None,
) -> RetrainResult:
    """One turn of the wheel for an assistant (see the module doc)."""
    from aiflywheel.tasks.assistant.build import (
        build_assistant,
        load_manifest,
        resolve_eval_set,
        resolve_knowledge_base,
    )
    from aiflywheel.tasks.assistant.evaluation import load_eval_set
    from aiflywheel.tasks.assistant.service import load_assistant

    row = store.get_feature(feature)
    if row is None:
        raise NotFoundError(f"unknown feature {feature!r}; run `flywheel train` on its recipe")
    explicit = recipe is not None
    recipe = recipe or parse_recipe(row.recipe, origin=f"stored recipe of {feature}")
    if recipe.feature != feature:
        raise ConflictError(f"the recipe declares feature {recipe.feature!r}, not {feature!r}")
    config = recipe.assistant
    assert config is not None  # check_recipe
    champion = store.champion(feature)
    if champion is None:
        raise ConflictError(
            f"feature {feature!r} has no champion yet; promote one first "
            f"(`flywheel promote {feature}:1`)"
        )
    manifest = load_manifest(champion.model_path)
    # The champion's knowledge base and evaluation set (paths as it resolved them), unless
    # a recipe is given on the command line.
    if explicit:
        kb_path = resolve_knowledge_base(config.knowledge_base, recipe.base_dir)
        eval_path = resolve_eval_set(config.eval_set, recipe.base_dir) if config.eval_set else None
    else:
        kb_path = Path(manifest["knowledge_base"])
        eval_path = Path(manifest["eval_set"]) if manifest.get("eval_set") else None
    questions = load_eval_set(eval_path) if eval_path is not None else []
    gate = config.gate
    data = accepted_answers(store, feature, gate, [q.question for q in questions])
    champion_assistant = load_assistant(
        champion.model_path, feature=feature, version=champion.version, store=store
    )
    known = {
        c.anchor for c in champion_assistant.assistant.index.chunks if c.source == FEEDBACK_SOURCE
    }
    new = sum(e.entry_id not in known for e in data.learned)
    data.counts["new"] = new
    if new < gate.min_feedback:
        raise ConflictError(
            f"{feature} has {new} new accepted answer(s) to learn from; "
            f"assistant.gate.min_feedback is {gate.min_feedback} (answer tickets with "
            "`flywheel tickets answer`, review them with `flywheel feedback review`)"
        )
    report(
        f"v{champion.version} knowledge base + {len(data.learned)} accepted answers as FAQ "
        f"entries ({new} new; {len(data.holdout)} held out for the gate, "
        f"{data.counts.get('in_eval_set', 0)} left out as evaluation questions)"
    )
    decided: dict[str, Any] = {}

    def judge(work_dir: Path, candidate, metrics: dict[str, Any]) -> dict[str, Any]:
        report(
            f"comparing v{champion.version} and the candidate on {len(questions)} evaluation "
            f"questions + {len(data.holdout)} held-out feedback questions"
        )
        result, rows = compare_assistants(
            champion_assistant.assistant,
            candidate,
            questions,
            data.holdout,
            gate,
            seed=recipe.seed,
            resamples=recipe.evaluate.bootstrap_resamples,
        )
        decided["gate"] = result
        write_json_atomic(work_dir / "gate.json", result.to_json())
        write_json_atomic(work_dir / "retrain_data.json", data.counts)
        for name, entries in (("learned", data.learned), ("feedback_holdout", data.holdout)):
            write_text_atomic(
                work_dir / f"{name}.jsonl",
                "".join(json.dumps(asdict(e), ensure_ascii=False) + "\n" for e in entries),
            )
        write_text_atomic(
            work_dir / "gate_rows.jsonl",
            "".join(
                json.dumps({"version": who, **r}, ensure_ascii=False) + "\n"
                for who, version_rows in rows.items()
                for r in version_rows
            ),
        )
        return {"gate": {"passed": result.passed, "reason": result.reason}}

    built = build_assistant(
        recipe,
        store=store,
        settings=settings,
        report=report,
        kind="retrain",
        knowledge_base=kb_path,
        eval_set=eval_path,
        extra_chunks=[e.chunk() for e in data.learned],
        before_commit=judge,
    )
    result: GateResult = decided["gate"]
    return conclude_retrain(
        store,
        feature,
        champion=champion,
        candidate_version=built.version,
        gate=result,
        data=data.counts,
        run_id=built.run_id,
        run_dir=built.run_dir,
        actor=actor,
        metric="answer accuracy",
        summary=_summary,
        score_rows=ASSISTANT_SCORE_ROWS,
        gate_recorded=True,
    )


__all__ = [
    "AcceptedAnswer",
    "FEEDBACK_SOURCE",
    "FeedbackAnswers",
    "accepted_answers",
    "compare_assistants",
    "retrain_assistant",
    "states_answer",
]
