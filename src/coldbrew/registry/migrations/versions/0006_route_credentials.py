"""Routes say whether their events keep the caller's credentials.

Events delivered by routes lose ``Authorization`` and ``X-Api-Key`` (coldbrew's own bearer keys
must not reach a function's code); a route with ``forward_credentials`` keeps them. Existing
routes get the safe default.

Revision ID: 0006_route_credentials
Revises: 0002_routes
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import coldbrew.registry.routes  # noqa: F401  (registers RouteRow on Base.metadata for diffs)

revision: str = "0006_route_credentials"
down_revision: str | None = "0002_routes"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("routes") as batch:
        batch.add_column(
            sa.Column(
                "forward_credentials", sa.Boolean(), nullable=False, server_default=sa.false()
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("routes") as batch:
        batch.drop_column("forward_credentials")
