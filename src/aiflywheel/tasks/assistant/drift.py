"""The assistant's side of drift checks and insight mining.

Drift: an assistant version learned from its knowledge base (``assistant/index``) and was
judged on its evaluation set (``evaluation.jsonl`` beside the folder, one row per question
with the answer type and confidence it got). The questions customers are expected to ask
are the evaluation questions and the FAQ questions; the vocabulary is every chunk's text;
the evaluation rows give the reference answer types and confidences. Embeddings come from
the version's own encoder (``assistant.json``'s ``encoder``).

Insights: handoff tickets are the questions handed to a person; those not asking for a
person are questions the knowledge did not cover. A draft answer starts from the closest
passage (BM25 over the version's chunks, no encoder needed), and a reviewer's edited
draft goes to the review queue as a staff answer to the ticket (``answer_ticket``), from
where an accepted answer reaches the knowledge base on the next retrain.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from aiflywheel.core.task import DriftReference, HandoffQuestion
from aiflywheel.errors import DataError


def _chunks(model_path: Path) -> list:
    from aiflywheel.tasks.assistant.knowledge_index import KnowledgeIndex

    return KnowledgeIndex.load(model_path / "index").chunks


def assistant_drift_reference(model_path: str | Path, *, limit: int, seed: int) -> DriftReference:
    model_path = Path(model_path)
    chunks = _chunks(model_path)
    evaluation = model_path.parent / "evaluation.jsonl"
    rows: list[dict[str, Any]] = []
    if evaluation.is_file():
        rows = [
            json.loads(line)
            for line in evaluation.read_text(encoding="utf-8").split("\n")
            if line.strip()
        ]
    questions = [str(r["question"]) for r in rows] + [c.text for c in chunks if c.kind == "faq"]
    if not questions:
        raise DataError(
            f"{model_path} has no FAQ questions and no {evaluation.name}: nothing to compare "
            "live questions with"
        )
    rng = random.Random(seed)
    texts = rng.sample(questions, min(limit, len(questions)))
    return DriftReference(
        texts=texts,
        vocabulary_texts=[c.text for c in chunks] + [c.answer for c in chunks if c.answer],
        heldout_texts=[str(r["question"]) for r in rows],
        heldout_outputs=[
            {"label": r["answer_type"], "confidence": float(r["confidence"])} for r in rows
        ],
        source=f"{model_path / 'index'} ({len(chunks)} chunks) and {evaluation.name} "
        f"({len(rows)} questions)",
    )


def assistant_drift_encoder(model_path: str | Path, settings):
    from aiflywheel.tasks.assistant.build import load_manifest
    from aiflywheel.tasks.assistant.encoders import encoder_from_name

    name = load_manifest(Path(model_path))["encoder"]
    encoder = encoder_from_name(name, settings)
    return name, lambda texts: encoder.encode_queries(list(texts))


def handoffs(feature: str, store) -> list[HandoffQuestion]:
    from aiflywheel.tasks.assistant.policy import PERSON_REASON
    from aiflywheel.tasks.assistant.records import list_tickets

    return [
        HandoffQuestion(
            ref=t.id,
            text=t.question,
            created_at=t.created_at,
            uncovered=t.reason != PERSON_REASON and not t.reason.startswith("prompt injection"),
            open=t.status == "open",
        )
        for t in list_tickets(store, feature, status=None)
    ]


def closest_passage(model_path: str | Path, question: str) -> str | None:
    from aiflywheel.tasks.assistant.knowledge_index import KnowledgeIndex

    index = KnowledgeIndex.load(Path(model_path) / "index")
    hits = index.search(question, 1, mode="bm25")
    if not hits:
        return None
    chunk = hits[0].chunk
    return chunk.answer or chunk.text


def send_ticket_answer(feature: str, ref: int, answer: str, store, actor: str) -> dict[str, Any]:
    from aiflywheel.tasks.assistant.records import answer_ticket

    done = answer_ticket(store, ref, answer, actor=actor, feature=feature)
    return {
        "ticket_id": done.ticket_id,
        "feedback_id": done.feedback_id,
        "review_state": done.review_state,
        "outcome": done.outcome,
    }
