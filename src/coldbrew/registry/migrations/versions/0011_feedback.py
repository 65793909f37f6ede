"""Feedback: true labels of logged predictions, for accuracy in production (docs/DATA.md).

Revision ID: 0011_feedback
Revises: 0010_predictions
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import coldbrew.registry.feedback  # noqa: F401  (registers the model on Base.metadata)

revision: str = "0011_feedback"
down_revision: str | None = "0010_predictions"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UTC_DATETIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "feedback",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("function_name", sa.String(length=64), nullable=False),
        sa.Column("request_id", sa.String(length=128), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("predicted_at", UTC_DATETIME, nullable=False),
        sa.Column("received_at", UTC_DATETIME, nullable=False),
        sa.Column("label", sa.Text(), nullable=False),
        sa.Column("predicted", sa.Text(), nullable=True),
        sa.Column("correct", sa.Boolean(), nullable=True),
        sa.Column("abs_error", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_feedback")),
    )
    op.create_index(
        op.f("ix_feedback_function_name_request_id"),
        "feedback",
        ["function_name", "request_id"],
        unique=True,
    )
    op.create_index(
        op.f("ix_feedback_function_name_predicted_at"),
        "feedback",
        ["function_name", "predicted_at"],
    )


def downgrade() -> None:
    op.drop_table("feedback")
