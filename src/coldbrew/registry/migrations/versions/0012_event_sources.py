"""Event sources: the seen-set of polled S3 prefixes and watched folders (docs/ASYNC.md).

Revision ID: 0012_event_sources
Revises: 0011_feedback
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import coldbrew.registry.event_sources  # noqa: F401  (registers the model on Base.metadata)

revision: str = "0012_event_sources"
down_revision: str | None = "0011_feedback"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "event_source_objects",
        sa.Column("source_id", sa.String(length=64), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("object_key", sa.Text(), nullable=False),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("source_id", "digest", name=op.f("pk_event_source_objects")),
    )


def downgrade() -> None:
    op.drop_table("event_source_objects")
