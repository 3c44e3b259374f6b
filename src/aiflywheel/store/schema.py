"""The tables: ORM classes of every table the shared loop owns (tasks add their own on
``Base``, e.g. ``tasks/assistant/records.py``)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Literal

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from aiflywheel.store.redaction import RedactedJSON, RedactedText


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, datetime: DateTime(timezone=True)}


class Feature(Base):
    """An AI feature declared by a recipe."""

    __tablename__ = "features"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    task: Mapped[str] = mapped_column(String(64))
    description: Mapped[str] = mapped_column(Text, default="")
    recipe: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class DatasetVersion(Base):
    """A cleaned dataset (content hash) with one split of it (split version)."""

    __tablename__ = "dataset_versions"
    __table_args__ = (UniqueConstraint("feature_id", "content_hash", "split_version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    feature_id: Mapped[int] = mapped_column(ForeignKey("features.id"), index=True)
    content_hash: Mapped[str] = mapped_column(String(64))
    split_version: Mapped[str] = mapped_column(String(64))
    rows: Mapped[int] = mapped_column(Integer)
    labels: Mapped[dict[str, Any]] = mapped_column(JSON)
    source: Mapped[str] = mapped_column(Text)
    path: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Run(Base):
    """One execution of a stage (data check, training, ...) and where its files are."""

    __tablename__ = "runs"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    feature_id: Mapped[int] = mapped_column(ForeignKey("features.id"), index=True)
    kind: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16))
    run_dir: Mapped[str] = mapped_column(Text)
    dataset_version_id: Mapped[int | None] = mapped_column(
        ForeignKey("dataset_versions.id"), nullable=True
    )
    summary: Mapped[dict[str, Any]] = mapped_column(RedactedJSON, default=dict)
    error: Mapped[str | None] = mapped_column(RedactedText, nullable=True)
    code_version: Mapped[str] = mapped_column(String(64))
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(nullable=True)


class ModelVersion(Base):
    """A trained and evaluated model of a feature: candidate, champion or archived."""

    __tablename__ = "model_versions"
    __table_args__ = (UniqueConstraint("feature_id", "version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    feature_id: Mapped[int] = mapped_column(ForeignKey("features.id"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))
    run_id: Mapped[str | None] = mapped_column(ForeignKey("runs.id"), nullable=True)
    dataset_version_id: Mapped[int | None] = mapped_column(
        ForeignKey("dataset_versions.id"), nullable=True
    )
    model_path: Mapped[str] = mapped_column(Text)
    base_model: Mapped[str] = mapped_column(String(200))
    method: Mapped[str] = mapped_column(String(32))
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON)
    recipe: Mapped[dict[str, Any]] = mapped_column(JSON)
    code_version: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


MODEL_STATUSES = ("candidate", "champion", "archived", "rejected")
# client: the API (classify, feedback); admin: everything; reviewer and viewer sign in to
# the console (review feedback / read only).
API_KEY_ROLES = ("client", "admin", "reviewer", "viewer")
REVIEW_STATES = ("pending", "accepted", "rejected")
THUMBS = ("up", "down")
CORRECTION_PREFIX = "corrected_"  # payload keys that correct the prediction
FeedbackOutcome = Literal["created", "updated", "repeated"]


class ApiKey(Base):
    """An API key: only a SHA-256 of its secret is stored; the key itself is shown once."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key_id: Mapped[str] = mapped_column(String(16), unique=True)
    secret_hash: Mapped[str] = mapped_column(String(64))
    role: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(100), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(nullable=True)


class PredictionLog(Base):
    """One served prediction: the input after PII redaction, the output, the latency."""

    __tablename__ = "predictions"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    feature_id: Mapped[int] = mapped_column(ForeignKey("features.id"))
    version: Mapped[int] = mapped_column(Integer)
    text: Mapped[str] = mapped_column(RedactedText)
    output: Mapped[dict[str, Any]] = mapped_column(RedactedJSON)
    latency_ms: Mapped[float] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    @property
    def label(self) -> str:
        """What was predicted, in one word: a classifier's label, an answer's kind."""
        return str(self.output.get("label", ""))

    @property
    def probabilities(self) -> dict[str, float]:
        """A classifier's probability per label ({} for outputs without them)."""
        return dict(self.output.get("probabilities") or {})


class PayloadFields:
    """The feedback answers every task knows, read from ``payload`` (None when absent)."""

    payload: Any  # a JSON column on the class that mixes this in

    @property
    def corrected_label(self) -> str | None:
        return self.payload.get("corrected_label")

    @property
    def corrected_answer(self) -> str | None:
        return self.payload.get("corrected_answer")

    @property
    def thumb(self) -> str | None:
        return self.payload.get("thumb")

    @property
    def comment(self) -> str | None:
        return self.payload.get("comment")

    @property
    def correction(self) -> dict[str, Any]:
        """The payload's corrections (keys ``corrected_*``): a prediction holds one."""
        return correction_of(self.payload)


def correction_of(payload: dict[str, Any]) -> dict[str, Any]:
    """The corrections in a feedback payload: its ``corrected_*`` keys that are set."""
    return {
        key: value
        for key, value in payload.items()
        if key.startswith(CORRECTION_PREFIX) and value is not None
    }


class Feedback(PayloadFields, Base):
    """A user's answer to a prediction (``payload``: JSON the feature's task validates,
    e.g. ``{"corrected_label": ...}``, ``{"thumb": "up", "comment": ...}``), and its review
    state (pending/accepted/rejected)."""

    __tablename__ = "feedback"
    __table_args__ = (
        UniqueConstraint("idempotency_scope", "idempotency_key", name="uq_feedback_idempotency"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    prediction_id: Mapped[str] = mapped_column(ForeignKey("predictions.id"), index=True)
    feature_id: Mapped[int] = mapped_column(ForeignKey("features.id"))
    idempotency_key: Mapped[str | None] = mapped_column(String(200), nullable=True)
    # Whose retry token it is: the sending API key's id ("-" without auth or before 0006).
    idempotency_scope: Mapped[str | None] = mapped_column(String(32), nullable=True)
    payload: Mapped[dict[str, Any]] = mapped_column(RedactedJSON)
    review_state: Mapped[str] = mapped_column(String(16), default="pending")
    reviewer: Mapped[str | None] = mapped_column(String(100), nullable=True)
    reviewed_at: Mapped[datetime | None] = mapped_column(nullable=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ShadowPrediction(Base):
    """A candidate's answer to live traffic, scored in the background next to the champion."""

    __tablename__ = "shadow_predictions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    prediction_id: Mapped[str] = mapped_column(ForeignKey("predictions.id"))
    feature_id: Mapped[int] = mapped_column(ForeignKey("features.id"))
    version: Mapped[int] = mapped_column(Integer)
    label: Mapped[str] = mapped_column(String(200))
    probabilities: Mapped[dict[str, Any]] = mapped_column(JSON)
    agrees: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class AuditEvent(Base):
    """A decision about which version serves: who, when, from/to, why, with the figures."""

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    feature_id: Mapped[int] = mapped_column(ForeignKey("features.id"), index=True)
    action: Mapped[str] = mapped_column(String(32))
    actor: Mapped[str] = mapped_column(String(100))
    from_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    to_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    decision: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(RedactedText)
    details: Mapped[dict[str, Any]] = mapped_column(RedactedJSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    def to_json(self, feature: str | None = None) -> dict[str, Any]:
        """The event as JSON (the CLI's ``audit --json`` and the API)."""
        out: dict[str, Any] = {"id": self.id}
        if feature is not None:
            out["feature"] = feature
        out.update(
            action=self.action,
            actor=self.actor,
            from_version=self.from_version,
            to_version=self.to_version,
            decision=self.decision,
            reason=self.reason,
            details=self.details,
            created_at=self.created_at.isoformat(timespec="seconds"),
        )
        return out
