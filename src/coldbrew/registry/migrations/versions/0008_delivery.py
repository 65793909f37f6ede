"""Safe rollouts: the sticky-key path of a weighted alias, and the rollouts table.

Revision ID: 0008_delivery
Revises: 0007_async_queue
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import coldbrew.registry.rollouts  # noqa: F401  (registers the model on Base.metadata for diffs)

revision: str = "0008_delivery"
down_revision: str | None = "0007_async_queue"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UTC_DATETIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("aliases") as batch:
        batch.add_column(sa.Column("sticky", sa.String(length=256), nullable=True))
    op.create_table(
        "rollouts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("function_name", sa.String(length=64), nullable=False),
        sa.Column("alias", sa.String(length=64), nullable=False),
        sa.Column("baseline", sa.Integer(), nullable=False),
        sa.Column("candidate", sa.Integer(), nullable=False),
        sa.Column("steps", sa.JSON(), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("step_duration_s", sa.Float(), nullable=False),
        sa.Column("step_started_at", UTC_DATETIME, nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("criteria", sa.JSON(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("history", sa.JSON(), nullable=False),
        sa.Column("created_at", UTC_DATETIME, nullable=False),
        sa.Column("updated_at", UTC_DATETIME, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rollouts")),
    )
    op.create_index(op.f("ix_rollouts_function_name_state"), "rollouts", ["function_name", "state"])


def downgrade() -> None:
    op.drop_table("rollouts")
    with op.batch_alter_table("aliases") as batch:
        batch.drop_column("sticky")
