"""What the assistant stores: conversation turns, handoff tickets, live knowledge-base entries.

Every answer is also a row of the prediction log (``predictions``: the question as text,
``output`` an ``AnswerOutput``: the answer's kind as label, its confidence, the start of the
answer), so ``POST /v1/feedback`` and ``flywheel feedback`` work on
assistant answers as on classifications. The turn itself (answer, citations, session)
lives in ``assistant_turns``; a handoff opens a ``tickets`` row; ``kb_entries`` holds the
FAQ entries reviewers add while the assistant runs (``flywheel kb add``), which every
load of the assistant merges into its index.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, ForeignKey, Integer, String, select
from sqlalchemy.orm import Mapped, mapped_column

from aiflywheel.errors import DataError, NotFoundError
from aiflywheel.store import Base, Feedback, PredictionLog, Store, utcnow
from aiflywheel.store.redaction import RedactedJSON, RedactedString, RedactedText
from aiflywheel.tasks.assistant.task import ANSWER_SUMMARY_CHARS, AnswerOutput


class AssistantTurn(Base):
    """One question and the assistant's answer, in a session."""

    __tablename__ = "assistant_turns"

    prediction_id: Mapped[str] = mapped_column(ForeignKey("predictions.id"), primary_key=True)
    feature_id: Mapped[int] = mapped_column(ForeignKey("features.id"))
    version: Mapped[int] = mapped_column(Integer)
    session_id: Mapped[str] = mapped_column(RedactedString(100))
    question: Mapped[str] = mapped_column(RedactedText)
    answer: Mapped[str] = mapped_column(RedactedText)
    kind: Mapped[str] = mapped_column(String(16))
    handoff: Mapped[bool] = mapped_column(Boolean)
    reason: Mapped[str | None] = mapped_column(RedactedText, nullable=True)
    details: Mapped[dict[str, Any]] = mapped_column(RedactedJSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Ticket(Base):
    """A handoff to a person: the question the assistant could not or should not answer."""

    __tablename__ = "tickets"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    feature_id: Mapped[int] = mapped_column(ForeignKey("features.id"))
    prediction_id: Mapped[str] = mapped_column(ForeignKey("predictions.id"))
    session_id: Mapped[str] = mapped_column(RedactedString(100))
    question: Mapped[str] = mapped_column(RedactedText)
    reason: Mapped[str] = mapped_column(RedactedText)
    status: Mapped[str] = mapped_column(String(16), default="open")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class KbEntry(Base):
    """A FAQ entry added while the assistant runs (by a reviewer, maybe from feedback)."""

    __tablename__ = "kb_entries"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    feature_id: Mapped[int] = mapped_column(ForeignKey("features.id"))
    entry_id: Mapped[str] = mapped_column(String(64))
    question: Mapped[str] = mapped_column(RedactedText)
    answer: Mapped[str] = mapped_column(RedactedText)
    category: Mapped[str] = mapped_column(String(100), default="")
    language: Mapped[str] = mapped_column(String(16), default="")
    feedback_id: Mapped[int | None] = mapped_column(ForeignKey("feedback.id"), nullable=True)
    actor: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


@dataclass(frozen=True)
class TurnRecord:
    """What ``log_turn`` stores for one answer."""

    prediction_id: str
    feature: str
    version: int
    session_id: str
    question: str
    answer: str
    kind: str
    handoff: bool
    reason: str | None
    confidence: float
    latency_ms: float
    details: dict[str, Any]


def log_turn(store: Store, turn: TurnRecord) -> int | None:
    """Store the answer (prediction log + turn) and, on a handoff, open a ticket; one
    transaction. Returns the ticket id, or None."""
    with store.session() as session:
        feature_id = Store._feature_id(session, turn.feature)
        now = utcnow()
        session.add(
            PredictionLog(
                id=turn.prediction_id,
                feature_id=feature_id,
                version=turn.version,
                text=turn.question,
                output=AnswerOutput(
                    label=turn.kind,
                    confidence=round(float(turn.confidence), 6),
                    answer=turn.answer[:ANSWER_SUMMARY_CHARS],
                    handoff=turn.handoff,
                ).model_dump(),
                latency_ms=turn.latency_ms,
                created_at=now,
            )
        )
        session.flush()
        session.add(
            AssistantTurn(
                prediction_id=turn.prediction_id,
                feature_id=feature_id,
                version=turn.version,
                session_id=turn.session_id,
                question=turn.question,
                answer=turn.answer,
                kind=turn.kind,
                handoff=turn.handoff,
                reason=turn.reason,
                details=turn.details,
                created_at=now,
            )
        )
        if not turn.handoff:
            return None
        ticket = Ticket(
            feature_id=feature_id,
            prediction_id=turn.prediction_id,
            session_id=turn.session_id,
            question=turn.question,
            reason=turn.reason or "handoff",
            status="open",
            created_at=now,
        )
        session.add(ticket)
        session.flush()
        return ticket.id


def session_history(store: Store, feature: str, session_id: str, limit: int = 6) -> list[dict]:
    """The last ``limit`` turns of a session as chat messages (user, assistant), oldest first."""
    with store.session() as session:
        feature_id = Store._feature_id(session, feature)
        rows = session.scalars(
            select(AssistantTurn)
            .where(AssistantTurn.feature_id == feature_id, AssistantTurn.session_id == session_id)
            .order_by(AssistantTurn.created_at.desc())
            .limit(limit)
        ).all()
    messages: list[dict] = []
    for row in reversed(rows):
        messages += [
            {"role": "user", "content": row.question},
            {"role": "assistant", "content": row.answer},
        ]
    return messages


def get_turn(store: Store, prediction_id: str) -> AssistantTurn:
    with store.session() as session:
        row = session.get(AssistantTurn, prediction_id)
    if row is None:
        raise NotFoundError(f"no assistant answer with prediction id {prediction_id!r}")
    return row


def list_tickets(store: Store, feature: str, status: str | None = "open") -> list[Ticket]:
    with store.session() as session:
        feature_id = Store._feature_id(session, feature)
        query = select(Ticket).where(Ticket.feature_id == feature_id).order_by(Ticket.id)
        if status is not None:
            query = query.where(Ticket.status == status)
        return list(session.scalars(query).all())


def get_ticket(store: Store, ticket_id: int, feature: str | None = None) -> tuple[Ticket, str]:
    """(ticket, its feature's name); ``NotFoundError`` when there is none (of ``feature``)."""
    from aiflywheel.store import Feature

    with store.session() as session:
        row = session.get(Ticket, ticket_id)
        name = session.get(Feature, row.feature_id).name if row is not None else None
    if row is None or name is None or (feature is not None and name != feature):
        where = f" of feature {feature!r}" if feature is not None else ""
        raise NotFoundError(
            f"no ticket {ticket_id}{where}; `flywheel tickets list FEATURE` lists them"
        )
    return row, name


@dataclass(frozen=True)
class AnsweredTicket:
    """A ticket a person answered: the answer waits in the review queue as feedback."""

    ticket_id: int
    feature: str
    question: str
    feedback_id: int
    review_state: str
    outcome: str  # created | updated (a second answer replaced a pending one)


def answer_ticket(
    store: Store, ticket_id: int, answer: str, *, actor: str, feature: str | None = None
) -> AnsweredTicket:
    """A person's answer to a handoff ticket: stored as pending feedback on the handed-off
    prediction (``corrected_answer``), so reviewers accept or reject it with every other
    feedback (``flywheel feedback review``), and the ticket is closed (``answered``).

    Answering again while that feedback is pending replaces the answer; once reviewed,
    ``ConflictError`` (from ``Store.add_feedback``) names the reviewed item.
    """
    answer = (answer or "").strip()
    if not answer:
        raise DataError(
            f"ticket {ticket_id}: the answer is empty; give the text the customer should get"
        )
    ticket, name = get_ticket(store, ticket_id, feature)
    row, outcome = store.add_feedback(
        ticket.prediction_id,
        corrected_answer=answer,
        comment=f"staff answer to ticket {ticket_id} by {actor}",
    )
    with store.session() as session:
        stored = session.get(Ticket, ticket_id)
        if stored is not None:
            stored.status = "answered"
    return AnsweredTicket(
        ticket_id=ticket_id,
        feature=name,
        question=ticket.question,
        feedback_id=row.id,
        review_state=row.review_state,
        outcome=outcome,
    )


def add_kb_entry(
    store: Store,
    feature: str,
    *,
    entry_id: str,
    question: str,
    answer: str,
    category: str = "",
    language: str = "",
    actor: str,
    feedback_id: int | None = None,
) -> KbEntry:
    """Record a live knowledge-base entry (and, from feedback, accept that feedback)."""
    with store.session() as session:
        feature_id = Store._feature_id(session, feature)
        row = KbEntry(
            feature_id=feature_id,
            entry_id=entry_id,
            question=question,
            answer=answer,
            category=category,
            language=language,
            feedback_id=feedback_id,
            actor=actor,
        )
        session.add(row)
        if feedback_id is not None:
            feedback = session.get(Feedback, feedback_id)
            if feedback is None or feedback.feature_id != feature_id:
                raise NotFoundError(f"feature {feature!r} has no feedback with id {feedback_id}")
            feedback.review_state = "accepted"
            feedback.reviewer = actor
            feedback.reviewed_at = utcnow()
        session.flush()
        return row


def kb_entries(store: Store, feature: str) -> list[KbEntry]:
    """Live entries of a feature, oldest first (a later entry for the same question wins)."""
    with store.session() as session:
        feature_id = Store._feature_id(session, feature)
        return list(
            session.scalars(
                select(KbEntry).where(KbEntry.feature_id == feature_id).order_by(KbEntry.id)
            ).all()
        )


__all__ = [
    "AnsweredTicket",
    "AssistantTurn",
    "KbEntry",
    "Ticket",
    "TurnRecord",
    "add_kb_entry",
    "answer_ticket",
    "get_ticket",
    "get_turn",
    "kb_entries",
    "list_tickets",
    "log_turn",
    "session_history",
]
