"""Drift reports: each computed comparison of live traffic with a version's training data.

One row per ``flywheel drift`` (or ``/metrics`` refresh): the feature, the version
compared, the rows on each side, the alarm, the worst check, and every check as JSON, so
the console can chart drift over time.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "drift_reports",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("feature_id", sa.Integer(), sa.ForeignKey("features.id"), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("window_rows", sa.Integer(), nullable=False),
        sa.Column("reference_rows", sa.Integer(), nullable=False),
        sa.Column("alarm", sa.Boolean(), nullable=False),
        sa.Column("worst_check", sa.String(100), nullable=True),
        sa.Column("worst_value", sa.Float(), nullable=True),
        sa.Column("checks", sa.JSON(), nullable=False),
        sa.Column("computed_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_drift_reports_feature", "drift_reports", ["feature_id", "computed_at"])


def downgrade() -> None:
    op.drop_index("ix_drift_reports_feature", table_name="drift_reports")
    op.drop_table("drift_reports")
