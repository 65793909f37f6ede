"""API Gateway style routes that mount functions on HTTP paths.

Revision ID: 0002_routes
Revises: 0001
Create Date: 2025-01-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# Registers RouteRow on Base.metadata, so autogenerate (and the schema test, which diffs the
# migrated database against Base.metadata) sees the table this migration creates.
import coldbrew.registry.routes  # noqa: F401

revision: str = "0002_routes"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "routes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("method", sa.String(length=16), nullable=False),
        sa.Column("path", sa.String(length=512), nullable=False),
        sa.Column("function_name", sa.String(length=64), nullable=False),
        sa.Column("qualifier", sa.String(length=64), nullable=True),
        sa.Column("payload_format", sa.String(length=8), nullable=False),
        sa.Column("stage", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_routes"),
        sa.UniqueConstraint("method", "path", name="uq_routes_method_path"),
    )


def downgrade() -> None:
    op.drop_table("routes")
