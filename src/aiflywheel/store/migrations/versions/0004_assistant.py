"""The assistant: conversation turns, handoff tickets, knowledge-base entries added live,
and corrected answers in feedback.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "assistant_turns",
        sa.Column(
            "prediction_id", sa.String(32), sa.ForeignKey("predictions.id"), primary_key=True
        ),
        sa.Column("feature_id", sa.Integer(), sa.ForeignKey("features.id"), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("session_id", sa.String(100), nullable=False),
        sa.Column("question", sa.Text(), nullable=False),
        sa.Column("answer", sa.Text(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("handoff", sa.Boolean(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index(
        "ix_assistant_turns_session", "assistant_turns", ["feature_id", "session_id", "created_at"]
    )
    op.create_table(
        "tickets",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("feature_id", sa.Integer(), sa.ForeignKey("features.id"), nullable=False),
        sa.Column("prediction_id", sa.String(32), sa.ForeignKey("predictions.id"), nullable=False),
        sa.Column("session_id", sa.String(100), nullable=False),
        sa.Column("question", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_tickets_feature_status", "tickets", ["feature_id", "status"])
    op.create_table(
        "kb_entries",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("feature_id", sa.Integer(), sa.ForeignKey("features.id"), nullable=False),
        sa.Column("entry_id", sa.String(64), nullable=False),
        sa.Column("question", sa.Text(), nullable=False),
        sa.Column("answer", sa.Text(), nullable=False),
        sa.Column("category", sa.String(100), nullable=False),
        sa.Column("language", sa.String(16), nullable=False),
        sa.Column("feedback_id", sa.Integer(), sa.ForeignKey("feedback.id"), nullable=True),
        sa.Column("actor", sa.String(100), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_kb_entries_feature", "kb_entries", ["feature_id"])
    with op.batch_alter_table("feedback") as batch:
        batch.add_column(sa.Column("corrected_answer", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("feedback") as batch:
        batch.drop_column("corrected_answer")
    op.drop_index("ix_kb_entries_feature", table_name="kb_entries")
    op.drop_table("kb_entries")
    op.drop_index("ix_tickets_feature_status", table_name="tickets")
    op.drop_table("tickets")
    op.drop_index("ix_assistant_turns_session", table_name="assistant_turns")
    op.drop_table("assistant_turns")
