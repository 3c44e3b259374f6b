"""What serving records: the prediction log, shadow predictions, feedback."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Integer, func, insert, select

from aiflywheel.errors import ConflictError, NotFoundError
from aiflywheel.store.base import StoreBase
from aiflywheel.store.redaction import redact_json
from aiflywheel.store.schema import (
    REVIEW_STATES,
    THUMBS,
    Feature,
    Feedback,
    FeedbackOutcome,
    PayloadFields,
    PredictionLog,
    ShadowPrediction,
    correction_of,
    utcnow,
)


@dataclass(frozen=True)
class FeedbackItem(PayloadFields):
    """A feedback row joined with the prediction it answers (what reviewers look at).

    ``payload`` is the feedback as its task validated it, ``output`` what the prediction
    answered; ``corrected_label``, ``corrected_answer``, ``thumb``, ``comment`` read the
    payload and ``predicted`` the output's label.
    """

    id: int
    prediction_id: str
    feature: str
    version: int
    text: str
    output: dict[str, Any]
    payload: dict[str, Any]
    review_state: str
    reviewer: str | None
    created_at: datetime

    @property
    def predicted(self) -> str:
        return str(self.output.get("label", ""))

    @property
    def label(self) -> str | None:
        """The label this item teaches when accepted: the correction, or the prediction on a
        thumbs up (a thumbs down without a correction teaches nothing)."""
        if self.corrected_label:
            return self.corrected_label
        return self.predicted if self.thumb == "up" else None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "prediction_id": self.prediction_id,
            "feature": self.feature,
            "version": self.version,
            "text": self.text,
            "predicted": self.predicted,
            "corrected_label": self.corrected_label,
            "thumb": self.thumb,
            "comment": self.comment,
            "corrected_answer": self.corrected_answer,
            "payload": dict(self.payload),
            "output": dict(self.output),
            "review_state": self.review_state,
            "reviewer": self.reviewer,
            "created_at": self.created_at.isoformat(timespec="seconds"),
        }


def prediction_output(row: Mapping[str, Any]) -> dict[str, Any]:
    """The ``output`` of a prediction-log row (a classification may give ``label`` and
    ``probabilities`` instead)."""
    output = row.get("output")
    if output is not None:
        return dict(output)
    return {"label": row["label"], "probabilities": row["probabilities"]}


def _insert_new(session: Any, table: type) -> Any:
    """INSERT that skips rows whose primary key exists (SQLite, Postgres; plain elsewhere)."""
    dialect = session.get_bind().dialect.name
    if dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as dialect_insert
    elif dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as dialect_insert
    else:
        return insert(table)
    return dialect_insert(table).on_conflict_do_nothing(index_elements=["id"])


class ServingStore(StoreBase):
    def log_predictions(self, rows: Sequence[dict[str, Any]]) -> None:
        """Insert served predictions in one transaction.

        Each row: ``id, feature, version, text, output, latency_ms, created_at`` (``output``
        the task's prediction payload; a row with ``label`` and ``probabilities`` instead
        is a classification). Feature names are resolved to ids here. A row whose id is
        stored already is skipped (on SQLite and Postgres): a batch retried after a commit
        that did land, but could not be confirmed, is stored once.
        """
        if not rows:
            return
        with self.session() as session:
            ids = self._feature_ids(session, {row["feature"] for row in rows})
            session.execute(
                _insert_new(session, PredictionLog),
                [
                    {
                        "id": row["id"],
                        "feature_id": ids[row["feature"]],
                        "version": row["version"],
                        "text": row["text"],
                        "output": prediction_output(row),
                        "latency_ms": row["latency_ms"],
                        "created_at": row.get("created_at") or utcnow(),
                    }
                    for row in rows
                ],
            )

    def get_prediction(self, prediction_id: str) -> tuple[PredictionLog, str] | None:
        """A logged prediction and its feature name, or None."""
        with self.session() as session:
            found = session.execute(
                select(PredictionLog, Feature.name)
                .join(Feature, PredictionLog.feature_id == Feature.id)
                .where(PredictionLog.id == prediction_id)
            ).first()
            return None if found is None else (found[0], found[1])

    def count_predictions(self, feature: str | None = None) -> int:
        with self.session() as session:
            query = select(func.count()).select_from(PredictionLog)
            if feature is not None:
                query = query.where(PredictionLog.feature_id == self._feature_id(session, feature))
            return int(session.scalar(query) or 0)

    def log_shadow_predictions(self, rows: Sequence[dict[str, Any]]) -> None:
        """Insert a candidate's shadow answers (``prediction_id, feature, version, label,
        probabilities, agrees``)."""
        if not rows:
            return
        with self.session() as session:
            ids = self._feature_ids(session, {row["feature"] for row in rows})
            session.execute(
                insert(ShadowPrediction),
                [
                    {
                        "prediction_id": row["prediction_id"],
                        "feature_id": ids[row["feature"]],
                        "version": row["version"],
                        "label": row["label"],
                        "probabilities": row["probabilities"],
                        "agrees": row["agrees"],
                        "created_at": row.get("created_at") or utcnow(),
                    }
                    for row in rows
                ],
            )

    def shadow_agreement(self, feature: str) -> dict[int, dict[str, float]]:
        """Per shadowed version: how many live predictions it scored and the share it agreed."""
        with self.session() as session:
            feature_id = self._feature_id(session, feature)
            query = (
                select(
                    ShadowPrediction.version,
                    func.count(),
                    func.sum(ShadowPrediction.agrees.cast(Integer)),
                )
                .where(ShadowPrediction.feature_id == feature_id)
                .group_by(ShadowPrediction.version)
            )
            return {
                version: {"scored": n, "agreement": (agreed or 0) / n if n else 0.0}
                for version, n, agreed in session.execute(query)
            }

    # -- feedback ------------------------------------------------------------------
    def add_feedback(
        self,
        prediction_id: str,
        *,
        corrected_label: str | None = None,
        thumb: str | None = None,
        comment: str | None = None,
        corrected_answer: str | None = None,
        idempotency_key: str | None = None,
        idempotency_scope: str = "-",
        payload: Mapping[str, Any] | None = None,
    ) -> tuple[Feedback, FeedbackOutcome]:
        """Store feedback on a logged prediction; returns (row, outcome).

        The answer is ``payload`` (JSON its task validated, e.g. at ``POST /v1/feedback``)
        merged with the keyword answers that are set; keys left None are not stored.
        ``"created"``: a new pending item. ``"updated"``: a prediction has one correction
        (a ``corrected_*`` key, e.g. ``corrected_label`` or ``corrected_answer``): a second
        one replaces the answer of the pending item that holds the first (same row, new
        timestamp); when that item was already reviewed, ``ConflictError`` names it.
        ``"repeated"``: with an ``idempotency_key`` seen before in ``idempotency_scope`` (the
        id of the API key that sends it: one key's retry token never finds another key's
        row), the stored row comes back unchanged when the payload is the same
        (``ConflictError`` when not).

        The payload passes the redaction gate (``store/redaction.py``) before it is
        compared or stored, so a retry of a payload with PII matches the stored row.
        """
        given = {
            "corrected_label": corrected_label,
            "thumb": thumb,
            "comment": comment,
            "corrected_answer": corrected_answer,
        }
        merged = {**(payload or {}), **{k: v for k, v in given.items() if v is not None}}
        answer = redact_json({key: value for key, value in merged.items() if value is not None})
        if answer.get("thumb") is not None and answer["thumb"] not in THUMBS:
            raise ConflictError(f"thumb must be 'up' or 'down', got {answer['thumb']!r}")
        with self.session() as session:
            if idempotency_key is not None:
                existing = session.scalar(
                    select(Feedback).where(
                        Feedback.idempotency_scope == idempotency_scope,
                        Feedback.idempotency_key == idempotency_key,
                    )
                )
                if existing is not None:
                    if existing.prediction_id != prediction_id or existing.payload != answer:
                        raise ConflictError(
                            f"idempotency key {idempotency_key!r} was already used for "
                            "different feedback"
                        )
                    return existing, "repeated"
            feature_id = session.scalar(
                select(PredictionLog.feature_id).where(PredictionLog.id == prediction_id)
            )
            if feature_id is None:
                raise NotFoundError(f"no prediction with id {prediction_id!r}")
            if correction_of(answer):
                earlier = next(
                    (
                        row
                        for row in session.scalars(
                            select(Feedback)
                            .where(Feedback.prediction_id == prediction_id)
                            .order_by(Feedback.id.desc())
                        )
                        if row.correction
                    ),
                    None,
                )
                if earlier is not None and earlier.review_state != "pending":
                    raise ConflictError(
                        f"prediction {prediction_id!r} already has a correction, feedback "
                        f"{earlier.id}, reviewed ({earlier.review_state}); a new correction "
                        "cannot replace it"
                    )
                if earlier is not None:
                    earlier.payload = answer
                    if idempotency_key is not None:
                        earlier.idempotency_key = idempotency_key
                        earlier.idempotency_scope = idempotency_scope
                    earlier.created_at = utcnow()
                    session.flush()
                    return earlier, "updated"
            row = Feedback(
                prediction_id=prediction_id,
                feature_id=feature_id,
                idempotency_key=idempotency_key,
                idempotency_scope=idempotency_scope if idempotency_key is not None else None,
                payload=answer,
                review_state="pending",
            )
            session.add(row)
            session.flush()
            return row, "created"

    def list_feedback(
        self,
        feature: str,
        *,
        state: str | None = None,
        ids: Sequence[int] | None = None,
        limit: int | None = None,
    ) -> list[FeedbackItem]:
        """Feedback of ``feature`` with the predictions it answers, oldest first."""
        if state is not None and state not in REVIEW_STATES:
            raise ConflictError(
                f"review state must be one of {', '.join(REVIEW_STATES)}, got {state!r}"
            )
        with self.session() as session:
            feature_id = self._feature_id(session, feature)
            query = (
                select(Feedback, PredictionLog)
                .join(PredictionLog, Feedback.prediction_id == PredictionLog.id)
                .where(Feedback.feature_id == feature_id)
                .order_by(Feedback.id)
            )
            if state is not None:
                query = query.where(Feedback.review_state == state)
            if ids is not None:
                query = query.where(Feedback.id.in_(list(ids)))
            if limit is not None:
                query = query.limit(limit)
            return [
                FeedbackItem(
                    id=fb.id,
                    prediction_id=fb.prediction_id,
                    feature=feature,
                    version=pred.version,
                    text=pred.text,
                    output=dict(pred.output),
                    payload=dict(fb.payload),
                    review_state=fb.review_state,
                    reviewer=fb.reviewer,
                    created_at=fb.created_at,
                )
                for fb, pred in session.execute(query)
            ]

    def review_feedback(
        self,
        feature: str,
        decisions: Sequence[tuple[int, str, str | None]],
        *,
        reviewer: str,
    ) -> int:
        """Apply ``(feedback id, state, corrected label or None to keep)`` decisions at once.

        All or nothing: an unknown id or state changes nothing. Returns how many changed.
        """
        with self.session() as session:
            feature_id = self._feature_id(session, feature)
            wanted = {fid for fid, _, _ in decisions}
            rows = {
                row.id: row
                for row in session.scalars(
                    select(Feedback).where(
                        Feedback.feature_id == feature_id, Feedback.id.in_(list(wanted))
                    )
                )
            }
            missing = sorted(wanted - set(rows))
            if missing:
                shown = ", ".join(map(str, missing[:10]))
                raise NotFoundError(f"feature {feature!r} has no feedback with id(s) {shown}")
            now = utcnow()
            for fid, state, label in decisions:
                if state not in REVIEW_STATES:
                    raise ConflictError(
                        f"review state must be one of {', '.join(REVIEW_STATES)}, got {state!r}"
                    )
                row = rows[fid]
                row.review_state, row.reviewer, row.reviewed_at = state, reviewer, now
                if label is not None:
                    row.payload = {**row.payload, "corrected_label": label}
            session.flush()
            return len(decisions)

    def feedback_counts(self, feature: str | None = None) -> dict[str, int]:
        """Feedback rows per review state (all features, or one)."""
        with self.session() as session:
            query = select(Feedback.review_state, func.count()).group_by(Feedback.review_state)
            if feature is not None:
                query = query.where(Feedback.feature_id == self._feature_id(session, feature))
            counts = {state: 0 for state in REVIEW_STATES}
            counts.update({state: int(n) for state, n in session.execute(query)})
            return counts
