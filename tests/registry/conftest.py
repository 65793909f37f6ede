"""Registry fixtures: every test runs against SQLite (a temp file) and PostgreSQL.

PostgreSQL gets a fresh, uniquely named database per test session on the server at
``COLDBREW_TEST_POSTGRES_URL`` (default below), dropped at the end; each test gets an empty
schema in it. If the server is unreachable the PostgreSQL cases skip, unless
``COLDBREW_REQUIRE_SERVICES=1`` (CI), where they fail instead.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from coldbrew.registry import Registry

DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def _services_required() -> bool:
    return os.environ.get("COLDBREW_REQUIRE_SERVICES") == "1"


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """URL of a throwaway database, created for this test session and dropped after it."""
    admin_url = make_url(os.environ.get("COLDBREW_TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL))
    admin = create_engine(
        admin_url, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3}
    )
    name = f"coldbrew_test_{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except OperationalError as exc:
        admin.dispose()
        reason = f"PostgreSQL unreachable at {admin_url.render_as_string()}: {exc.orig}"
        if _services_required():
            pytest.fail(f"{reason} (COLDBREW_REQUIRE_SERVICES=1)")
        pytest.skip(reason)
    try:
        yield admin_url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _reset_postgres(url: str) -> None:
    """Empty the session database, so each test starts from no schema at all."""
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    engine.dispose()


@pytest.fixture(
    params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)],
)
def registry_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A URL of an empty database (no tables), one per backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'home' / 'registry.db'}"
    url: str = request.getfixturevalue("postgres_url")
    _reset_postgres(url)
    return url


@pytest.fixture
def make_registry(registry_url: str) -> Iterator[Callable[[], Registry]]:
    """Factory of unmigrated registries on the test's database; all closed at teardown."""
    made: list[Registry] = []

    def make() -> Registry:
        made.append(Registry(registry_url))
        return made[-1]

    yield make
    for registry in made:
        registry.close()


@pytest.fixture
def registry(make_registry: Callable[[], Registry]) -> Registry:
    """A migrated, empty registry."""
    reg = make_registry()
    reg.migrate()
    return reg
