"""Initial registry schema: functions, versions, aliases.

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Written by hand to match coldbrew.registry.models; a test diffs the two with autogenerate.
UTC_DATETIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "functions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("last_version", sa.Integer(), nullable=False),
        sa.Column("created_at", UTC_DATETIME, nullable=False),
        sa.Column("updated_at", UTC_DATETIME, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_functions"),
        sa.UniqueConstraint("name", name="uq_functions_name"),
    )
    op.create_table(
        "versions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("function_id", sa.Integer(), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("content_sha256", sa.String(length=64), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("manifest", sa.JSON(), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("created_at", UTC_DATETIME, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_versions"),
        sa.ForeignKeyConstraint(
            ["function_id"],
            ["functions.id"],
            name="fk_versions_function_id_functions",
            ondelete="CASCADE",
        ),
        sa.UniqueConstraint("function_id", "number", name="uq_versions_function_id_number"),
    )
    op.create_index(
        "ix_versions_function_id_content_sha256", "versions", ["function_id", "content_sha256"]
    )
    op.create_table(
        "aliases",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("function_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("weights", sa.JSON(), nullable=True),
        sa.Column("updated_at", UTC_DATETIME, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_aliases"),
        sa.ForeignKeyConstraint(
            ["function_id"],
            ["functions.id"],
            name="fk_aliases_function_id_functions",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["function_id", "version"],
            ["versions.function_id", "versions.number"],
            name="fk_aliases_function_id_version_versions",
            ondelete="CASCADE",
        ),
        sa.UniqueConstraint("function_id", "name", name="uq_aliases_function_id_name"),
    )


def downgrade() -> None:
    op.drop_table("aliases")
    op.drop_index("ix_versions_function_id_content_sha256", table_name="versions")
    op.drop_table("versions")
    op.drop_table("functions")
