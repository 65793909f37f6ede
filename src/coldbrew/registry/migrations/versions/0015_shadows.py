"""Shadows in the registry, so they survive a restart and every gateway applies the same set
(docs/DELIVERY.md "Shadow traffic").

The table references only tables of 0001 (functions, versions), so this revision branches from
0001 like 0013 (``Registry.migrate`` upgrades every head).

Revision ID: 0015_shadows
Revises: 0001
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import coldbrew.registry.shadows  # noqa: F401  (registers the model on Base.metadata for diffs)

revision: str = "0015_shadows"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UTC_DATETIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "shadows",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("function_id", sa.Integer(), nullable=False),
        sa.Column("alias", sa.String(length=64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("fraction", sa.Float(), nullable=False),
        sa.Column("tolerance", sa.Float(), nullable=False),
        sa.Column("ignore", sa.JSON(), nullable=False),
        sa.Column("priority", sa.String(length=16), nullable=False),
        sa.Column("updated_at", UTC_DATETIME, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_shadows")),
        sa.ForeignKeyConstraint(
            ["function_id"],
            ["functions.id"],
            name=op.f("fk_shadows_function_id_functions"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["function_id", "version"],
            ["versions.function_id", "versions.number"],
            name=op.f("fk_shadows_function_id_version_versions"),
            ondelete="CASCADE",
        ),
        sa.UniqueConstraint("function_id", "alias", name=op.f("uq_shadows_function_id_alias")),
    )


def downgrade() -> None:
    op.drop_table("shadows")
