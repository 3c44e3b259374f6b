"""Idempotency keys are scoped per API key: ``feedback.idempotency_scope``.

A retry token is the caller's own: two API keys that happen to send the same
``Idempotency-Key`` store two feedback items, and one key never gets the row another key
stored under it. The column holds the id of the API key that sent the feedback (``-``
when the server runs without auth); the unique constraint moves from
``idempotency_key`` to ``(idempotency_scope, idempotency_key)``.

Rows stored before this revision do not say which key sent them: their scope becomes
``-``, the scope of a server without auth (and of ``Store.add_feedback`` called without
one), so retries there still find them; no API key has that id, so with auth on a key
never gets a row stored before the upgrade (a retry of such a request stores its feedback
again, once). The downgrade puts the unique constraint on ``idempotency_key`` back,
keeping the key on the oldest row of each repeated key.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

LEGACY_SCOPE = "-"
OLD_CONSTRAINT = "uq_feedback_idempotency_key"  # the name SQLite's unnamed one gets here
NEW_CONSTRAINT = "uq_feedback_idempotency"
# Names unnamed constraints when SQLite's batch mode copies the table.
NAMING = {"uq": "uq_%(table_name)s_%(column_0_name)s"}

feedback = sa.table(
    "feedback",
    sa.column("id", sa.Integer),
    sa.column("idempotency_key", sa.String),
    sa.column("idempotency_scope", sa.String),
)


def _key_constraint() -> str:
    """The name of the unique constraint on ``feedback.idempotency_key`` alone (Postgres
    named it ``feedback_idempotency_key_key``; SQLite left it unnamed)."""
    for constraint in sa.inspect(op.get_bind()).get_unique_constraints("feedback"):
        if constraint["column_names"] == ["idempotency_key"] and constraint["name"]:
            return constraint["name"]
    return OLD_CONSTRAINT


def upgrade() -> None:
    old = _key_constraint()
    with op.batch_alter_table("feedback", naming_convention=NAMING) as batch:
        batch.add_column(sa.Column("idempotency_scope", sa.String(32), nullable=True))
        batch.drop_constraint(old, type_="unique")
        batch.create_unique_constraint(NEW_CONSTRAINT, ["idempotency_scope", "idempotency_key"])
    op.get_bind().execute(
        feedback.update()
        .where(feedback.c.idempotency_key.isnot(None))
        .values(idempotency_scope=LEGACY_SCOPE)
    )


def downgrade() -> None:
    bind = op.get_bind()
    first = (
        sa.select(sa.func.min(feedback.c.id))
        .where(feedback.c.idempotency_key.isnot(None))
        .group_by(feedback.c.idempotency_key)
    )
    kept = {row[0] for row in bind.execute(first)}
    repeated = [
        row[0]
        for row in bind.execute(
            sa.select(feedback.c.id).where(feedback.c.idempotency_key.isnot(None))
        )
        if row[0] not in kept
    ]
    if repeated:
        bind.execute(
            feedback.update().where(feedback.c.id.in_(repeated)).values(idempotency_key=None)
        )
    with op.batch_alter_table("feedback", naming_convention=NAMING) as batch:
        batch.drop_constraint(NEW_CONSTRAINT, type_="unique")
        batch.drop_column("idempotency_scope")
        batch.create_unique_constraint(OLD_CONSTRAINT, ["idempotency_key"])
