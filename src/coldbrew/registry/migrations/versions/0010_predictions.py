"""The prediction log: sampled invocations with input (or hash) and output (docs/DATA.md).

Revision ID: 0010_predictions
Revises: 0009_secrets
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import coldbrew.registry.predictions  # noqa: F401  (registers the model on Base.metadata)

revision: str = "0010_predictions"
down_revision: str | None = "0009_secrets"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UTC_DATETIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "predictions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("request_id", sa.String(length=128), nullable=False),
        sa.Column("function_name", sa.String(length=64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("caller", sa.String(length=64), nullable=True),
        sa.Column("at", UTC_DATETIME, nullable=False),
        sa.Column("latency_ms", sa.Float(), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("input", sa.Text(), nullable=True),
        sa.Column("input_sha256", sa.String(length=64), nullable=False),
        sa.Column("output", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_predictions")),
    )
    op.create_index(op.f("ix_predictions_function_name_at"), "predictions", ["function_name", "at"])
    op.create_index(
        op.f("ix_predictions_function_name_request_id"),
        "predictions",
        ["function_name", "request_id"],
    )
    op.create_index(op.f("ix_predictions_at"), "predictions", ["at"])


def downgrade() -> None:
    op.drop_table("predictions")
