"""Async invocations: the durable queue, dead letters, results, event-invoke configs, schedules.

These tables reference no other table, so this revision branches from 0001 like the other
areas' migrations (``Registry.migrate`` upgrades every head).

Revision ID: 0007_async_queue
Revises: 0001
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import coldbrew.registry.asyncq  # noqa: F401  (registers the models on Base.metadata for diffs)

revision: str = "0007_async_queue"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UTC_DATETIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "async_events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("request_id", sa.String(length=128), nullable=False),
        sa.Column("function_name", sa.String(length=64), nullable=False),
        sa.Column("qualifier", sa.String(length=64), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.Column("client_context", sa.JSON(), nullable=True),
        sa.Column("caller_kind", sa.String(length=16), nullable=True),
        sa.Column("caller_id", sa.String(length=64), nullable=True),
        sa.Column("protocol", sa.String(length=16), nullable=False),
        sa.Column("idempotency_key", sa.String(length=128), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("max_retry_attempts", sa.Integer(), nullable=False),
        sa.Column("max_event_age_s", sa.Integer(), nullable=False),
        sa.Column("created_at", UTC_DATETIME, nullable=False),
        sa.Column("visible_at", UTC_DATETIME, nullable=False),
        sa.Column("lease_owner", sa.String(length=64), nullable=True),
        sa.Column("finished_at", UTC_DATETIME, nullable=True),
        sa.Column("last_error", sa.JSON(), nullable=True),
        sa.Column("executed_version", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_async_events")),
        sa.UniqueConstraint("request_id", name=op.f("uq_async_events_request_id")),
        sa.UniqueConstraint(
            "function_name",
            "idempotency_key",
            name=op.f("uq_async_events_function_name_idempotency_key"),
        ),
    )
    op.create_index(
        op.f("ix_async_events_state_visible_at"), "async_events", ["state", "visible_at"]
    )
    op.create_index(
        op.f("ix_async_events_function_name_state"), "async_events", ["function_name", "state"]
    )
    op.create_table(
        "dead_letters",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("request_id", sa.String(length=128), nullable=False),
        sa.Column("function_name", sa.String(length=64), nullable=False),
        sa.Column("reason", sa.String(length=32), nullable=False),
        sa.Column("error", sa.JSON(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", UTC_DATETIME, nullable=False),
        sa.Column("failed_at", UTC_DATETIME, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dead_letters")),
        sa.UniqueConstraint("request_id", name=op.f("uq_dead_letters_request_id")),
    )
    op.create_index(
        op.f("ix_dead_letters_function_name_id"), "dead_letters", ["function_name", "id"]
    )
    op.create_table(
        "async_results",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("function_name", sa.String(length=64), nullable=False),
        sa.Column("request_id", sa.String(length=128), nullable=False),
        sa.Column("condition", sa.String(length=32), nullable=False),
        sa.Column("record", sa.JSON(), nullable=False),
        sa.Column("created_at", UTC_DATETIME, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_async_results")),
    )
    op.create_index(
        op.f("ix_async_results_function_name_id"), "async_results", ["function_name", "id"]
    )
    op.create_table(
        "event_invoke_configs",
        sa.Column("function_name", sa.String(length=64), nullable=False),
        sa.Column("max_retry_attempts", sa.Integer(), nullable=True),
        sa.Column("max_event_age_s", sa.Integer(), nullable=True),
        sa.Column("on_success", sa.String(length=350), nullable=True),
        sa.Column("on_failure", sa.String(length=350), nullable=True),
        sa.Column("updated_at", UTC_DATETIME, nullable=False),
        sa.PrimaryKeyConstraint("function_name", name=op.f("pk_event_invoke_configs")),
    )
    op.create_table(
        "schedules",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("function_name", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("expression", sa.String(length=256), nullable=False),
        sa.Column("timezone", sa.String(length=64), nullable=False),
        sa.Column("input", sa.Text(), nullable=True),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("created_at", UTC_DATETIME, nullable=False),
        sa.Column("last_tick", UTC_DATETIME, nullable=True),
        sa.Column("last_request_id", sa.String(length=128), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_schedules")),
        sa.UniqueConstraint("function_name", "name", name=op.f("uq_schedules_function_name_name")),
    )


def downgrade() -> None:
    for table in (
        "schedules",
        "event_invoke_configs",
        "async_results",
        "dead_letters",
        "async_events",
    ):
        op.drop_table(table)
