"""The meter: one usage record per invocation.

Revision ID: 0003_meter
Revises: 0001
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import coldbrew.registry.meter  # noqa: F401  (registers the model on Base.metadata for diffs)

revision: str = "0003_meter"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UTC_DATETIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "invocations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("request_id", sa.String(length=128), nullable=False),
        sa.Column("function_name", sa.String(length=64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("qualifier", sa.String(length=64), nullable=True),
        sa.Column("caller", sa.String(length=64), nullable=True),
        sa.Column("started_at", UTC_DATETIME, nullable=False),
        sa.Column("duration_ms", sa.Float(), nullable=False),
        sa.Column("billed_ms", sa.Integer(), nullable=False),
        sa.Column("memory_mb", sa.Integer(), nullable=False),
        sa.Column("gb_seconds", sa.Float(), nullable=False),
        sa.Column("cost_usd", sa.Float(), nullable=False),
        sa.Column("cold_start", sa.Boolean(), nullable=False),
        sa.Column("init_ms", sa.Float(), nullable=True),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_invocations")),
    )
    op.create_index(
        op.f("ix_invocations_function_name_started_at"),
        "invocations",
        ["function_name", "started_at"],
    )
    op.create_index(op.f("ix_invocations_started_at"), "invocations", ["started_at"])
    op.create_index(op.f("ix_invocations_request_id"), "invocations", ["request_id"])


def downgrade() -> None:
    op.drop_table("invocations")
