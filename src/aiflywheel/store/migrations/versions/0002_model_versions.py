"""Model versions: a trained, evaluated model registered for a feature.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "model_versions",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("feature_id", sa.Integer(), sa.ForeignKey("features.id"), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("run_id", sa.String(40), sa.ForeignKey("runs.id"), nullable=True),
        sa.Column(
            "dataset_version_id", sa.Integer(), sa.ForeignKey("dataset_versions.id"), nullable=True
        ),
        sa.Column("model_path", sa.Text(), nullable=False),
        sa.Column("base_model", sa.String(200), nullable=False),
        sa.Column("method", sa.String(32), nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("recipe", sa.JSON(), nullable=False),
        sa.Column("code_version", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("feature_id", "version"),
    )
    op.create_index("ix_model_versions_feature_id", "model_versions", ["feature_id"])


def downgrade() -> None:
    op.drop_index("ix_model_versions_feature_id", table_name="model_versions")
    op.drop_table("model_versions")
