"""A generic store: a prediction's output and a feedback's answer as JSON the task defines.

``predictions.label`` and ``predictions.probabilities`` become ``predictions.output``
(a classifier: ``{"label", "probabilities"}``; an assistant's turn: ``{"label": kind,
"confidence", "answer", "handoff"}``), and ``feedback.corrected_label``, ``thumb``,
``comment``, ``corrected_answer`` become ``feedback.payload`` (only the keys given). Every
row is carried over; the downgrade puts the columns back from the JSON.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

CHUNK = 1000
ANSWER_CHARS = 500  # the answer summary kept in a turn's output (the turn keeps it whole)
FEEDBACK_KEYS = ("corrected_label", "thumb", "comment", "corrected_answer")

predictions = sa.table(
    "predictions",
    sa.column("id", sa.String),
    sa.column("label", sa.String),
    sa.column("probabilities", sa.JSON),
    sa.column("output", sa.JSON),
)
feedback = sa.table(
    "feedback",
    sa.column("id", sa.Integer),
    sa.column("corrected_label", sa.String),
    sa.column("thumb", sa.String),
    sa.column("comment", sa.Text),
    sa.column("corrected_answer", sa.Text),
    sa.column("payload", sa.JSON),
)
turns = sa.table(
    "assistant_turns",
    sa.column("prediction_id", sa.String),
    sa.column("answer", sa.Text),
    sa.column("handoff", sa.Boolean),
)


def _chunks(query) -> Any:
    """Rows of ``query`` (ordered by id) in chunks, without holding a cursor open while
    the caller writes (SQLite would see a table change under its read)."""
    bind = op.get_bind()
    last = None
    while True:
        page = query if last is None else query.where(query.selected_columns[0] > last)
        rows = bind.execute(page.limit(CHUNK)).all()
        if not rows:
            return
        yield rows
        last = rows[-1][0]


def _prediction_output(label: str, probabilities: Any, answer: str | None, handoff: Any) -> dict:
    probabilities = probabilities or {}
    if answer is None:  # a classification
        return {"label": label, "probabilities": probabilities}
    out: dict[str, Any] = {"label": label}  # an assistant's turn: the label is the answer kind
    if "confidence" in probabilities:
        out["confidence"] = probabilities["confidence"]
    out["answer"] = answer[:ANSWER_CHARS]
    out["handoff"] = bool(handoff)
    return out


def upgrade() -> None:
    with op.batch_alter_table("predictions") as batch:
        batch.add_column(sa.Column("output", sa.JSON(), nullable=True))
    with op.batch_alter_table("feedback") as batch:
        batch.add_column(sa.Column("payload", sa.JSON(), nullable=True))

    bind = op.get_bind()
    query = (
        sa.select(
            predictions.c.id,
            predictions.c.label,
            predictions.c.probabilities,
            turns.c.answer,
            turns.c.handoff,
        )
        .select_from(predictions.outerjoin(turns, turns.c.prediction_id == predictions.c.id))
        .order_by(predictions.c.id)
    )
    for rows in _chunks(query):
        bind.execute(
            predictions.update()
            .where(predictions.c.id == sa.bindparam("pid"))
            .values(output=sa.bindparam("new_output")),
            [
                {"pid": pid, "new_output": _prediction_output(label, proba, answer, handoff)}
                for pid, label, proba, answer, handoff in rows
            ],
        )
    query = sa.select(feedback.c.id, *(feedback.c[key] for key in FEEDBACK_KEYS)).order_by(
        feedback.c.id
    )
    for rows in _chunks(query):
        bind.execute(
            feedback.update()
            .where(feedback.c.id == sa.bindparam("fid"))
            .values(payload=sa.bindparam("new_payload")),
            [
                {
                    "fid": row[0],
                    "new_payload": {
                        key: value
                        for key, value in zip(FEEDBACK_KEYS, row[1:], strict=True)
                        if value is not None
                    },
                }
                for row in rows
            ],
        )

    with op.batch_alter_table("predictions") as batch:
        batch.alter_column("output", existing_type=sa.JSON(), nullable=False)
        batch.drop_column("label")
        batch.drop_column("probabilities")
    with op.batch_alter_table("feedback") as batch:
        batch.alter_column("payload", existing_type=sa.JSON(), nullable=False)
        for key in FEEDBACK_KEYS:
            batch.drop_column(key)


def downgrade() -> None:
    with op.batch_alter_table("predictions") as batch:
        batch.add_column(sa.Column("label", sa.String(200), nullable=True))
        batch.add_column(sa.Column("probabilities", sa.JSON(), nullable=True))
    with op.batch_alter_table("feedback") as batch:
        batch.add_column(sa.Column("corrected_label", sa.String(200), nullable=True))
        batch.add_column(sa.Column("thumb", sa.String(8), nullable=True))
        batch.add_column(sa.Column("comment", sa.Text(), nullable=True))
        batch.add_column(sa.Column("corrected_answer", sa.Text(), nullable=True))

    bind = op.get_bind()
    query = sa.select(predictions.c.id, predictions.c.output).order_by(predictions.c.id)
    for rows in _chunks(query):
        values = []
        for pid, output in rows:
            output = output or {}
            proba = output.get("probabilities")
            if proba is None:
                proba = {"confidence": output["confidence"]} if "confidence" in output else {}
            values.append({"pid": pid, "old_label": str(output.get("label", "")), "proba": proba})
        bind.execute(
            predictions.update()
            .where(predictions.c.id == sa.bindparam("pid"))
            .values(label=sa.bindparam("old_label"), probabilities=sa.bindparam("proba")),
            values,
        )
    query = sa.select(feedback.c.id, feedback.c.payload).order_by(feedback.c.id)
    for rows in _chunks(query):
        bind.execute(
            feedback.update()
            .where(feedback.c.id == sa.bindparam("fid"))
            .values(**{key: sa.bindparam(f"old_{key}") for key in FEEDBACK_KEYS}),
            [
                {"fid": fid, **{f"old_{key}": (payload or {}).get(key) for key in FEEDBACK_KEYS}}
                for fid, payload in rows
            ],
        )

    with op.batch_alter_table("predictions") as batch:
        batch.alter_column("label", existing_type=sa.String(200), nullable=False)
        batch.alter_column("probabilities", existing_type=sa.JSON(), nullable=False)
        batch.drop_column("output")
    with op.batch_alter_table("feedback") as batch:
        batch.drop_column("payload")
