"""Alembic environment of the registry.

``Registry.migrate()`` passes its open connection in ``config.attributes["connection"]``, so
no ``alembic.ini`` is needed at runtime. For authoring migrations with the alembic CLI, set
``sqlalchemy.url`` in an ini file of your own; the offline branch is not supported because the
registry is always migrated against a live database.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, create_engine

from coldbrew.registry.models import Base

config = context.config
target_metadata = Base.metadata


def run_migrations(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        # SQLite cannot ALTER most things; batch mode rebuilds tables instead.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    run_migrations(connection)
else:
    engine = create_engine(config.get_main_option("sqlalchemy.url") or "")
    with engine.begin() as conn:
        run_migrations(conn)
    engine.dispose()
