"""The redaction gate: no personal data reaches the store or an export raw.

The gate sits in the column types, so nothing that writes through SQLAlchemy can pass
around it. Every column that may hold what a user sent (a text, a comment, a question,
an answer, a session id, a JSON payload) is declared with a gated type:

``RedactedText`` / ``RedactedString(n)``
    a ``Text`` / ``String`` whose bound values go through :func:`redact_text`.
``RedactedJSON``
    a ``JSON`` whose string values, at any depth, go through :func:`redact_text`
    (keys are the task's field names and labels, not user text, and stay).

SQLAlchemy runs a type's ``process_bind_param`` on every value bound to the column: an
ORM ``session.add``, a Core ``insert(...)`` with many rows, an ``update``, and the right
side of a comparison (``where(Turn.session_id == sid)`` looks up the redacted id, so
lookups still find what was stored). Only raw SQL strings bypass it, and the code base
writes none. On top of that, setting a gated attribute on an ORM object redacts the value
in memory too (an ORM ``set`` listener), so what a write method returns is what was
stored. Exports (``flywheel feedback export``) call :func:`redact_text` again on what
they read, which also covers rows stored before the gate existed.

:data:`UNGATED` names every text-like column left ungated, each with why; the test
``tests/test_pii_everywhere.py`` fails when a ``String``/``Text``/``JSON`` column of any
table is neither gated nor listed there, so a new column must choose.

Redaction is :func:`aiflywheel.data.pii.scrub` in ``redact`` mode over every PII type,
whatever a feature's recipe says (a recipe's ``pii`` section shapes the training view of
a text, e.g. ``mask``; a masked value is not PII any more and passes the gate as it is).
Detection normalizes first (format and bidi characters, full-width digits; see
:func:`aiflywheel.data.pii.normalized_views`).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, String, Text, event
from sqlalchemy.orm import Mapper
from sqlalchemy.types import TypeDecorator

from aiflywheel.data.pii import scrub

__all__ = [
    "UNGATED",
    "RedactedJSON",
    "RedactedString",
    "RedactedText",
    "is_gated",
    "redact_json",
    "redact_text",
]


def redact_text(value: str) -> str:
    """``value`` with every PII match replaced by its typed placeholder (``<PHONE>``)."""
    return scrub(value, mode="redact")[0] if value else value


def redact_json(value: Any) -> Any:
    """A copy of the JSON ``value`` with :func:`redact_text` applied to every string."""
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {key: redact_json(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [redact_json(item) for item in value]
    return value


class _Gate:
    """What the gated types share: how a value is redacted."""

    redact: Any  # a function of one value

    def process_bind_param(self, value: Any, dialect: Any) -> Any:
        return None if value is None else self.redact(value)


class RedactedText(_Gate, TypeDecorator):
    """``Text`` whose values are redacted before they are written (or compared)."""

    impl = Text
    cache_ok = True
    redact = staticmethod(lambda value: redact_text(value) if isinstance(value, str) else value)


class RedactedString(_Gate, TypeDecorator):
    """``String(n)`` whose values are redacted before they are written (or compared); a
    placeholder longer than what it replaced is cut at ``n`` (Postgres refuses more)."""

    impl = String
    cache_ok = True

    def redact(self, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        redacted = redact_text(value)
        length = getattr(self.impl, "length", None)
        return redacted[:length] if length else redacted


class RedactedJSON(_Gate, TypeDecorator):
    """``JSON`` whose string values are redacted before they are written."""

    impl = JSON
    cache_ok = True
    redact = staticmethod(redact_json)


GATED_TYPES = (RedactedText, RedactedString, RedactedJSON)

# Text-like columns that are not gated: none of them is written from what a user sends.
UNGATED: dict[str, str] = {
    "features.name": "the feature's name, from the operator's recipe",
    "features.task": "a task name from the registry",
    "features.description": "the operator's recipe",
    "features.recipe": "the operator's recipe",
    "dataset_versions.content_hash": "a SHA-256",
    "dataset_versions.split_version": "a SHA-256",
    "dataset_versions.labels": "label counts of the cleaned dataset",
    "dataset_versions.source": "the operator's data path",
    "dataset_versions.path": "a path under the runs directory",
    "runs.id": "a generated id",
    "runs.kind": "a stage name",
    "runs.status": "a run state",
    "runs.run_dir": "a path under the runs directory",
    "runs.code_version": "a version string",
    "model_versions.status": "a model state",
    "model_versions.run_id": "a generated id",
    "model_versions.model_path": "a path under the runs directory",
    "model_versions.base_model": "a model name from the recipe",
    "model_versions.method": "a training method name",
    "model_versions.metrics": "figures computed on the frozen test split",
    "model_versions.recipe": "the operator's recipe",
    "model_versions.code_version": "a version string",
    "api_keys.key_id": "a generated id",
    "api_keys.secret_hash": "a SHA-256",
    "api_keys.role": "client, admin, reviewer or viewer",
    "api_keys.name": "the operator's name for the key",
    "predictions.id": "a generated id",
    "feedback.prediction_id": "a generated id",
    "feedback.idempotency_key": "an opaque retry token, compared exactly",
    "feedback.idempotency_scope": "the id of the API key that sent the feedback",
    "feedback.review_state": "a review state",
    "feedback.reviewer": "the reviewer's name (operator or API key name)",
    "shadow_predictions.prediction_id": "a generated id",
    "shadow_predictions.label": "a label of the model",
    "shadow_predictions.probabilities": "label -> probability",
    "audit_events.action": "an action name",
    "audit_events.actor": "the operator's or API key's name",
    "audit_events.decision": "a decision name",
    "assistant_turns.prediction_id": "a generated id",
    "assistant_turns.kind": "an answer kind",
    "tickets.prediction_id": "a generated id",
    "tickets.status": "a ticket state",
    "kb_entries.entry_id": "the id of a knowledge-base entry (generated or the operator's)",
    "kb_entries.category": "a category of the knowledge base",
    "kb_entries.language": "a language code",
    "kb_entries.actor": "the reviewer's name",
    "drift_reports.worst_check": "the name of a drift check",
}


def is_gated(column_type: Any) -> bool:
    """True when values written through a column of this type pass the gate."""
    return isinstance(column_type, GATED_TYPES)


@event.listens_for(Mapper, "mapper_configured")
def _gate_attributes(mapper: Mapper, class_: type) -> None:
    """Setting a gated attribute on an ORM object redacts the value in memory as well."""
    for prop in mapper.column_attrs:
        gated = [column.type for column in prop.columns if is_gated(getattr(column, "type", None))]
        if gated:
            redact = gated[0].redact
            event.listen(
                getattr(class_, prop.key),
                "set",
                lambda _target, value, _old, _initiator, redact=redact: (
                    None if value is None else redact(value)
                ),
                retval=True,
            )
